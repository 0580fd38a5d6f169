"""Object masks for the localisation metrics (``xaicli evaluate --masks``), at model-input size.

Two ways to give them, either from the same input tree as the images:

* a folder mirroring the inputs: ``<image path relative to its input folder, without suffix>.png``
  (``masks/Bag/img_00030.png`` for ``sample_images/Bag/img_00030.png``); any non-zero pixel is object;
* a JSON file ``{"Bag/img_00030": [[x0, y0, x1, y1], ...], ...}`` or a CSV file with the header
  ``image,x0,y0,x1,y1`` (one box a line, several lines per image allowed): boxes in pixels of the
  original image (after its EXIF orientation), ``x0, y0`` inclusive, ``x1, y1`` exclusive; the image key
  is the relative path without suffix (as for the folder), with its suffix, or the file name.

A mask goes through the image's own geometry (``preprocess.resize``: exact stretch, or shorter side
and centre crop), bilinearly, and is thresholded at one half, so it covers what the model saw of the
object. Images without a mask get none (their localisation values are undefined, not zero).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xaicli.engine.decode import load_image
from xaicli.engine.discover import InputImage
from xaicli.engine.preprocess import Preprocess
from xaicli.errors import ImageDecodeError, UsageError

Box = tuple[float, float, float, float]
_ORIENTATION = 0x0112


def _keys(item: InputImage) -> list[str]:
    rel = item.rel.as_posix()
    return [item.rel.with_suffix("").as_posix(), rel, str(item.path), item.path.name, item.path.stem]


def _to_input(mask: np.ndarray, pre: Preprocess) -> Tensor:
    """(h, w) bool at the original size -> (H, W) bool at model-input size (the image's geometry)."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return pre.resize_tensor(t)[0, 0] > 0.5


class MaskSource:
    """Where masks come from; :meth:`mask` gives one image's mask or None."""

    def mask(self, item: InputImage, pre: Preprocess) -> Tensor | None:
        raise NotImplementedError


class FolderMasks(MaskSource):
    def __init__(self, root: Path):
        self.root = root

    def path_for(self, item: InputImage) -> Path:
        return self.root / item.rel.with_suffix(".png")

    def mask(self, item: InputImage, pre: Preprocess) -> Tensor | None:
        path = self.path_for(item)
        if not path.is_file():
            return None
        try:
            arr = load_image(path, "L")[..., 0]
        except ImageDecodeError as err:
            raise UsageError(f"mask {path} cannot be read: {err}") from err
        return _to_input(arr > 0, pre)


class BoxMasks(MaskSource):
    def __init__(self, boxes: dict[str, list[Box]], source: Path):
        self.boxes, self.source = boxes, source

    @classmethod
    def from_json(cls, path: Path) -> BoxMasks:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UsageError(f"masks file {path} is not readable JSON: {err}") from err
        if not isinstance(data, dict):
            raise UsageError(f"masks file {path}: expected an object mapping image -> list of boxes")
        out: dict[str, list[Box]] = {}
        for key, boxes in data.items():
            if not isinstance(boxes, list) or not all(isinstance(b, list) and len(b) == 4 for b in boxes):
                raise UsageError(f"masks file {path}: {key!r} must map to a list of [x0, y0, x1, y1] boxes")
            out[str(key)] = [_box(b, f"{path}: {key!r}") for b in boxes]
        return cls(out, path)

    @classmethod
    def from_csv(cls, path: Path) -> BoxMasks:
        out: dict[str, list[Box]] = {}
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = {"image", "x0", "y0", "x1", "y1"} - set(reader.fieldnames or [])
                if missing:
                    raise UsageError(f"masks file {path}: the header must name image,x0,y0,x1,y1 "
                                     f"(missing: {', '.join(sorted(missing))})")
                for n, row in enumerate(reader, start=2):
                    out.setdefault(row["image"], []).append(
                        _box([row[k] for k in ("x0", "y0", "x1", "y1")], f"{path}, line {n}"))
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"masks file {path} is not readable: {err}") from err
        return cls(out, path)

    def mask(self, item: InputImage, pre: Preprocess) -> Tensor | None:
        boxes = next((self.boxes[k] for k in _keys(item) if k in self.boxes), None)
        if boxes is None:
            return None
        try:
            with Image.open(item.path) as img:
                w, h = img.size
                if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
                    w, h = h, w
        except (OSError, ValueError):
            return None  # the image itself is unreadable: it fails in the explain run
        mask = np.zeros((h, w), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            mask[max(0, round(y0)) : max(0, round(y1)), max(0, round(x0)) : max(0, round(x1))] = True
        return _to_input(mask, pre)


def _box(values: list, where: str) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise UsageError(f"masks file {where}: box {values!r} is not four numbers") from err
    if x1 <= x0 or y1 <= y0:
        raise UsageError(f"masks file {where}: box {values!r} is empty (x1 <= x0 or y1 <= y0)")
    return (x0, y0, x1, y1)


def open_masks(path: Path) -> MaskSource:
    """A folder of PNG masks, or a .json / .csv file of boxes (see the module docstring)."""
    if path.is_dir():
        return FolderMasks(path)
    if not path.is_file():
        raise UsageError(f"masks not found: {path} (a folder of PNG masks, or a .json / .csv file of boxes)")
    if path.suffix.lower() == ".json":
        return BoxMasks.from_json(path)
    if path.suffix.lower() == ".csv":
        return BoxMasks.from_csv(path)
    raise UsageError(f"masks file {path}: expected a folder, a .json or a .csv file")

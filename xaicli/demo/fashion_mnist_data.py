"""Minimal, dependency-free reader for the Fashion-MNIST idx files.

The files are read from ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``)
or from the directory named by the ``XAICLI_FASHION_MNIST`` environment variable; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["DEFAULT_ROOT", "ENV_VAR", "dataset_root", "load_idx", "load_split"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "XAICLI_FASHION_MNIST"

# idx type codes (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_SPLIT_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}


def dataset_root() -> Path:
    """The dataset directory: ``$XAICLI_FASHION_MNIST`` if set, else :data:`DEFAULT_ROOT`."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_ROOT


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed, by the ``.gz`` suffix) into a numpy array.

    The magic number is ``0x00 0x00 <type code> <ndim>`` followed by ``ndim`` big-endian uint32 sizes.
    Raises ``FileNotFoundError`` (mentioning the Debian package) if the file is missing and
    ``ValueError`` for a bad magic number or a truncated payload.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST file not found: {path}. Install the Debian package `dataset-fashion-mnist` "
            f"(apt-get install dataset-fashion-mnist) or point ${ENV_VAR} at a directory holding the "
            "idx files (train-images-idx3-ubyte.gz, ...)."
        )
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()

    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: bad idx magic number {data[:4].hex() or '<empty>'}")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path}: truncated idx header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header_len != count * dtype.itemsize:
        raise ValueError(
            f"{path}: payload has {len(data) - header_len} bytes, expected {count * dtype.itemsize} "
            f"for shape {shape} and dtype {dtype}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(shape)
    # native byte order, writable copy
    return array.astype(dtype.newbyteorder("="), copy=True)


def load_split(
    split: Literal["train", "test"], root: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split: ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``root`` defaults to :func:`dataset_root` (``$XAICLI_FASHION_MNIST`` or :data:`DEFAULT_ROOT`).
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = Path(root) if root is not None else dataset_root()
    prefix = _SPLIT_PREFIX[split]
    images = load_idx(base / f"{prefix}-images-idx3-ubyte.gz")
    labels = load_idx(base / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"unexpected image array {images.dtype} {images.shape} in {base}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels {labels.shape} do not match images {images.shape} in {base}")
    return images, labels.astype(np.int64)

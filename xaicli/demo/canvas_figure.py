"""Draw the README's "right for the right reasons" figure from two ``xaicli evaluate`` runs.

Usage (after the README's two evaluate commands)::

    python -m xaicli.demo.canvas_figure runs/canvas runs/canvas_clever_hans -o docs/images/right_reasons.png

Rows: the canvases with their object masks outlined, then each model's Grad-CAM of its top-1 class,
captioned with the prediction and whether the map's maximum falls on the object (the pointing game).
It reads only what the runs wrote (manifest, maps, the images the manifest names), so it redraws
exactly the numbers of the evaluation.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from xaicli.outputs import atomic
from xaicli.outputs.manifest import read_manifest
from xaicli.render.figures import GridCell, GridRow, format_prob, render_grid


def _outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey canvas -> RGB with the mask's boundary in green."""
    rgb = np.repeat(image[..., None], 3, axis=-1).astype(np.uint8)
    m = mask > 127
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    rgb[edge] = (40, 220, 40)
    return rgb


def _pointing_game(run: Path) -> dict[str, float]:
    """Per image, the run's own pointing-game value (1 hit, 0 miss) from ``evaluation.jsonl``."""
    rows = (json.loads(line) for line in (run / "evaluation.jsonl").read_text(encoding="utf-8").splitlines())
    return {r["image"]: r["value"] for r in rows
            if r.get("metric") == "pointing_game" and r.get("slot") == "top1"}


def draw(runs: Sequence[Path], labels: Sequence[str], masks: Path, images: int = 6) -> Image.Image:
    manifests = [{r["rel"]: r for r in read_manifest(run / "manifest.jsonl") if r.get("status") == "ok"}
                 for run in runs]
    rels = sorted(manifests[0])[:: max(1, len(manifests[0]) // images)][:images]
    first = manifests[0]
    canvases = [np.asarray(Image.open(first[rel]["image"]).convert("L")) for rel in rels]
    object_masks = [np.asarray(Image.open(masks / Path(rel).with_suffix(".png")).convert("L"))
                    for rel in rels]
    rows = [GridRow("canvas + object mask",
                    [GridCell(_outlined(c, m), caption=first[rel].get("label"))
                     for c, m, rel in zip(canvases, object_masks, rels, strict=True)])]
    for run, manifest, label in zip(runs, manifests, labels, strict=True):
        hits = _pointing_game(run)
        cells = []
        for canvas, rel in zip(canvases, rels, strict=True):
            row = manifest[rel]
            cam = np.load(run / row["map"], allow_pickle=False)
            hit = hits.get(row["image"]) == 1.0
            cells.append(GridCell(canvas, cam, caption=f"{row['target_name']} {format_prob(row['score'])}\n"
                                  f"{'hit' if hit else 'MISS'}", caption_alert=not hit))
        rows.append(GridRow(label, cells))
    fig = render_grid(rows, title="Grad-CAM (features.2.relu) of the top-1 class",
                      subtitle="same canvases; the marker in the top band names the class",
                      legend=["green: the object mask's outline; hit / MISS: the pointing game of the "
                              "evaluation (the map's maximum on the object, within its tolerance of 4 px)"])
    return fig.image


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("honest", type=Path)
    parser.add_argument("clever_hans", type=Path)
    parser.add_argument("--masks", type=Path, default=Path("sample_canvas/masks"))
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    scores = []
    for run in (args.honest, args.clever_hans):
        data = json.loads((run / "evaluation.json").read_text(encoding="utf-8"))
        pg = next(r["mean"] for r in data["summary"] if r["metric"] == "pointing_game")
        scores.append(pg)
    labels = [f"honest model\n(pointing game {scores[0]:.2f})",
              f"Clever Hans model\n(pointing game {scores[1]:.2f})"]
    image = draw([args.honest, args.clever_hans], labels, args.masks)
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Fashion-MNIST items on a larger canvas, with clutter and a class marker: data for the localisation demo.

Every canvas is ``CANVAS`` x ``CANVAS`` grayscale (uint8). It holds, in this order of painting:

1. a black background;
2. ``clutter`` distractor patches: 8x8 crops of *other* items of the dataset, at random places, dimmed
   to 40-80 % - texture that resembles clothing but names no class;
3. the item itself (28x28) at a random position below the marker band, composited with ``max``; its
   silhouette (pixels above :data:`MASK_LEVEL`) is the object mask, the ground truth of where the
   evidence for the label is;
4. a small bright marker in the band along the top edge: slot ``m`` of :data:`MARKER_SLOTS` lit. For
   the honest model the slot is random (it carries no information); for the "Clever Hans" model it is
   the label, a spurious cue that predicts the class perfectly and is far easier to read than the item.

Both demo models see the same kind of canvas; only the marker's meaning differs. A model that is right
for the right reasons points at the item; a Clever Hans model points at the marker, outside the mask.
Everything is drawn from one ``numpy`` generator per call, so a (seed, index range) pair always gives the
same canvases.
"""

from __future__ import annotations

import numpy as np

CANVAS = 64
ITEM = 28
MARKER = 3  # marker side in pixels
BAND = 8  # rows reserved for the marker band at the top; items are placed below it
MARKER_SLOTS = tuple(2 + 6 * c for c in range(10))  # x of the marker for class c (10 classes)
MASK_LEVEL = 25  # item pixels above this (of 255) form the object mask


def make_canvases(items: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *, clutter: int = 3,
                  marker: str = "random", pool: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Canvases for ``items`` (N, 28, 28) uint8 with ``labels`` (N,): returns (canvases, masks), each
    (N, CANVAS, CANVAS) uint8 / bool.

    ``marker``: "random" (uninformative), "label" (the Clever Hans cue) or "none". ``pool``: the images
    clutter is cropped from (default: ``items`` itself).
    """
    n = len(items)
    pool = items if pool is None else pool
    canvases = np.zeros((n, CANVAS, CANVAS), dtype=np.uint8)
    masks = np.zeros((n, CANVAS, CANVAS), dtype=bool)
    ys = rng.integers(BAND, CANVAS - ITEM + 1, n)
    xs = rng.integers(0, CANVAS - ITEM + 1, n)
    for i in range(n):
        c = canvases[i]
        for _ in range(clutter):
            src = pool[rng.integers(len(pool))]
            sy, sx = rng.integers(4, ITEM - 12, 2)
            crop = (src[sy : sy + 8, sx : sx + 8] * rng.uniform(0.4, 0.8)).astype(np.uint8)
            py, px = rng.integers(BAND, CANVAS - 8 + 1), rng.integers(0, CANVAS - 8 + 1)
            np.maximum(c[py : py + 8, px : px + 8], crop, out=c[py : py + 8, px : px + 8])
        y, x = ys[i], xs[i]
        np.maximum(c[y : y + ITEM, x : x + ITEM], items[i], out=c[y : y + ITEM, x : x + ITEM])
        masks[i, y : y + ITEM, x : x + ITEM] = items[i] > MASK_LEVEL
        if marker != "none":
            slot = int(labels[i]) if marker == "label" else int(rng.integers(len(MARKER_SLOTS)))
            mx = MARKER_SLOTS[slot]
            c[2 : 2 + MARKER, mx : mx + MARKER] = 255
    return canvases, masks

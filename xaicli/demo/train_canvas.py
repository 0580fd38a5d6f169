"""Train the two localisation demo models and export their sample images and object masks.

Usage::

    python -m xaicli.demo.train_canvas [--epochs N] [--per-epoch M] [--seed S] [--threads T]

Both variants of :class:`xaicli.models.canvas.CanvasCNN` are trained the same way on canvases drawn
fresh every epoch from the Fashion-MNIST training set (:mod:`xaicli.demo.canvas_data`), and differ only in
the marker: uninformative for ``canvas_cnn``, the label for ``canvas_cnn_clever_hans``. The run is
deterministic for a given thread count and torch build. It writes

* ``xaicli/models/weights/<variant>.pt`` and ``<variant>.json`` (accuracies, settings, time);
* ``sample_canvas/images/<class>/img_<index>.png``: canvases of the first ``K`` test images of each class,
  with the marker that names their class (the distribution the Clever Hans model was trained on; the
  honest model ignores markers), and ``sample_canvas/masks/<class>/img_<index>.png``: the object masks
  (255 = item), the tree ``xaicli evaluate --masks`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from xaicli.demo.canvas_data import make_canvases
from xaicli.demo.fashion_mnist_data import load_split
from xaicli.demo.train import class_folder, evaluate, train_step
from xaicli.models.canvas import CLASSES, MEAN, STD, VARIANTS, CanvasCNN, weights_path

BATCH_SIZE = 128
MARKERS = {"canvas_cnn": "random", "canvas_cnn_clever_hans": "label"}
TEST_SEED = 1234  # the test canvases (item positions, clutter, markers) are fixed


def to_input(canvases: np.ndarray) -> torch.Tensor:
    """uint8 (N, 64, 64) -> normalised float32 (N, 1, 64, 64)."""
    x = torch.from_numpy(canvases).float().div_(255.0).unsqueeze(1)
    return (x - MEAN[0]) / STD[0]


def test_set(marker: str, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    canvases, _ = make_canvases(images, labels, np.random.default_rng(TEST_SEED), marker=marker)
    return to_input(canvases), torch.from_numpy(labels)


def train(variant: str, epochs: int = 6, per_epoch: int = 30000, seed: int = 0, lr: float = 3e-3,
          log: bool = True) -> tuple[CanvasCNN, dict]:
    """Train one variant deterministically; returns the model and its record (accuracies, time)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    marker = MARKERS[variant]
    model = CanvasCNN()
    steps = (per_epoch + BATCH_SIZE - 1) // BATCH_SIZE
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                    steps_per_epoch=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        rng = np.random.default_rng([seed, epoch])
        idx = rng.choice(len(train_images), per_epoch, replace=False)
        canvases, _ = make_canvases(train_images[idx], train_labels[idx], rng, marker=marker,
                                    pool=train_images)
        x, y = to_input(canvases), torch.from_numpy(train_labels[idx])
        model.train()
        total, correct = 0.0, 0
        for i in range(steps):
            xb, yb = x[i * BATCH_SIZE : (i + 1) * BATCH_SIZE], y[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            batch_loss, batch_correct = train_step(model, xb, yb, loss_fn, optimizer, scheduler)
            total += batch_loss
            correct += batch_correct
        if log:
            print(f"{variant} epoch {epoch}/{epochs}  loss {total / per_epoch:.4f}  train acc "
                  f"{correct / per_epoch:.4f}  [{time.perf_counter() - start:.0f}s]", flush=True)
    seconds = time.perf_counter() - start
    record = {"epochs": epochs, "per_epoch": per_epoch, "seed": seed, "lr": lr, "batch_size": BATCH_SIZE,
              "marker": marker, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "train_seconds": round(seconds, 1)}
    for name in ("random", "label", "none"):  # accuracy on 10,000 test canvases per marker kind
        xt, yt = test_set(name, test_images, test_labels)
        record[f"test_accuracy_marker_{name}"] = round(evaluate(model, xt, yt), 4)
    return model.eval(), record


def export_samples(root: Path, per_class: int = 5) -> list[Path]:
    """Canvases of the first ``per_class`` test images of each class, marker = label, with masks."""
    images, labels = load_split("test")
    chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))])
    canvases, masks = make_canvases(images[chosen], labels[chosen], np.random.default_rng(TEST_SEED + 1),
                                    marker="label", pool=images)
    written = []
    for canvas, mask, index in zip(canvases, masks, chosen, strict=True):
        rel = Path(class_folder(CLASSES[labels[index]])) / f"img_{index:05d}.png"
        for kind, pixels in (("images", canvas), ("masks", mask.astype(np.uint8) * 255)):
            path = root / kind / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
        written.append(root / "images" / rel)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xaicli.demo.train_canvas",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--per-epoch", type=int, default=30000, help="canvases drawn per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: os.cpu_count())")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--samples-dir", type=Path, default=Path("sample_canvas"))
    parser.add_argument("--per-class", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    for variant in args.variants:
        model, record = train(variant, args.epochs, args.per_epoch, args.seed)
        path = weights_path(variant)
        torch.save({k: v.detach().float() if v.is_floating_point() else v
                    for k, v in model.state_dict().items()}, path)
        path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{variant}: {record}; saved {path} ({path.stat().st_size} bytes)")
    if args.per_class > 0:
        print(f"wrote {len(export_samples(args.samples_dir, args.per_class))} samples "
              f"under {args.samples_dir}/")


if __name__ == "__main__":
    main()

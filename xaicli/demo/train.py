"""Train a shipped Fashion-MNIST demo model and export the demo sample images.

Usage::

    python -m xaicli.demo.train [--model NAME] [--epochs N] [--seed S] [--threads T] [--out PATH]
                                [--samples-dir DIR] [--per-class K]

``--model`` is ``fashion_mnist_cnn`` (default) or ``fashion_mnist_vit``; each has its own default epochs,
learning rate and weight decay (:data:`DEMO_MODELS`). The run is deterministic on CPU (fixed seeds,
deterministic algorithms, a seeded data order) for a given thread count and torch build (a different
``--threads`` changes float summation order, so the weights differ slightly). It writes

* ``xaicli/models/weights/<model>.pt`` - the float32 ``state_dict``;
* ``xaicli/models/weights/<model>.json`` - test accuracy, epochs, seed, threads, torch version, time;
* ``sample_images/<class>/img_<index>.png`` - the first ``K`` test images of each class, as 28x28
  grayscale PNGs named after their test-set index (``/`` in class names becomes ``_``).

The shipped ViT was trained with ``--model fashion_mnist_vit --threads 1 --per-class 0`` (one thread:
on a shared 2-core machine a second one made each step ~2.5x slower).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from xaicli.demo.fashion_mnist_data import load_split
from xaicli.models.fashion_mnist import CLASSES, MEAN, STD, WEIGHTS_PATH, FashionMNISTCNN
from xaicli.models.fashion_mnist_vit import VIT_WEIGHTS_PATH, FashionMNISTViT

__all__ = ["DEMO_MODELS", "DemoModel", "class_folder", "evaluate", "export_samples", "main", "to_input",
           "train"]

BATCH_SIZE = 128


@dataclass(frozen=True)
class DemoModel:
    """A trainable demo model: how to build it, where its weights go, and its training defaults."""

    build: Callable[[], nn.Module]
    weights: Path
    epochs: int
    lr: float
    weight_decay: float


DEMO_MODELS: dict[str, DemoModel] = {
    "fashion_mnist_cnn": DemoModel(FashionMNISTCNN, WEIGHTS_PATH, epochs=10, lr=3e-3, weight_decay=1e-4),
    # transformers want more regularisation (AdamW weight decay 0.05, as DeiT) and a gentler peak rate
    "fashion_mnist_vit": DemoModel(FashionMNISTViT, VIT_WEIGHTS_PATH, epochs=12, lr=2e-3, weight_decay=0.05),
}
"""The models ``--model`` can train, by builtin name."""


def class_folder(name: str) -> str:
    """Folder name for a class: ``/`` is not allowed in paths, so ``T-shirt/top`` -> ``T-shirt_top``."""
    return name.replace("/", "_")


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images ``(N, 28, 28)`` -> normalised float32 model input ``(N, 1, 28, 28)``."""
    x = torch.as_tensor(images).float().div_(255.0).unsqueeze(1)
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (switched to eval mode) on already-normalised ``inputs``."""
    model.eval()
    correct = 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(inputs)


def train_step(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, scheduler) -> tuple[float, int]:
    """One optimisation step (shared by both demo trainers): the batch's summed loss and correct count."""
    logits = model(xb)
    loss = loss_fn(logits, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item() * len(yb), int((logits.argmax(1) == yb).sum())


def _augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Light augmentation: random horizontal flip and a random shift of up to ``max_shift`` pixels."""
    n = x.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    # pad with the normalised value of a black pixel, then crop a shifted 28x28 window per sample
    background = (0.0 - MEAN[0]) / STD[0]
    n_channels, size = x.shape[1], x.shape[-1]
    padded = nn.functional.pad(x, (max_shift,) * 4, value=background)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    window = torch.arange(size)
    rows = (dy.view(-1, 1) + window).view(n, 1, size, 1).expand(n, n_channels, size, padded.shape[-1])
    cols = (dx.view(-1, 1) + window).view(n, 1, 1, size).expand(n, n_channels, size, size)
    return padded.gather(2, rows).gather(3, cols)


def train(
    epochs: int = 10,
    seed: int = 0,
    lr: float = 3e-3,
    augment: bool = False,
    threads: int | None = None,
    log: bool = True,
    model_name: str = "fashion_mnist_cnn",
    weight_decay: float | None = None,
) -> tuple[nn.Module, float, float]:
    """Train the demo model ``model_name`` (:data:`DEMO_MODELS`) deterministically; return
    ``(model, test_accuracy, seconds)``. ``weight_decay`` defaults to the model's own."""
    torch.set_num_threads(threads or os.cpu_count() or 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)

    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    x_train, y_train = to_input(train_images), torch.from_numpy(train_labels)
    x_test, y_test = to_input(test_images), torch.from_numpy(test_labels)

    spec = DEMO_MODELS[model_name]
    model = spec.build()
    steps_per_epoch = (len(x_train) + BATCH_SIZE - 1) // BATCH_SIZE
    decay = spec.weight_decay if weight_decay is None else weight_decay
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)

    start = time.perf_counter()
    test_acc = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            xb, yb = x_train[idx], y_train[idx]
            if augment:
                xb = _augment(xb, generator)
            batch_loss, batch_correct = train_step(model, xb, yb, loss_fn, optimizer, scheduler)
            total_loss += batch_loss
            correct += batch_correct
        test_acc = evaluate(model, x_test, y_test)
        if log:
            print(
                f"epoch {epoch}/{epochs}  loss {total_loss / len(x_train):.4f}  "
                f"train acc {correct / len(x_train):.4f}  test acc {test_acc:.4f}  "
                f"[{time.perf_counter() - start:.0f}s]",
                flush=True,
            )
    seconds = time.perf_counter() - start
    return model.eval(), test_acc, seconds


def export_samples(out_dir: Path, per_class: int = 5) -> list[Path]:
    """Write the first ``per_class`` test images of every class as ``out_dir/<class>/img_<idx>.png``."""
    images, labels = load_split("test")
    written: list[Path] = []
    for label, name in enumerate(CLASSES):
        folder = out_dir / class_folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(labels == label)[:per_class]:
            path = folder / f"img_{index:05d}.png"
            Image.fromarray(images[index]).save(path)
            written.append(path)
    return written


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m xaicli.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEMO_MODELS), default="fashion_mnist_cnn")
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate of the one-cycle schedule (default: the model's own)")
    parser.add_argument("--augment", action="store_true", help="random horizontal flip and 2-pixel shift")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: os.cpu_count())")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to save the state_dict (default: xaicli/models/weights/<model>.pt)")
    parser.add_argument("--samples-dir", type=Path, default=Path("sample_images"))
    parser.add_argument("--per-class", type=int, default=5)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    spec = DEMO_MODELS[args.model]
    args.epochs = args.epochs or spec.epochs
    args.lr = args.lr or spec.lr
    args.out = args.out or spec.weights
    model, test_acc, seconds = train(
        epochs=args.epochs, seed=args.seed, lr=args.lr, augment=args.augment, threads=args.threads,
        model_name=args.model,
    )
    print(f"final test accuracy: {test_acc:.4f} (10,000 images), training time {seconds:.1f}s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {
        k: v.detach().float() if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    torch.save(state_dict, args.out)
    meta = {
        "model": args.model,
        "test_accuracy": round(test_acc, 4),
        "epochs": args.epochs,
        "seed": args.seed,
        "torch": torch.__version__,
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "lr": args.lr,
        "weight_decay": spec.weight_decay,
        "augment": args.augment,
        "batch_size": BATCH_SIZE,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"saved weights to {args.out} ({args.out.stat().st_size} bytes)")

    if args.per_class > 0:
        written = export_samples(args.samples_dir, args.per_class)
        print(f"wrote {len(written)} sample images under {args.samples_dir}/")


if __name__ == "__main__":
    main()

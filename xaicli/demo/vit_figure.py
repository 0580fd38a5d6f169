"""Draw the README figure of the demo ViT: Grad-CAM, attention rollout and transformer attribution on the
same sample images (rows: images; columns: the original and each method of the config).

Usage::

    python -m xaicli.demo.vit_figure [--config configs/fashion_mnist_vit.yaml] [--images sample_images]
                                     [--classes Trouser,Bag,...] [--out docs/images/vit_methods.png]

It is the library path of ``xaicli explain`` (one :class:`~xaicli.engine.Explainer`, the configured
methods, the top-1 class of each image) drawn with the same ``compare_grid`` as ``figures.compare``,
only with several images in one figure.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from xaicli.config import load_config
from xaicli.demo.train import class_folder
from xaicli.engine import Explainer, explain_images
from xaicli.render.figures import FigureStyle, compare_grid

DEFAULT_CLASSES = ("Trouser", "Sneaker", "Bag", "Ankle boot", "Shirt")


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m xaicli.demo.vit_figure",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/fashion_mnist_vit.yaml"))
    parser.add_argument("--images", type=Path, default=Path("sample_images"))
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                        help="comma-separated class names: the first image of each class is shown")
    parser.add_argument("--out", type=Path, default=Path("docs/images/vit_methods.png"))
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    explainer = Explainer(cfg)
    names = [c.strip() for c in args.classes.split(",") if c.strip()]
    files = [sorted((args.images / class_folder(name)).glob("*.png"))[0] for name in names]
    images = torch.stack([explainer.pre.load(str(f)) for f in files])  # (N, C, H, W) in [0, 1]
    result = explain_images(explainer, images)
    keys = explainer.map_keys
    maps = [[result.maps[key][i, 0].cpu().numpy() for key in keys] for i in range(len(files))]
    predicted = [explainer.classes[int(t)] for t in result.targets[:, 0]]
    style = FigureStyle.from_config(cfg)
    fig = compare_grid(
        [img.numpy() for img in images], maps, [f"{m}\n{layer}" if layer else m for m, layer in keys],
        title=f"{cfg.model.name}: methods compared", subtitle="explained class: the top-1 prediction",
        target_names=predicted, probs=[float(p) for p in result.probs[:, 0]], names=names,
        signed=[explainer.is_signed(m) for m, _ in keys], style=style)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(fig.png_bytes())
    print(f"wrote {args.out} ({fig.image.width}x{fig.image.height})")
    return args.out


if __name__ == "__main__":
    main()

"""The script a pytorch-grad-cam user writes to explain a folder of images (the benchmark's reference).

Written the way pytorch-grad-cam's README and tutorials do it: PIL load, torchvision transforms, its
``GradCAM`` as a context manager with ``targets=None`` (the top-1 class), its ``show_cam_on_image``, then
one PNG overlay and one ``.npy`` map per image, mirroring the input tree. The model is called on batches
of 16 images (``--batch``; the tutorials go one image at a time), as a user with a folder to explain
would write it - the reference issue 15 measures against.

    python benchmarks/pgc_user_script.py IMAGES OUT --model resnet18 --checkpoint model.pt --layer layer4
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from torchvision import transforms

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    model = torchvision.models.get_model(args.model, weights=None)
    if args.checkpoint is not None:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    model = model.to(args.device).eval()
    target_layers = [model.get_submodule(args.layer)]

    to_tensor = transforms.Compose([transforms.Resize((args.size, args.size)), transforms.ToTensor()])
    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    with GradCAM(model=model, target_layers=target_layers) as cam:
        for start in range(0, len(paths), args.batch):
            batch = paths[start : start + args.batch]
            rgb = [to_tensor(Image.open(p).convert("RGB")) for p in batch]  # (3, H, W) in [0, 1]
            input_tensor = torch.stack([normalize(t) for t in rgb]).to(args.device)
            grayscale_cams = cam(input_tensor=input_tensor, targets=None)  # (B, H, W) in [0, 1]
            for path, image, grayscale_cam in zip(batch, rgb, grayscale_cams, strict=True):
                rgb_img = image.permute(1, 2, 0).numpy()
                visualization = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
                stem = args.out / path.relative_to(args.images).with_suffix("")
                stem.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(visualization).save(stem.with_suffix(".png"))
                np.save(stem.with_suffix(".npy"), grayscale_cam)


if __name__ == "__main__":
    main()

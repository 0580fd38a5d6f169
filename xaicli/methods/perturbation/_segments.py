"""Superpixels: the interpretable features of LIME, Kernel SHAP and feature ablation.

``segments: slic`` (default) runs SLIC (Achanta et al., TPAMI 2012) from scikit-image on each display
image (raw pixels in [0, 1], what the model saw before normalisation), on the CPU, one image at a time
(nothing is cached across images: a map depends on its own image only). scikit-image is imported
lazily, when the first image is segmented. SLIC clusters in CIELAB colour plus position; grayscale
images are replicated into three channels first, so they are clustered on L* as colour images are and
``compactness`` means the same for both (scikit-image rescales a one-channel image to [0, 1], where the
default compactness of 10 would only give a square grid). The image is smoothed with a Gaussian of
``slic_sigma`` pixels first (default 1, as in scikit-image's SLIC examples: without it, pixel noise
fragments the clusters and SLIC's connectivity step merges them into very few superpixels - a single
one on a noise image). ``segments: grid`` is a regular grid of about
``n_segments`` cells with the image's aspect ratio (7 x 7 for 50 on a square image; MATLAB's imageLIME
uses 49 features by default) and needs nothing beyond torch.

Labels are renumbered ``0..M-1`` per image; SLIC may return fewer or more than ``n_segments``
superpixels (fewer on flat or noisy images), and the manifest records the count (``superpixels``).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import torch
from torch import Tensor

SEGMENTATIONS = ("slic", "grid")


def slic_available() -> bool:
    """Whether scikit-image (SLIC) can be imported."""
    return importlib.util.find_spec("skimage") is not None


def grid_labels(height: int, width: int, n_segments: int) -> Tensor:
    """(H, W) long labels of a regular grid of about ``n_segments`` cells, row-major.

    ``rows = round(sqrt(n H / W))`` and ``cols = round(n / rows)`` keep the cells close to square; cell
    edges are at ``floor(i H / rows)``, so cell sizes differ by at most one pixel.
    """
    rows = min(height, max(1, round(math.sqrt(n_segments * height / width))))
    cols = min(width, max(1, round(n_segments / rows)))
    r = torch.arange(height) * rows // height  # (H,) row of each pixel
    c = torch.arange(width) * cols // width  # (W,)
    return r[:, None] * cols + c[None, :]


def slic_labels(image: np.ndarray, n_segments: int, compactness: float, sigma: float) -> np.ndarray:
    """SLIC superpixels of one (H, W, C) display image in [0, 1] -> (H, W) int64 labels ``0..M-1``."""
    from skimage.segmentation import slic

    if image.shape[-1] == 1:  # cluster gray on L* like colour (see the module docstring)
        image = np.repeat(image, 3, axis=-1)
    labels = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0,
                  channel_axis=-1)
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int64)


def segment(images: Tensor, how: str, n_segments: int, compactness: float = 10.0,
            sigma: float = 1.0) -> tuple[Tensor, list[int]]:
    """Superpixels of display images (B, C, H, W) in [0, 1] -> labels (B, H, W) long on the images'
    device, and the number of superpixels of each image."""
    b, _, h, w = images.shape
    if how == "grid":
        labels = grid_labels(h, w, n_segments).to(images.device)
        return labels.expand(b, h, w).contiguous(), [int(labels.max()) + 1] * b
    if how != "slic":
        raise ValueError(f"unknown segmentation {how!r}; expected one of {SEGMENTATIONS}")
    host = images.detach().double().permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
    per_image = [slic_labels(img, n_segments, compactness, sigma) for img in host]
    labels = torch.from_numpy(np.stack(per_image)).to(images.device)
    return labels, [int(lab.max()) + 1 for lab in per_image]

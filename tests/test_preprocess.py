"""Preprocessing equals the user's pipeline: ``resize: shorter`` is torchvision's Resize + CenterCrop
exactly, and ``preprocess.transform`` runs the user's own torchvision transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaicli.config import config_from_dict
from xaicli.engine.preprocess import Preprocess
from xaicli.errors import ConfigError, ImageDecodeError
from xaicli.models.loader import load_model

T = pytest.importorskip("torchvision.transforms")

ODD_SIZES = [(37, 53), (53, 37), (301, 451), (451, 301), (225, 224), (224, 225), (99, 101), (15, 29)]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("crop, resize_size", [(28, None), (224, 256), (17, 20), (32, None), (20, 20)])
@pytest.mark.parametrize("hw", ODD_SIZES)
def test_shorter_equals_torchvision_resize_then_center_crop(hw, crop, resize_size, interpolation):
    img = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(hw[0] * hw[1]))
    pre = Preprocess((crop, crop), "RGB", (0.5,), (0.5,), "shorter", resize_size=resize_size,
                     interpolation=interpolation)
    mode = getattr(T.InterpolationMode, interpolation.upper())
    expected = T.Compose([T.Resize(resize_size or crop, interpolation=mode, antialias=True),
                          T.CenterCrop(crop)])(img)
    torch.testing.assert_close(pre.resize_tensor(img), expected.clamp(0, 1), atol=1e-6, rtol=0)


def test_crop_offsets_and_long_side_follow_torchvision_rounding():
    """The two 1-pixel traps: the long side is truncated (int), and the crop offset rounds half to even."""
    pre = Preprocess((224, 224), "RGB", (0.5,), (0.5,), "shorter", resize_size=256)
    assert pre.shorter_side_size((375, 500)) == (256, 341)  # 256 * 500 / 375 = 341.33
    assert pre.shorter_side_size((333, 500)) == (256, 384)  # 384.38 -> 384
    assert pre.shorter_side_size((299, 500)) == (256, 428)  # 428.09: truncation, as round() would be too
    img = torch.arange(9 * 10, dtype=torch.float32).view(1, 1, 9, 10)
    from xaicli.engine.preprocess import center_crop

    assert torch.equal(center_crop(img, (4, 4)), T.CenterCrop(4)(img))  # (9-4)/2 = 2.5 -> 2, (10-4)/2 = 3
    assert torch.equal(center_crop(img, (6, 7)), T.CenterCrop((6, 7))(img))  # 1.5 -> 2
    assert torch.equal(center_crop(img, (12, 13)), T.CenterCrop((12, 13))(img))  # padding


def test_shorter_from_a_file_matches_the_pil_pipeline(tmp_path):
    """Against torchvision on PIL images (what a pytorch-grad-cam user writes): the geometry is the same,
    so the values differ only by PIL's 8-bit resampling - far less than a 1-pixel shift would."""
    yy, xx = np.mgrid[0:301, 0:451]
    pattern = np.stack([np.sin(xx / 1.7 + yy / 3.1), np.cos(yy / 2.3), np.sin((xx - yy) / 2.9)], axis=-1)
    pixels = np.round(127.5 * (pattern + 1)).astype(np.uint8)  # detail at the scale of a few pixels
    path = tmp_path / "odd.png"
    Image.fromarray(pixels).save(path)
    pre = Preprocess((224, 224), "RGB", (0.5,), (0.5,), "shorter", resize_size=256)
    ours = pre.load(str(path))
    pil = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])(Image.open(path).convert("RGB"))
    assert ours.shape == pil.shape == (3, 224, 224)
    inner = (slice(None), slice(2, -2), slice(2, -2))
    diff = (ours - pil)[inner].abs().mean().item()
    for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        moved = torch.roll(ours, shift, dims=(1, 2))
        assert diff < 0.25 * (moved - pil)[inner].abs().mean().item(), shift
    assert diff < 2 / 255


# --- preprocess.transform ------------------------------------------------------------------------------

TRANSFORMS = '''
import torchvision.transforms as T

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def pipeline():
    return T.Compose([T.Resize(20), T.CenterCrop(16), T.ToTensor(), T.Normalize(MEAN, STD)])


pipeline_object = T.Compose([T.Resize((16, 16)), T.ToTensor()])


def as_function(img):
    return T.functional.to_tensor(T.functional.center_crop(T.functional.resize(img, 18), 16))


def varying():
    return T.Compose([T.Resize(16), T.ToTensor()])
'''


@pytest.fixture
def transform_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_transforms.py"
    path.write_text(TRANSFORMS)
    return path


def _config(tiny_config: dict, tmp_path: Path, transform: str, **preprocess) -> object:
    tiny_config["preprocess"] = {"transform": transform, **preprocess}
    return config_from_dict(tiny_config, base_dir=tmp_path)


def test_transform_with_normalize_gives_size_mean_std_and_the_display_image(tiny_config, tmp_path,
                                                                               transform_file):
    loaded = load_model(_config(tiny_config, tmp_path, "my_transforms.py:pipeline"))
    assert loaded.size == (16, 16)
    assert loaded.mean == (0.4, 0.5, 0.6) and loaded.std == (0.2, 0.25, 0.3)
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (31, 45, 3), dtype=np.uint8)).save(path)
    display = Preprocess.for_model(loaded).load(str(path))
    expected = T.Compose([T.Resize(20), T.CenterCrop(16), T.ToTensor()])(Image.open(path).convert("RGB"))
    torch.testing.assert_close(display, expected)
    # normalised as the user's Normalize would
    mean, std = Preprocess.for_model(loaded).normaliser(torch.device("cpu"))
    user = T.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(expected)
    torch.testing.assert_close(((display[None] - mean) / std)[0], user)


@pytest.mark.parametrize("name", ["pipeline_object", "as_function"])
def test_transform_objects_and_functions(tiny_config, tmp_path, transform_file, name):
    loaded = load_model(_config(tiny_config, tmp_path, f"my_transforms.py:{name}", mean=[0.5], std=[0.25]))
    assert loaded.size == (16, 16) and loaded.mean == (0.5,)
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    out = Preprocess.for_model(loaded).load(str(path))
    assert out.shape == (3, 16, 16) and torch.allclose(out[0], torch.ones(16, 16))


def test_transform_errors(tiny_config, tmp_path, transform_file):
    with pytest.raises(ConfigError, match="different sizes"):
        load_model(_config(tiny_config, tmp_path, "my_transforms.py:varying"))
    with pytest.raises(ConfigError, match="has no 'nope'"):
        load_model(_config(tiny_config, tmp_path, "my_transforms.py:nope"))
    with pytest.raises(ConfigError, match="preprocess.size"):
        load_model(_config(tiny_config, tmp_path, "my_transforms.py:pipeline", size=[20, 20]))


def test_a_failing_transform_is_a_per_image_failure(tiny_config, tmp_path, transform_file):
    loaded = load_model(_config(tiny_config, tmp_path, "my_transforms.py:pipeline_object"))
    pre = Preprocess.for_model(loaded, "black")
    broken = Preprocess(pre.size, pre.mode, pre.mean, pre.std, transform=type(pre.transform)(
        lambda _img: 1 / 0, None, None, (16, 16), "x:y"))
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30)).save(path)
    with pytest.raises(ImageDecodeError, match="ZeroDivisionError"):
        broken.load(str(path))

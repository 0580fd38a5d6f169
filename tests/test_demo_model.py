"""Tests for the shipped Fashion-MNIST demo model, its data reader and the sample images."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaicli.demo.fashion_mnist_data import dataset_root, load_idx, load_split
from xaicli.demo.train import class_folder, evaluate, to_input
from xaicli.models.fashion_mnist import CLASSES, WEIGHTS_PATH, FashionMNISTCNN, fashion_mnist_cnn

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "sample_images"


def _dataset_available() -> bool:
    root = dataset_root()
    return (root / "t10k-images-idx3-ubyte.gz").is_file() and (root / "t10k-labels-idx1-ubyte.gz").is_file()


@pytest.fixture(scope="module")
def model() -> FashionMNISTCNN:
    return fashion_mnist_cnn(pretrained=True)


# --- (a) weights and layer names -------------------------------------------------------------------


def test_weights_load_weights_only() -> None:
    state_dict = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state_dict.values())
    assert all(v.dtype == torch.float32 for v in state_dict.values() if v.is_floating_point())
    FashionMNISTCNN().load_state_dict(state_dict)  # strict: keys and shapes match


def test_layer_names_and_output_shape(model: FashionMNISTCNN) -> None:
    names = {name for name, _ in model.named_modules()}
    for block in range(3):
        for part in ("conv", "bn", "relu", "pool"):
            assert f"features.{block}.{part}" in names
    assert {"features", "pool", "flatten", "classifier"} <= names
    assert not model.training

    with torch.no_grad():
        out = model(torch.randn(3, 1, 28, 28))
        maps = model.features(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, len(CLASSES)) == (3, 10)
    assert maps.shape == (3, 128, 7, 7)


def test_classes() -> None:
    assert len(CLASSES) == 10
    assert CLASSES[0] == "T-shirt/top" and CLASSES[9] == "Ankle boot"


# --- (b) idx reader ------------------------------------------------------------------------------


def _write_idx(
    path: Path, array: np.ndarray, type_code: int = 0x08, magic_prefix: bytes = b"\x00\x00"
) -> None:
    header = magic_prefix + bytes([type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())


def test_load_idx_round_trip(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / "tiny-images-idx3-ubyte.gz"
    _write_idx(path, images)
    loaded = load_idx(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, images)

    ints = np.array([1, -2, 300000], dtype=">i4")
    _write_idx(tmp_path / "ints.gz", ints, type_code=0x0C)
    np.testing.assert_array_equal(load_idx(tmp_path / "ints.gz"), [1, -2, 300000])


def test_load_idx_rejects_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    _write_idx(path, np.zeros((2, 2), dtype=np.uint8), magic_prefix=b"\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        load_idx(path)
    _write_idx(path, np.zeros((2, 2), dtype=np.uint8), type_code=0x42)
    with pytest.raises(ValueError, match="magic"):
        load_idx(path)


def test_load_idx_missing_file_names_debian_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_idx(tmp_path / "nope-idx1-ubyte.gz")


def test_load_split_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("XAICLI_FASHION_MNIST", str(tmp_path))
    x, y = load_split("test")
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(ValueError):
        load_split("val")  # type: ignore[arg-type]


# --- (c) full test-set accuracy ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not _dataset_available(), reason="Fashion-MNIST not installed (dataset-fashion-mnist)")
def test_full_test_set_accuracy(model: FashionMNISTCNN) -> None:
    images, labels = load_split("test")
    assert images.shape == (10_000, 28, 28)
    accuracy = evaluate(model, to_input(images), torch.from_numpy(labels))
    assert accuracy >= 0.90


# --- (d) shipped sample images -------------------------------------------------------------------


def test_sample_images_tree(model: FashionMNISTCNN) -> None:
    folders = sorted(p.name for p in SAMPLES_DIR.iterdir() if p.is_dir())
    assert folders == sorted(class_folder(name) for name in CLASSES)

    correct = total = 0
    for label, name in enumerate(CLASSES):
        pngs = sorted((SAMPLES_DIR / class_folder(name)).glob("*.png"))
        assert len(pngs) == 5, name
        batch = []
        for png in pngs:
            with Image.open(png) as img:
                assert img.size == (28, 28) and img.mode == "L"
                batch.append(np.asarray(img))
        with torch.no_grad():
            predictions = model(to_input(np.stack(batch))).argmax(1)
        correct += int((predictions == label).sum())
        total += len(pngs)
    assert total == 50
    assert correct >= 40

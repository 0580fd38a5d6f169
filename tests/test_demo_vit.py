"""The shipped Fashion-MNIST ViT: weights, recorded accuracy (checked on the real test set when the dataset
is installed), and the quality of its explanations on the real sample images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaicli.demo.fashion_mnist_data import dataset_root, load_split
from xaicli.demo.train import class_folder, evaluate, to_input
from xaicli.methods import TopK, create_method
from xaicli.models.fashion_mnist_vit import CLASSES, VIT_WEIGHTS_PATH, FashionMNISTViT, fashion_mnist_vit
from xaicli.models.layers import default_layer

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
RECORD = VIT_WEIGHTS_PATH.with_suffix(".json")


@pytest.fixture(scope="module")
def model() -> FashionMNISTViT:
    return fashion_mnist_vit(pretrained=True)


@pytest.fixture(scope="module")
def samples() -> tuple[torch.Tensor, torch.Tensor]:
    """The 50 bundled sample images (normalised model input) and their labels."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for png in sorted((SAMPLES / class_folder(name)).glob("*.png")):
            images.append(np.asarray(Image.open(png).convert("L")))
            labels.append(label)
    return to_input(np.stack(images)), torch.tensor(labels)


def test_weights_load_weights_only_and_are_small() -> None:
    state = torch.load(VIT_WEIGHTS_PATH, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    FashionMNISTViT().load_state_dict(state)  # strict
    assert VIT_WEIGHTS_PATH.stat().st_size < 1_000_000


def test_recorded_training_run() -> None:
    meta = json.loads(RECORD.read_text())
    assert meta["model"] == "fashion_mnist_vit" and meta["test_accuracy"] >= 0.85
    assert {"epochs", "seed", "threads", "lr", "weight_decay", "torch"} <= set(meta)


def test_default_layer_and_the_samples(model, samples) -> None:
    assert default_layer(model, (1, 28, 28)) == "blocks.3.norm1"
    x, y = samples
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    assert correct >= 40, correct


@pytest.mark.slow
@pytest.mark.skipif(not (dataset_root() / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (dataset-fashion-mnist)")
def test_full_test_set_accuracy_is_the_recorded_one(model) -> None:
    images, labels = load_split("test")
    accuracy = evaluate(model, to_input(images), torch.from_numpy(labels))
    assert accuracy >= 0.85
    assert accuracy == pytest.approx(json.loads(RECORD.read_text())["test_accuracy"], abs=1e-3)


@pytest.mark.parametrize("name, layers", [("gradcam", ["blocks.3.norm1"]), ("attention_rollout", []),
                                          ("transformer_attribution", []), ("grad_rollout", []),
                                          ("legrad", [])])
def test_maps_fall_on_the_garment(model, samples, name, layers) -> None:
    """Fashion-MNIST garments sit on a black background: a map that explains the prediction puts more
    of its mass on the garment than the garment's share of the image (background pixels carry no
    evidence a model could use, except the garment's outline)."""
    x, _ = samples
    maps = create_method(name, model, layers).explain(x, TopK(1)).maps[layers[0] if layers else None][:, 0]
    foreground = (x[:, 0] > (0.1 - 0.2860) / 0.3530).float()  # raw pixel > 0.1
    share = foreground.mean(dim=(1, 2))
    mass = (maps * foreground).sum(dim=(1, 2)) / maps.sum(dim=(1, 2)).clamp_min(1e-8)
    assert (mass > share).float().mean() >= 0.8, (mass - share)
    assert mass.mean() > share.mean() + 0.05


def test_transformer_attribution_is_class_specific_on_the_trained_model(model, samples) -> None:
    x, _ = samples
    maps = create_method("transformer_attribution", model).explain(x, TopK(2)).maps[None]
    differ = (maps[:, 0] - maps[:, 1]).abs().flatten(1).amax(1)
    assert (differ > 0.1).float().mean() >= 0.9


@pytest.mark.parity
def test_gradcam_on_the_trained_vit_equals_pytorch_grad_cam(model, samples) -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = samples[0][::5]
    targets = model(x).argmax(1)
    layer = "blocks.3.norm1"
    ours = create_method("gradcam", model, [layer]).explain(x, targets).maps[layer][:, 0]

    def reshape_transform(t):
        return t[:, 1:, :].reshape(t.size(0), 7, 7, t.size(2)).permute(0, 3, 1, 2)

    with pgc.GradCAM(model=model, target_layers=[model.blocks[3].norm1],
                     reshape_transform=reshape_transform) as c:
        ref = c(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    for i in range(x.shape[0]):
        assert np.corrcoef(ours[i].numpy().ravel(), ref[i].ravel())[0, 1] >= 0.99

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


def deletion_drop(model, x: torch.Tensor, targets: torch.Tensor, ranking: torch.Tensor, frac: float) -> float:
    """Mean drop of the target probability when the ``frac`` highest-ranked pixels are set to black."""
    n = int(ranking[0].numel() * frac)
    idx = ranking.flatten(1).topk(n, dim=1).indices
    black = (0.0 - 0.2860) / 0.3530
    deleted = x.flatten(1).scatter(1, idx, black).view_as(x)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, targets[:, None])
        after = model(deleted).softmax(1).gather(1, targets[:, None])
    return float((before - after).mean())


@pytest.mark.parametrize("name, layers", [("gradcam", ["blocks.3.norm1"]), ("attention_rollout", []),
                                          ("transformer_attribution", []), ("grad_rollout", []),
                                          ("legrad", [])])
def test_deleting_what_the_map_points_at_hurts_more_than_random_pixels(model, samples, name, layers) -> None:
    """Deletion (Petsiuk et al. 2018): blacking out the 20% of pixels a faithful map ranks highest lowers
    the predicted class's probability much more than blacking out 20% at random (on the 50 real samples,
    random deletion costs ~0.17 on average, the maps 0.3-0.5)."""
    x, _ = samples
    with torch.no_grad():
        targets = model(x).argmax(1)
    maps = create_method(name, model, layers).explain(x, targets).maps[layers[0] if layers else None][:, 0]
    noise = [torch.rand(maps.shape, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    random_drop = np.mean([deletion_drop(model, x, targets, r, 0.2) for r in noise])
    drop = deletion_drop(model, x, targets, maps + 1e-6 * noise[0], 0.2)  # ties broken at random
    assert drop > 1.5 * random_drop, (drop, random_drop)


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

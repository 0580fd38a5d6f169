"""The localisation demo: the two shipped canvas models, their samples and masks, and the outcome the
README shows - the honest model passes the pointing-game gate, the Clever Hans model fails it (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaicli.demo.canvas_data import BAND, make_canvases
from xaicli.demo.fashion_mnist_data import dataset_root, load_split
from xaicli.demo.train_canvas import test_set as canvas_test_set
from xaicli.models.canvas import VARIANTS, CanvasCNN, canvas_cnn, weights_path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "sample_canvas"


def _dataset_available() -> bool:
    return (dataset_root() / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_load_weights_only_and_match_the_architecture(variant):
    state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    CanvasCNN().load_state_dict(state)  # strict
    record = json.loads(weights_path(variant).with_suffix(".json").read_text(encoding="utf-8"))
    assert record["marker"] == ("random" if variant == "canvas_cnn" else "label")


def test_canvases_masks_and_markers():
    rng = np.random.default_rng(0)
    items = np.zeros((4, 28, 28), np.uint8)
    items[:, 10:18, 10:18] = 200  # an 8x8 square item
    canvases, masks = make_canvases(items, np.array([0, 3, 3, 9]), rng, clutter=0, marker="label")
    assert canvases.shape == (4, 64, 64) and masks.sum(axis=(1, 2)).tolist() == [64] * 4
    assert not masks[:, :BAND].any()  # items are placed below the marker band
    assert (canvases[masks] == 200).all()
    band = canvases[:, :BAND] > 0
    assert (band[1] == band[2]).all() and not (band[0] == band[3]).all()  # the marker encodes the label


def test_samples_and_masks_ship_in_pairs():
    images = sorted(p.relative_to(SAMPLES / "images") for p in (SAMPLES / "images").rglob("*.png"))
    masks = sorted(p.relative_to(SAMPLES / "masks") for p in (SAMPLES / "masks").rglob("*.png"))
    assert len(images) == 50 and images == masks
    for rel in images[:5]:
        mask = np.asarray(Image.open(SAMPLES / "masks" / rel))
        assert set(np.unique(mask)) <= {0, 255} and mask.any()


@pytest.mark.skipif(not _dataset_available(), reason="needs the Debian package dataset-fashion-mnist")
def test_shipped_models_accuracy_and_the_spurious_cue():
    """2,000 test canvases: both models are accurate when the marker names the class; with a random
    marker the honest model stays accurate and the Clever Hans model collapses - it reads the marker."""
    images, labels = load_split("test")
    images, labels = images[:2000], labels[:2000]
    acc = {}
    for variant in VARIANTS:
        model = canvas_cnn(variant)
        for marker in ("label", "random"):
            x, y = canvas_test_set(marker, images, labels)
            with torch.no_grad():
                pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
            acc[variant, marker] = (pred == y).float().mean().item()
    assert acc["canvas_cnn", "label"] > 0.85 and acc["canvas_cnn", "random"] > 0.85
    assert acc["canvas_cnn_clever_hans", "label"] > 0.98
    assert acc["canvas_cnn_clever_hans", "random"] < 0.4


@pytest.mark.slow
def test_pointing_game_gate_passes_the_honest_model_and_fails_clever_hans(tmp_path, cli):
    outcomes = {}
    for config in ("canvas", "canvas_clever_hans"):
        r = cli("evaluate", SAMPLES / "images", "-c", REPO_ROOT / "configs" / f"{config}.yaml", "-o",
                tmp_path / config, "--masks", SAMPLES / "masks",
                "--metrics", "pointing_game,energy_pointing_game",
                "--fail-under", "pointing_game=0.8", "--json", "-q")
        summary = json.loads(r.stdout)
        pg = next(s["mean"] for s in summary["summary"] if s["metric"] == "pointing_game")
        outcomes[config] = (r.exit_code, pg)
    assert outcomes["canvas"][0] == 0 and outcomes["canvas"][1] >= 0.9
    assert outcomes["canvas_clever_hans"][0] == 3 and outcomes["canvas_clever_hans"][1] < 0.5

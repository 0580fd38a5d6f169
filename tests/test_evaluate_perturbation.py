"""``xaicli evaluate`` on the perturbation methods (issue 13 x issue 11), small settings on the tiny model.

What can go wrong where the two meet: the metrics must score the maps as written (signed in [-1, 1]
for occlusion and LIME, unsigned for RISE); the metrics that recompute maps (max-sensitivity, MPRT)
must rebuild the method exactly as the run did (options, seeds, fill from the input range, superpixels
from the display image); and a constant perturbation map must be reported ``flat`` like any other.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_evaluate import strict_rows

pytestmark = pytest.mark.usefixtures("torch_single_thread")

METHODS = [
    {"name": "occlusion", "options": {"window": 4, "stride": 4, "fill": "black"}},
    {"name": "rise", "options": {"masks": 16, "grid": 4, "seed": 0, "fill": "black"}},
    {"name": "lime", "options": {"samples": 24, "n_segments": 6, "seed": 0, "fill": "black"}},
]
OPTIONS = {"deletion": {"steps": 10}, "insertion": {"steps": 10},
           "max_sensitivity": {"samples": 2, "radius": 0.0}}


@pytest.fixture
def perturbation_config(tmp_path, tiny_config, write_config):
    tiny_config["methods"] = METHODS
    tiny_config["evaluate"] = {"options": OPTIONS, "figure_images": 0}
    return write_config(tmp_path, tiny_config)


def test_evaluate_scores_the_written_perturbation_maps(cli, tmp_path, perturbation_config, image_tree):
    """Faithfulness and complexity rows of every perturbation method equal ``evaluate_maps`` on the
    .npy maps the run wrote; max-sensitivity at radius 0 recomputes each map and finds it unchanged,
    so the re-explanation uses the run's options, seeds, fill and superpixels."""
    from xaicli.config import load_config
    from xaicli.engine import Explainer
    from xaicli.metrics import evaluate_maps

    out = tmp_path / "out"
    metrics = ["deletion", "insertion", "sparseness", "max_sensitivity"]
    res = cli("evaluate", image_tree, "-c", perturbation_config, "-o", out, "--metrics", ",".join(metrics))
    assert res.exit_code == 0, res
    manifest = [r for r in strict_rows(out / "manifest.jsonl") if r["status"] == "ok"]
    rows = strict_rows(out / "evaluation.jsonl")
    assert {r["method"] for r in rows} == {"occlusion", "rise", "lime"}
    assert len(rows) == len(manifest) * len(metrics) == 3 * 3 * 2 * len(metrics)

    values = {(r["image"], r["method"], r["slot"], r["metric"]): r["value"] for r in rows}
    explainer = Explainer(load_config(perturbation_config))
    for (image, method) in sorted({(r["image"], r["method"]) for r in manifest}):
        mine = sorted((r for r in manifest if r["image"] == image and r["method"] == method),
                      key=lambda r: r["slot"])
        maps = torch.from_numpy(np.stack([np.load(out / r["map"]) for r in mine]))[None]
        if method != "rise":
            assert maps.min() < 0  # signed maps are scored as written, not rescaled to [0, 1]
        targets = torch.tensor([[r["target"] for r in mine]])
        x = explainer.normalise(explainer.pre.load(image)[None])
        want = evaluate_maps(explainer.loaded.model, x, maps, targets,
                             ["deletion", "insertion", "sparseness"], options=OPTIONS)
        for k, r in enumerate(mine):
            for metric in ("deletion", "insertion", "sparseness"):
                got = values[(image, method, r["slot"], metric)]
                assert got == pytest.approx(float(want[metric].values[0, k]), abs=1e-5)
            assert values[(image, method, r["slot"], "max_sensitivity")] < 1e-4


def test_mprt_recomputes_perturbation_maps_on_randomised_models(cli, tmp_path, perturbation_config,
                                                                image_tree):
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", perturbation_config, "-o", out, "--metrics", "mprt")
    assert res.exit_code == 0, res
    rows = strict_rows(out / "evaluation.jsonl")
    n_stages = len({r["stage"] for r in rows})
    assert n_stages == 5 and len(rows) == 3 * 3 * 2 * n_stages  # images x methods x top-2 x stages
    defined = [r["value"] for r in rows if r["value"] is not None]
    assert defined and all(-1 <= v <= 1 for v in defined)
    # a fully randomised network no longer produces the original maps
    last = [r["value"] for r in rows if r["stage_index"] == n_stages and r["value"] is not None]
    assert np.mean(last) < 0.99


def test_a_constant_perturbation_map_is_flagged_flat(cli, tmp_path, tiny_config, write_config, image_tree):
    """One occlusion window over the whole image (and one grid superpixel) gives every pixel the same
    score drop: flat, written as zeros, counted, warned about without blaming a layer; sparseness of it
    is undefined. RISE on the same images is not flat."""
    tiny_config["methods"] = [
        {"name": "occlusion", "options": {"window": [16, 20], "stride": [16, 20], "fill": "black"}},
        {"name": "feature_ablation", "options": {"segments": "grid", "n_segments": 1, "fill": "black"}},
        METHODS[1],
    ]
    tiny_config["evaluate"] = {"metrics": ["sparseness"], "figure_images": 0}
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    manifest = [r for r in strict_rows(out / "manifest.jsonl") if r["status"] == "ok"]
    for r in manifest:
        assert r["flat"] is (r["method"] != "rise"), r
        if r["flat"]:
            assert not np.load(out / r["map"]).any()
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["flat_maps"] == {"occlusion": 6, "feature_ablation": 6, "rise": 0}
    assert "occlusion: 6 of 6 maps are flat" in res.stderr and "check the method's options" in res.stderr
    flat_rows = [r for r in strict_rows(out / "evaluation.jsonl") if r["method"] != "rise"]
    assert len(flat_rows) == 12 and all(r["value"] is None for r in flat_rows)

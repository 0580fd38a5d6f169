"""``xaicli evaluate`` end to end on the tiny factory model: rows, summaries, gates and exit codes, masks,
resume, figures and the report, and the library entry on tensors.

The values in ``evaluation.jsonl`` are checked against an independent recomputation from the files the
run wrote (the manifest's targets, the ``.npy`` maps, the images), through ``evaluate_maps``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import save_random_image

pytestmark = pytest.mark.usefixtures("torch_single_thread")

FAST = {"deletion": {"steps": 10}, "insertion": {"steps": 10}}


def strict_rows(path: Path) -> list[dict]:
    """The JSON lines of ``path``, refusing NaN / Infinity (strict JSON)."""
    def refuse(token: str):
        raise ValueError(f"non-standard JSON constant {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def eval_config(tmp_path, tiny_config, write_config):
    tiny_config["evaluate"] = {"options": FAST, "figure_images": 2}
    return write_config(tmp_path, tiny_config)


def test_evaluate_writes_rows_summary_figures_and_report(cli, tmp_path, eval_config, image_tree):
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", out, "--metrics", "deletion,insertion,mprt",
              "-M", "sparseness")
    assert res.exit_code == 0, res
    rows = strict_rows(out / "evaluation.jsonl")
    manifest = strict_rows(out / "manifest.jsonl")
    assert len(manifest) == 3 * 2  # 3 images x top-2
    stages = [r for r in rows if r["metric"] == "mprt"]
    n_stages = len({r["stage"] for r in stages})
    assert n_stages == 5  # fc, features.1.bn, features.1.conv, features.0.bn, features.0.conv
    assert len(rows) == 6 * 3 + 6 * n_stages
    assert [r["stage_index"] for r in stages[:n_stages]] == list(range(1, n_stages + 1))
    first = rows[0]
    for key in ("image", "method", "layer", "target", "target_name", "rank", "metric", "value", "curve"):
        assert key in first
    assert len(first["curve"]) == schedule_len(16 * 20, 10)

    summary = json.loads((out / "evaluation.json").read_text())
    by_metric = {r["metric"]: r for r in summary["summary"]}
    assert set(by_metric) == {"deletion", "insertion", "mprt", "sparseness"}
    values = [r["value"] for r in rows if r["metric"] == "deletion"]
    assert by_metric["deletion"]["n"] == 6 and by_metric["deletion"]["mean"] == pytest.approx(np.mean(values),
                                                                                             abs=1e-5)
    assert by_metric["mprt"]["stages"][-1]["stage_index"] == n_stages
    assert summary["passed"] is True and summary["gates"] == []

    figures = set(summary["figures"])
    assert {"figures/evaluate/curves.png", "figures/evaluate/mprt_similarity.png",
            "figures/evaluate/summary.png"} <= figures
    assert len([f for f in figures if f.startswith("figures/evaluate/mprt/")]) == 2
    assert all((out / f).is_file() for f in figures)
    report = (out / "index.html").read_text()
    assert "figures/evaluate/curves.png" in report and "evaluate-mprt-grid" in report
    assert "done: 3 image(s) evaluated" in res.stderr


def schedule_len(hw: int, steps: int) -> int:
    step = -(-hw // steps)
    return -(-hw // step) + 1


def test_rows_are_the_metrics_of_the_written_maps(cli, tmp_path, eval_config, image_tree):
    """Recompute deletion and sparseness from the manifest, the .npy maps and the images."""
    from xaicli.config import load_config
    from xaicli.engine import Explainer
    from xaicli.metrics import evaluate_maps

    out = tmp_path / "out"
    assert cli("evaluate", image_tree, "-c", eval_config, "-o", out, "--metrics", "deletion,sparseness"
               ).exit_code == 0
    explainer = Explainer(load_config(eval_config))
    manifest = [r for r in strict_rows(out / "manifest.jsonl") if r["status"] == "ok"]
    rows = {(r["image"], r["slot"], r["metric"]): r["value"] for r in strict_rows(out / "evaluation.jsonl")}
    for image in sorted({r["image"] for r in manifest}):
        mine = sorted((r for r in manifest if r["image"] == image), key=lambda r: r["slot"])
        maps = torch.from_numpy(np.stack([np.load(out / r["map"]) for r in mine]))[None]
        targets = torch.tensor([[r["target"] for r in mine]])
        x = explainer.normalise(explainer.pre.load(image)[None])
        got = evaluate_maps(explainer.loaded.model, x, maps, targets, ["deletion", "sparseness"],
                            options=FAST)
        for k, r in enumerate(mine):
            for metric in ("deletion", "sparseness"):
                want = float(got[metric].values[0, k])
                assert rows[(image, r["slot"], metric)] == pytest.approx(want, abs=1e-5)


def test_a_failed_gate_exits_3_naming_it(cli, tmp_path, eval_config, image_tree):
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", out, "--metrics", "deletion,insertion",
              "--fail-under", "insertion=0.99", "--fail-over", "deletion=1.0")
    assert res.exit_code == 3, res
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("gate failed")]
    assert len(lines) == 1
    assert "insertion of gradcam @ features.1.conv" in lines[0] and ">= 0.99" in lines[0]
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["passed"] is False
    gates = {g["metric"]: g for g in summary["gates"]}
    assert gates["insertion"]["passed"] is False and gates["deletion"]["passed"] is True
    # resumed run, gates passed: exit 0, the explanations are reused
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", out, "--metrics", "deletion,insertion",
              "--fail-over", "deletion=1.0")
    assert res.exit_code == 0, res
    assert len(strict_rows(out / "manifest.jsonl")) == 6
    assert len(strict_rows(out / "evaluation.jsonl")) == 12  # rewritten, resumed rows evaluated


def test_gates_from_the_config(cli, tmp_path, tiny_config, write_config, image_tree):
    tiny_config["evaluate"] = {"metrics": ["sparseness"], "gates": {"fail_under": {"sparseness": 0.999}}}
    res = cli("evaluate", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == 3 and "gate failed: sparseness" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--metrics", "deletoin"], "did you mean: 'deletion'"),
    (["--metrics", "pointing_game"], "need object masks"),
    (["--metrics", "deletion", "--fail-under", "insertion=0.5"], "'insertion' is not evaluated"),
    (["--metrics", "deletion", "--fail-under", "insertion"], "expected METRIC=VALUE"),
    (["--metrics", "deletion", "--masks", "nowhere"], ""),
])
def test_usage_errors_exit_2_before_anything_runs(cli, tmp_path, eval_config, image_tree, args, message):
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", out, *args)
    if "--masks" in args:  # masks are only read when a localisation metric needs them
        assert res.exit_code == 0
        return
    assert res.exit_code == 2, res
    assert message in res.stderr and not (out / "manifest.jsonl").exists()


def test_bad_metric_option_in_config_is_a_usage_error(cli, tmp_path, tiny_config, write_config, image_tree):
    tiny_config["evaluate"] = {"metrics": ["deletion"], "options": {"deletion": {"stepz": 3}}}
    res = cli("evaluate", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == 2 and "evaluate.options.deletion.stepz" in res.stderr


def test_localisation_with_folder_masks_and_boxes(cli, tmp_path, eval_config, image_tree):
    from PIL import Image

    masks = tmp_path / "masks"
    (masks / "cat").mkdir(parents=True)
    full = np.zeros((16, 20), np.uint8)
    full[:, :] = 255
    Image.fromarray(full).save(masks / "cat" / "a.png")  # the whole image is the object
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", out, "--metrics",
              "pointing_game,energy_pointing_game,relevance_mass", "--masks", masks)
    assert res.exit_code == 0, res
    rows = strict_rows(out / "evaluation.jsonl")
    a = [r for r in rows if r["image"].endswith("a.png")]
    assert {r["value"] for r in a} == {1.0}  # everything is on the object
    others = [r for r in rows if not r["image"].endswith("a.png")]
    assert others and all(r["value"] is None for r in others)  # no mask: undefined, not zero
    summary = json.loads((out / "evaluation.json").read_text())
    assert all(rec["n"] == 2 and rec["undefined"] == 4 for rec in summary["summary"])

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"cat/b": [[0, 0, 20, 16]], "dog/c.png": [[0, 0, 1, 1]]}))
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", out, "--metrics", "energy_pointing_game",
              "--masks", boxes)
    assert res.exit_code == 0, res
    rows = strict_rows(out / "evaluation.jsonl")
    b = [r["value"] for r in rows if r["image"].endswith("b.jpg")]
    c = [r["value"] for r in rows if r["image"].endswith("c.png")]
    assert b == [1.0, 1.0] and all(0 <= v < 0.5 for v in c)


def test_unreadable_image_gets_an_error_row_and_exit_1(cli, tmp_path, eval_config, image_tree):
    (image_tree / "dog" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", out, "--metrics", "sparseness")
    assert res.exit_code == 1, res
    errors = [r for r in strict_rows(out / "evaluation.jsonl") if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["image"].endswith("broken.png")


def test_json_summary_on_stdout(cli, tmp_path, eval_config, image_tree):
    res = cli("evaluate", image_tree, "-c", eval_config, "-o", tmp_path / "out", "--metrics", "sparseness",
              "--json", "--fail-over", "sparseness=1")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["passed"] is True and data["summary"][0]["metric"] == "sparseness"
    assert data["explain"]["images_explained"] == 3


def test_metric_names_in_the_help_are_the_registry(cli):
    from xaicli.cli.evaluate import METRIC_NAMES
    from xaicli.metrics import available_metrics

    assert sorted(METRIC_NAMES) == sorted(available_metrics())
    res = cli("metrics")
    assert res.exit_code == 0 and all(name in res.output for name in METRIC_NAMES)
    listed = json.loads(cli("metrics", "--json").stdout)
    assert listed["deletion"]["higher_is_better"] is False and listed["pointing_game"]["needs_masks"] is True


def test_library_evaluate_on_tensors_matches_evaluate_maps(tmp_path, tiny_config):
    from xaicli.config import config_from_dict
    from xaicli.engine import Explainer, explain_images
    from xaicli.metrics import MapSource, evaluate, evaluate_maps

    cfg = config_from_dict(tiny_config)
    explainer = Explainer(cfg)
    images = torch.rand(3, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    result = explain_images(explainer, images)
    scores = evaluate(explainer, images, result, ["deletion", "mprt", "max_sensitivity"], options=FAST)
    key = ("gradcam", "features.1.conv")
    maps = result.maps[key]
    x = explainer.normalise(images)
    source = MapSource("gradcam", "features.1.conv", explainer.methods[0].options, explainer.input_range)
    direct = evaluate_maps(explainer.loaded.model, x, maps, result.targets,
                           ["deletion", "mprt", "max_sensitivity"], source=source, options=FAST)
    for name in ("deletion", "mprt", "max_sensitivity"):
        assert torch.allclose(scores[(name, *key)].values, direct[name].values, equal_nan=True, atol=1e-6)
    assert scores[("mprt", *key)].values.shape == (3, 2, 5)


def test_maps_of_a_blank_image_are_flagged_flat(cli, tmp_path, tiny_config, write_config, image_tree):
    """A constant image's maps have nothing to show: 'flat' in the manifest, counted in the summary."""
    save_random_image(image_tree / "cat" / "z.png")
    from PIL import Image

    Image.new("RGB", (20, 16)).save(image_tree / "dog" / "black.png")
    tiny_config["evaluate"] = {"metrics": ["sparseness"]}
    out = tmp_path / "out"
    res = cli("evaluate", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    manifest = strict_rows(out / "manifest.jsonl")
    flat = {r["image"].rsplit("/", 1)[-1] for r in manifest if r["flat"]}
    assert "black.png" in flat and "z.png" not in flat
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["flat_maps"]["gradcam @ features.1.conv"] == 2  # black.png, top-1 and top-2

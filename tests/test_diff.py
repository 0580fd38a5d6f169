"""``xaicli diff``: matching, similarities against SciPy / scikit-image, gates and exit codes, reports.

Most cases use run folders written by hand (a manifest, ``.npy`` maps and a ``run.json``), so what is
compared, and what the answer must be, is known exactly; the end-to-end cases run ``explain`` twice.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from xaicli.metrics.similarity import topk_iou
from xaicli.runs.diff import DiffGates, diff_runs

CLASSES = ["cat", "dog", "fox"]


def write_run(root: Path, rows: list[dict], maps: dict[str, np.ndarray], *, size=(8, 8),
              classes=CLASSES, evaluation: list[dict] | None = None) -> Path:
    """A run folder: ``rows`` as the manifest (``map`` names a key of ``maps``), the maps as .npy files."""
    root.mkdir(parents=True)
    lines = []
    for row in rows:
        row = {"status": "ok", "layer": "conv", "method": "gradcam", **row}
        if row["status"] == "ok":
            name = row.pop("map_key")
            np.save(root / f"{name}.npy", maps[name].astype(np.float32))
            row["map"] = f"{name}.npy"
        lines.append(json.dumps(row))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "run.json").write_text(json.dumps({"classes": classes, "config": {"preprocess": {
        "size": list(size), "mode": "RGB"}}}), encoding="utf-8")
    if evaluation is not None:
        (root / "evaluation.json").write_text(json.dumps({"summary": evaluation}), encoding="utf-8")
    return root


def row(rel: str, slot: str, target: int, key: str, score: float = 0.9, label: str | None = None) -> dict:
    return {"image": f"in/{rel}", "rel": rel, "slot": slot, "target": target, "target_name": CLASSES[target],
            "rank": int(slot[3:]) if slot.startswith("top") else None, "score": score, "label": label,
            "map_key": key}


@pytest.fixture
def maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.random((8, 8))
    noisy = np.clip(base + 0.05 * rng.standard_normal((8, 8)), 0, 1)  # maps are normalised to [0, 1]
    return {"a": base, "a_noisy": noisy, "b": rng.random((8, 8)),
            "c": rng.random((8, 8)), "flat": np.zeros((8, 8))}


# --- similarities ------------------------------------------------------------------------------------


def test_topk_iou_counts_the_shared_top_pixels():
    a = torch.arange(100, dtype=torch.float64).reshape(1, 10, 10)  # top 10 = 90..99
    b = a.clone()
    b.view(-1)[95:] = -1  # 5 of a's top-10 leave; b's top 10 = 85..94
    assert topk_iou(a, a, 0.1).item() == 1.0
    assert topk_iou(a, b, 0.1).item() == pytest.approx(5 / 15)  # |A∩B| = 5 (90..94), |A∪B| = 15
    with pytest.raises(ValueError):
        topk_iou(a, b, 0.0)


@pytest.mark.parametrize("name", ["spearman", "pearson", "ssim", "topk_iou"])
def test_similarities_match_the_reference_implementations(tmp_path, maps, name):
    stats = pytest.importorskip("scipy.stats")
    base = write_run(tmp_path / "a", [row("x.png", "top1", 0, "a")], maps)
    cand = write_run(tmp_path / "b", [row("x.png", "top1", 0, "a_noisy")], maps)
    got = diff_runs(base, cand, similarity=name).matched[0]["similarity"]
    x, y = (maps["a"].astype(np.float32).astype(np.float64),
            maps["a_noisy"].astype(np.float32).astype(np.float64))
    if name == "spearman":
        want = stats.spearmanr(x.ravel(), y.ravel()).statistic
    elif name == "pearson":
        want = stats.pearsonr(x.ravel(), y.ravel()).statistic
    elif name == "ssim":
        metrics = pytest.importorskip("skimage.metrics")
        want = metrics.structural_similarity(x, y, data_range=1.0, win_size=7)
    else:
        top = lambda m: set(np.argsort(-m.ravel(), kind="stable")[:6])  # noqa: E731 round(0.1 * 64) = 6
        want = len(top(x) & top(y)) / len(top(x) | top(y))
    assert got == pytest.approx(want, abs=1e-6)


# --- matching ----------------------------------------------------------------------------------------


def test_identical_runs_are_identical_even_with_constant_maps(tmp_path, maps):
    rows = [row("x.png", "top1", 0, "a"), row("y.png", "top1", 1, "flat")]
    s = diff_runs(write_run(tmp_path / "a", rows, maps), write_run(tmp_path / "b", rows, maps))
    assert [r["similarity"] for r in s.matched] == [1.0, 1.0]  # a constant map has no ranking, but equals
    assert s.exit_code == 0 and not s.failed_gates


def test_changed_prediction_is_gated_on_the_baseline_class_map(tmp_path, maps):
    """top1 was cat (map a); the candidate now predicts dog first and explains cat as top2 with a map
    like a: the slot maps differ, the cat maps agree, so the row passes, and the flip is reported."""
    base = write_run(tmp_path / "a", [row("x.png", "top1", 0, "a", label="cat"),
                                      row("x.png", "top2", 1, "b")], maps)
    cand = write_run(tmp_path / "b", [row("x.png", "top1", 1, "c", 0.6),
                                      row("x.png", "top2", 0, "a_noisy", 0.3)], maps)
    s = diff_runs(base, cand)
    top1 = next(r for r in s.matched if r["slot"] == "top1")
    assert top1["prediction_changed"] and top1["class_slot"] == "top2"
    assert top1["similarity"] < 0.5 < 0.9 < top1["class_similarity"] == top1["gated_similarity"]
    assert top1["score_change"] == pytest.approx(0.6 - 0.9)
    assert top1["class_score_change"] == pytest.approx(0.3 - 0.9)
    p = s.predictions
    assert (p["top1_changed"], p["baseline_accuracy"], p["candidate_accuracy"], p["broken"]) == (1, 1.0, 0.0,
                                                                                                ["x.png"])
    assert s.to_dict()["exit_code"] in (0, 3)
    gated = diff_runs(base, cand, gates=DiffGates(min_similarity=None, max_prediction_changes=0))
    assert [g.gate for g in gated.failed_gates] == ["max_prediction_changes"]


def test_true_class_runs_compare_and_report_flips_from_predicted(tmp_path, maps):
    """Runs that explain only the labelled class (slot ``true``): the maps stay comparable when the
    prediction changes, and the flip is read from the manifest's ``predicted`` field."""
    def true_row(rel, key, predicted):
        return {**row(rel, "top1", 0, key, label="cat"), "slot": "true", "rank": None, "predicted": predicted}

    base = write_run(tmp_path / "a", [true_row("x.png", "a", "cat"), true_row("y.png", "b", "cat")], maps)
    cand = write_run(tmp_path / "b", [true_row("x.png", "a", "dog"), true_row("y.png", "b", "cat")], maps)
    s = diff_runs(base, cand)
    assert [r["similarity"] for r in s.matched] == [1.0, 1.0]
    assert not any(r["prediction_changed"] for r in s.matched)  # the same class was explained
    p = s.predictions
    assert (p["top1_changed"], p["broken"], p["candidate_accuracy"]) == (1, ["x.png"], 0.5)


def test_unmatched_and_unreadable_rows(tmp_path, maps):
    base = write_run(tmp_path / "a", [row("x.png", "top1", 0, "a"), row("only_a.png", "top1", 0, "b"),
                                      {"image": "in/bad.png", "rel": "bad.png", "status": "error",
                                       "error": "cannot decode"}], maps)
    cand = write_run(tmp_path / "b", [row("x.png", "top1", 0, "a"), row("only_b.png", "top1", 0, "b")], maps)
    s = diff_runs(base, cand)
    status = sorted((r["rel"], r["status"]) for r in s.rows)
    assert status == [("bad.png", "unreadable"), ("only_a.png", "only_in_baseline"),
                      ("only_b.png", "only_in_candidate"), ("x.png", "matched")]
    assert s.exit_code == 1  # unreadable rows, no failed gate
    (cand / "a.npy").unlink()  # a map the manifest points at is gone
    s = diff_runs(base, cand)
    assert next(r for r in s.rows if r["rel"] == "x.png")["status"] == "unreadable"


def test_runs_that_cannot_be_compared_say_what_differs(tmp_path, maps, cli):
    base = write_run(tmp_path / "a", [row("x.png", "top1", 0, "a")], maps)
    other_size = write_run(tmp_path / "b", [row("x.png", "top1", 0, "a")], maps, size=(16, 16))
    r = cli("diff", base, other_size, "-o", tmp_path / "r1")
    assert r.exit_code == 2 and "preprocess.size" in r.stderr and "[8, 8]" in r.stderr
    disjoint = write_run(tmp_path / "c", [row("y.png", "top1", 0, "a")], maps)
    r = cli("diff", base, disjoint, "-o", tmp_path / "r2")
    assert (r.exit_code == 2 and "no rows in common" in r.stderr and "x.png" in r.stderr
            and "y.png" in r.stderr)
    renamed = write_run(tmp_path / "d", [row("x.png", "top1", 0, "a")], maps, classes=["cat", "wolf", "fox"])
    r = cli("diff", base, renamed, "-o", tmp_path / "r3")
    assert r.exit_code == 2 and "'dog' -> 'wolf'" in r.stderr
    r = cli("diff", base, tmp_path / "missing", "-o", tmp_path / "r4")
    assert r.exit_code == 2 and "not a folder" in r.stderr
    r = cli("diff", base, base, "-o", base)
    assert r.exit_code == 2 and "report folder is the baseline" in r.stderr


# --- gates -------------------------------------------------------------------------------------------


def test_similarity_gates(tmp_path, maps):
    base = write_run(tmp_path / "a", [row("x.png", "top1", 0, "a"), row("y.png", "top1", 0, "b")], maps)
    cand = write_run(tmp_path / "b", [row("x.png", "top1", 0, "a_noisy"), row("y.png", "top1", 0, "c")], maps)
    s = diff_runs(base, cand, gates=DiffGates(min_similarity=0.5, max_mean_drop=0.1))
    sims = {r["rel"]: r["similarity"] for r in s.matched}
    assert sims["x.png"] > 0.9 and sims["y.png"] < 0.5
    assert [r["rel"] for r in s.matched if not r["passed"]] == ["y.png"]
    failed = {g.gate: g for g in s.failed_gates}
    assert set(failed) == {"min_similarity", "max_mean_drop"}
    assert failed["max_mean_drop"].value == pytest.approx(1 - (sims["x.png"] + sims["y.png"]) / 2, abs=1e-6)
    assert s.exit_code == 3
    relaxed = diff_runs(base, cand, gates=DiffGates(min_similarity=None, max_mean_drop=0.9))
    assert relaxed.exit_code == 0


def test_metric_gates_read_both_runs_evaluation(tmp_path, maps):
    ev_a = [{"method": "gradcam", "layer": "conv", "metric": "insertion", "mean": 0.60,
             "higher_is_better": True},
            {"method": "gradcam", "layer": "conv", "metric": "deletion", "mean": 0.20,
             "higher_is_better": False}]
    ev_b = [{**ev_a[0], "mean": 0.55}, {**ev_a[1], "mean": 0.21}]
    rows = [row("x.png", "top1", 0, "a")]
    base = write_run(tmp_path / "a", rows, maps, evaluation=ev_a)
    cand = write_run(tmp_path / "b", rows, maps, evaluation=ev_b)
    s = diff_runs(base, cand, gates=DiffGates(max_metric_drop={"insertion": 0.02, "deletion": 0.02}))
    drops = {m["metric"]: m["drop"] for m in s.metrics}
    assert drops == pytest.approx({"insertion": 0.05, "deletion": 0.01})  # deletion: higher is worse
    assert [g.subject for g in s.failed_gates] == ["insertion of gradcam @ conv"]
    s = diff_runs(base, cand, gates=DiffGates(fail_under={"insertion": 0.5}, fail_over={"deletion": 0.2}))
    assert [g.gate for g in s.failed_gates] == ["fail_over"]
    from xaicli.runs.diff import NotComparableError

    with pytest.raises(NotComparableError, match="sparseness"):
        diff_runs(base, cand, gates=DiffGates(max_metric_drop={"sparseness": 0.1}))


# --- end to end ---------------------------------------------------------------------------------------


def _explain(cli, images, config, out):
    r = cli("explain", images, "-c", config, "-o", out, "-q")
    assert r.exit_code == 0, r.stderr
    return out


def test_cli_unchanged_passes_changed_fails_with_reports(tmp_path, image_tree, tiny_config, write_config,
                                                         cli):
    cfg = write_config(tmp_path, tiny_config)
    base = _explain(cli, image_tree, cfg, tmp_path / "base")
    same = _explain(cli, image_tree, cfg, tmp_path / "same")
    r = cli("diff", base, same, "-o", tmp_path / "r0", "--junit", tmp_path / "r0.xml", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["rows"] == {"matched": 6} and summary["groups"][0]["min_similarity"] == 1.0

    # the candidate: the same architecture with its last conv block re-initialised
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_factory",
                                                  tiny_config["model"]["factory"].rsplit(":", 1)[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build()
    torch.manual_seed(1)
    for sub in model.features[1].modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    torch.save(model.state_dict(), tmp_path / "changed.pt")
    changed_cfg = write_config(tmp_path / "changed", {**tiny_config, "model": {
        **tiny_config["model"], "checkpoint": str(tmp_path / "changed.pt")}})
    cand = _explain(cli, image_tree, changed_cfg, tmp_path / "cand")
    r = cli("diff", base, cand, "-o", tmp_path / "r1", "--junit", tmp_path / "r1.xml")
    assert r.exit_code == 3, r.stderr
    suite = ET.parse(tmp_path / "r1.xml").getroot().find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert any(name.endswith("gradcam@features.1.conv") for name in failed)
    assert "min_similarity gradcam @ features.1.conv" in failed


def test_junit_and_markdown_of_a_failing_diff(tmp_path, maps, cli):
    base = write_run(tmp_path / "a", [row("x.png", "top1", 0, "a"), row("y.png", "top1", 0, "b"),
                                      row("z.png", "top1", 0, "a")], maps)
    cand = write_run(tmp_path / "b", [row("x.png", "top1", 0, "a"), row("y.png", "top1", 1, "c"),
                                      row("w.png", "top1", 0, "a")], maps)
    md = tmp_path / "ci" / "summary.md"
    r = cli("diff", base, cand, "-o", tmp_path / "rep", "--junit", tmp_path / "ci" / "junit.xml",
            "--markdown", md)
    assert r.exit_code == 3
    assert "gate failed: min-similarity of gradcam @ conv" in r.stderr and "y.png" in r.stderr
    suite = ET.parse(tmp_path / "ci" / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["y.png gradcam@conv"].find("failure") is not None
    assert "prediction cat -> dog" in cases["y.png gradcam@conv"].find("failure").get("message")
    assert cases["x.png gradcam@conv"].find("failure") is None
    assert cases["z.png gradcam@conv"].find("skipped") is not None  # only in the baseline
    assert cases["min_similarity gradcam @ conv"].find("failure") is not None
    text = md.read_text(encoding="utf-8")
    assert text.startswith("## xaicli diff: FAILED (exit 3)") and "| y.png | gradcam | conv | top1 |" in text
    assert (tmp_path / "rep" / "report.md").read_text(encoding="utf-8") == text
    rows = [json.loads(line) for line in (tmp_path / "rep" / "diff.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} == {"matched", "only_in_baseline", "only_in_candidate"}
    drift = sorted((tmp_path / "rep" / "figures" / "drift").glob("*.png"))
    assert len(drift) == 2 and drift[0].name == "01_gradcam.png"  # the worst row first
    index = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert "figures/drift/01_gradcam.png" in index and "FAILED" in index


@pytest.mark.slow
def test_a_bf16_candidate_passes_the_default_gate(tmp_path, cli, monkeypatch):
    """An unchanged model computed in bfloat16 (autocast; on the CPU here, as no GPU is assumed) against
    an fp32 baseline: every map stays above the default similarity gate (measured on all 50 sample
    images: spearman min 0.967, mean 0.998) and no prediction flips."""
    from xaicli.engine.explainer import Explainer

    repo = Path(__file__).resolve().parent.parent
    images = [repo / "sample_images" / c for c in ("Bag", "Shirt", "Coat")]
    cfg = repo / "configs" / "fashion_mnist.yaml"
    base = tmp_path / "fp32"
    assert cli("explain", *images, "-c", cfg, "-o", base, "-q").exit_code == 0
    monkeypatch.setattr(Explainer, "autocast", lambda self: torch.autocast("cpu", dtype=torch.bfloat16))
    cand = tmp_path / "bf16"
    assert cli("explain", *images, "-c", cfg, "-o", cand, "-q").exit_code == 0
    first = next(base.rglob("*.npy"))
    assert not np.array_equal(np.load(first), np.load(cand / first.relative_to(base)))  # bf16 did change maps
    r = cli("diff", base, cand, "-o", tmp_path / "report", "--json")
    assert r.exit_code == 0, r.stderr
    group = json.loads(r.stdout)["groups"][0]
    assert group["rows"] == 45 and 0.8 < group["min_similarity"] < 1.0

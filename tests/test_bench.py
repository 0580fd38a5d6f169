"""The benchmark harness (``benchmarks/`` in the checkout, outside the package): rows, agreement, report
formats, the thin ``xaicli bench`` entry; tiny sizes, numbers not checked."""

from __future__ import annotations

import json

import pytest

from benchmarks import ALL_ROWS, BenchOptions, run_benchmark
from benchmarks.references import IMPLEMENTED_BY, PGC, reference_available
from benchmarks.report import as_json, as_markdown, as_text
from benchmarks.rows import ALIGNMENT, EXTRA_ROWS, METRIC_ROWS, TARGETS
from xaicli.errors import UsageError
from xaicli.methods import available_methods, get_method, methods_where

TINY = dict(size=64, batch=2, images=2, heavy_images=1, scorecam_images=1, repeats=1, heavy_repeats=1,
            e2e_images=0)


@pytest.fixture(scope="module")
def report():
    return run_benchmark(BenchOptions(methods=["gradcam", "saliency", "topk"], **TINY),
                         log=lambda _line: None)


def test_rows_have_rates_ratios_and_agreement(report):
    rows = {r.method: r for r in report.rows}
    assert set(rows) == {"gradcam", "saliency", "gradcam top-3 vs top-1"}
    cam = rows["gradcam"]
    assert cam.xaicli > 0 and cam.target == ">= 3x" and cam.note == "layer layer4"
    if reference_available(PGC):
        assert cam.reference == "pytorch-grad-cam GradCAM" and cam.ratio == pytest.approx(
            cam.xaicli / cam.reference_rate)
        assert cam.agreement > 0.99  # same maps as pytorch-grad-cam (sanity of what is timed)
    topk = rows["gradcam top-3 vs top-1"]
    assert topk.ratio == pytest.approx(topk.reference_rate / topk.xaicli) and topk.met == (topk.ratio < 3)
    assert report.environment["cores"] >= 1 and report.environment["torch"]


def test_report_formats(report):
    text, md = as_text(report), as_markdown(report)
    for out in (text, md):
        assert "gradcam top-3 vs top-1" in out and "load average" in out and "versions: python" in out
    assert md.splitlines()[0].startswith("| method | model |")
    data = json.loads(as_json(report))
    assert [r["method"] for r in data["rows"]] == [r.method for r in report.rows]


def test_unknown_row_is_a_usage_error():
    with pytest.raises(UsageError, match="did you mean: 'gradcam'"):
        run_benchmark(BenchOptions(methods=["gradcm"], **TINY))


def test_cli_help(cli):
    res = cli("bench", "--help")
    assert res.exit_code == 0 and "pytorch-grad-cam" in res.output


def test_end_to_end_rows_run_both_fresh_processes_and_the_engine(tmp_path):
    opts = BenchOptions(methods=["e2e"], **{**TINY, "e2e_images": 4, "e2e_repeats": 1}, workdir=tmp_path)
    report = run_benchmark(opts, log=lambda _line: None)
    vs_script, vs_engine = report.rows
    assert vs_script.xaicli > 0 and len(list((tmp_path / "out_xaicli").rglob("*.npy"))) == 4
    if reference_available(PGC):
        assert vs_script.reference == "pytorch-grad-cam user script, batch 16"
        assert vs_script.reference_rate > 0 and vs_script.agreement > 0.9
    assert vs_script.target == "" and vs_script.met is None  # 4 images: too few to judge a target
    # where the time goes: the xaicli run's stages, start-up and loop
    stages = set(vs_script.stages)
    assert {"start", "import", "model", "probe", "decode", "engine", "encode", "manifest"} <= stages
    assert vs_script.stages["decode"]["calls"] == 4
    assert vs_engine.reference.startswith("xaicli engine only") and vs_engine.reference_rate > 0
    assert vs_engine.ratio == pytest.approx(vs_engine.xaicli / vs_engine.reference_rate)
    assert "loop only" in vs_engine.note
    text, md = as_text(report), as_markdown(report)
    assert "where the time goes" in text and "| stage | wall s | cpu s |" in md
    assert "engine" in text.split("where the time goes")[1]


def test_e2e_sizes_and_targets():
    from benchmarks.end_to_end import E2E_TARGETS, _target

    assert BenchOptions().e2e_images == (256, 1024)
    assert BenchOptions(e2e_images=0).e2e_images == () and BenchOptions(e2e_images=64).e2e_images == (64,)
    assert BenchOptions().quick().e2e_images == (16,) and BenchOptions(e2e_images=0).quick().e2e_images == ()
    assert _target(1024, E2E_TARGETS) == 3.5 and _target(256, E2E_TARGETS) == 3.0
    assert _target(16, E2E_TARGETS) is None


def test_missing_reference_library_skips_its_rows_with_a_note(monkeypatch):
    import benchmarks.suite as suite

    monkeypatch.setattr(suite, "reference_available", lambda library: False)
    report = run_benchmark(BenchOptions(methods=["gradcam"], **TINY), log=lambda _line: None)
    (row,) = report.rows
    assert row.reference == "-" and row.reference_rate is None and row.ratio is None and row.met is None
    assert row.xaicli > 0
    assert any("pytorch-grad-cam" in n and "skipped" in n for n in report.notes)
    assert "not installed" in as_text(report)


def test_every_registered_method_has_a_row():
    methods = list(available_methods())
    assert set(ALL_ROWS) >= set(methods) and ALL_ROWS == (*methods, *EXTRA_ROWS, *METRIC_ROWS)
    # the hand-written data only names registered methods, with options they declare
    assert set(IMPLEMENTED_BY) | set(ALIGNMENT) | set(TARGETS) <= set(methods)
    for name, options in ALIGNMENT.items():
        assert set(options) <= set(get_method(name).options), name


def test_heavy_rows_are_the_chunked_methods():
    from benchmarks.suite import HEAVY

    assert set(HEAVY) == set(methods_where(chunked=True))
    assert set(HEAVY) >= {"scorecam", "integrated_gradients", "smoothgrad"}


def test_method_without_a_reference_gets_an_xaicli_only_row(monkeypatch):
    import benchmarks.suite as suite

    name = next((m for m in available_methods() if m not in IMPLEMENTED_BY), None)  # negative_gradcam
    if name is None:  # every method has a reference today: pretend Grad-CAM had none
        name = "gradcam"
        monkeypatch.setattr(suite, "reference_library", lambda _name: None)
    report = run_benchmark(BenchOptions(methods=[name], **TINY), log=lambda _line: None)
    (row,) = report.rows
    assert row.xaicli > 0 and row.reference == "-" and row.reference_rate is None and row.ratio is None
    assert row.agreement is None and row.met is None and "no reference library" in row.note


def test_xaicli_bench_outside_a_checkout_exits_2_with_one_line(cli, monkeypatch, tmp_path):
    import xaicli.cli.bench as entry

    monkeypatch.setattr(entry, "benchmarks_folder", lambda: tmp_path / "benchmarks")  # as from a wheel
    for args in ([], ["--help"], ["--quick", "-m", "gradcam"]):
        res = cli("bench", *args)
        assert res.exit_code == 2
        lines = [ln for ln in (res.stderr or res.output).splitlines() if ln.strip()]
        assert lines == [f"error: {entry.NOT_FOUND}"]
        assert lines[0].startswith("error: xaicli bench runs from a source checkout (benchmarks/ not found")


@pytest.mark.slow
def test_perturbation_rows_time_captum_at_its_fastest_setting_and_the_rise_paper_code(monkeypatch):
    """Tiny sample counts (the rows' cost, not their options, is what the full run measures). Occlusion
    computes Captum's numbers, so its maps agree exactly; RISE and LIME draw different random masks or
    samples on each side (with this few, their maps need not even correlate)."""
    import benchmarks.suite as suite

    pytest.importorskip("captum")
    pytest.importorskip("sklearn")
    small = {"occlusion": {"window": 16, "stride": 8}, "rise": {"masks": 16}, "lime": {"samples": 24}}
    for name, options in small.items():
        aligned, target = suite.COMPARISONS[name]
        monkeypatch.setitem(suite.COMPARISONS, name, ({**aligned, **options}, target))
    report = run_benchmark(BenchOptions(methods=list(small), **{**TINY, "size": 32}), log=lambda _line: None)
    rows = {r.method: r for r in report.rows}
    assert set(rows) == set(small) and set(suite.PERTURBATION) >= set(small)
    for name in ("occlusion", "lime"):
        reference = rows[name].reference
        assert reference.startswith("captum ") and "perturbations_per_eval=" in reference
        assert rows[name].reference_rate > 0 and rows[name].target == ">= 3x"
        assert rows[name].agreement is not None
    assert rows["occlusion"].agreement > 0.999
    assert rows["rise"].reference.startswith("RISE paper code") and rows["rise"].target == ">= 2x"
    assert rows["rise"].reference_rate > 0


def test_rise_paper_code_computes_eq_6_and_its_masks_keep_p():
    """The RISE reference, given xaicli's masks, returns xaicli's saliency (the same eq. 6 with the
    softmax score); its own masks (NumPy + scikit-image, as the authors') have mean p and vary."""
    import torch
    from torch import nn

    from benchmarks.references import RisePaperCode
    from xaicli.methods import create_method

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    x = torch.randn(2, 3, 20, 20)
    rise = create_method("rise", model, options={"masks": 50, "grid": 4, "normalise": False})
    ours = rise.explain(x, torch.tensor([[1], [3]])).maps[None][:, 0]
    reference = RisePaperCode(model, n=50, s=4, p=0.5)
    reference.masks = rise.masks((20, 20))(0, 50)[:, None]
    torch.testing.assert_close(reference(x, torch.tensor([1, 3])), ours, rtol=1e-5, atol=1e-6)
    own = RisePaperCode(model, n=400, s=4, p=0.5).generate_masks((20, 20), torch.device("cpu"))
    assert own.shape == (400, 1, 20, 20) and own.mean().item() == pytest.approx(0.5, abs=0.03)
    assert 0 <= own.min() and own.max() <= 1 and own.std() > 0.2


def test_metric_rows_time_xaicli_against_the_references_on_the_same_maps():
    """The metric rows run on the bundled model (one channel: Quantus' pixel flipping is the same protocol)
    and the two sides agree on the values, which is what makes the timing comparable."""
    import re

    from benchmarks.metric_rows import quantus_step

    assert quantus_step(28, 28) == 8 and quantus_step(224, 224) == 512  # divisors of H*W near H*W/100
    opts = BenchOptions(methods=["deletion", "road", "mprt"], model="fashion_mnist_cnn", images=2,
                        heavy_images=1, repeats=1, heavy_repeats=1, e2e_images=0)
    report = run_benchmark(opts, log=lambda _line: None)
    rows = {r.method: r for r in report.rows}
    assert set(rows) >= {"deletion+insertion (100 steps)", "road MoRF+LeRF", "mprt (cascading)"}
    for row in rows.values():
        assert row.xaicli > 0 and row.size == 28 and row.target
        if row.reference_rate:
            assert row.ratio == pytest.approx(row.xaicli / row.reference_rate)
    rise = rows["deletion+insertion (100 steps)"]
    assert rise.reference == "RISE authors' CausalMetric loop"
    assert float(re.search(r"max \|AUC difference\| (\S+)", rise.note).group(1)) < 1e-5
    if reference_available(PGC):
        road = rows["road MoRF+LeRF"]
        assert float(re.search(r"max \|value difference\| (\S+)", road.note).group(1)) < 1e-3
    if "deletion (98 steps)" in rows:  # quantus installed
        note = rows["deletion (98 steps)"].note
        assert float(re.search(r"max \|curve difference\| (\S+)", note).group(1)) < 1e-5
    assert "deletion" not in [r for r in __import__("benchmarks.rows").rows.default_rows()]

"""Out-of-memory back-off (xaicli.engine.batching, xaicli.engine.stream): simulated OOMs give the same
rows, maps and figures, counted - in ``explain``, in the figure recompute after a resume and in ``sweep``.

The OOM is simulated by wrapping a method so that it raises ``torch.OutOfMemoryError`` whenever a call
is larger than a threshold (images per call, or the chunk size the engine passes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xaicli.engine.batching import Batching, OutOfMemoryAtMinimum
from xaicli.engine.results import Explanations
from xaicli.engine.stream import explain_images
from xaicli.methods import get_method

N_IMAGES = 8


@pytest.fixture
def eight_images(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        path = root / ("cat" if i % 2 else "dog") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(path)
    return root


def _rows(outdir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (outdir / "manifest.jsonl").read_text().splitlines() if ln.strip()]


def _run(cli, write_config, tmp_path, config, images, out_name):
    cfg = write_config(tmp_path / out_name, config)
    out = tmp_path / out_name / "out"
    res = cli("explain", images, "-c", cfg, "-o", out)
    return res, out


def _same_outputs(a: Path, b: Path) -> None:
    rows_a, rows_b = _rows(a), _rows(b)
    key = lambda r: (r["image"], r["method"], r["layer"], r["slot"])  # noqa: E731
    assert sorted(rows_a, key=key) == sorted(rows_b, key=key)
    for row in rows_a:
        np.testing.assert_allclose(np.load(a / row["map"]), np.load(b / row["map"]), atol=1e-5)
        assert (b / row["overlay"]).is_file()


def _fail_above(monkeypatch, method: str, limit, what: str = "images") -> list[int]:
    """Make ``method`` raise OutOfMemoryError when its call (images, or ``chunk_size``) exceeds ``limit``."""
    cls = get_method(method)
    original = cls.compute
    calls: list[int] = []

    def compute(self, x, targets, call):
        size = x.shape[0] if what == "images" else call.chunk_size
        calls.append(size)
        if size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated, {what}={size} > {limit})")
        return original(self, x, targets, call)

    monkeypatch.setattr(cls, "compute", compute)
    return calls


def test_batch_is_halved_and_the_reduced_size_is_kept(cli, tmp_path, write_config, tiny_config, eight_images,
                                                       monkeypatch):
    tiny_config["run"]["batch_size"] = 8
    ok, clean = _run(cli, write_config, tmp_path, tiny_config, eight_images, "clean")
    assert ok.exit_code == 0, ok
    calls = _fail_above(monkeypatch, "gradcam", 2)
    res, out = _run(cli, write_config, tmp_path, tiny_config, eight_images, "oom")
    assert res.exit_code == 0, res
    _same_outputs(clean, out)
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["oom_retries"] == 2  # 8 -> 4 -> 2, then 2 for the rest of the batch
    assert info["oom_backoff"]["call_size_in_use"] == 2
    assert calls == [8, 4, 2, 2, 2, 2]
    assert "out of memory on 8 images" in res.output and "retrying with 4" in res.output


@pytest.mark.parametrize("method, options", [
    ("integrated_gradients", {"steps": 8}),
    ("lime", {"samples": 20, "segments": "grid", "n_segments": 6}),  # a perturbation method
])
def test_inner_chunks_back_off_at_one_image(cli, tmp_path, write_config, tiny_config, eight_images,
                                            monkeypatch, method, options):
    tiny_config["run"]["batch_size"] = 4
    tiny_config["methods"] = [{"name": method, "options": {**options, "chunk_size": 16}}]
    ok, clean = _run(cli, write_config, tmp_path, tiny_config, eight_images, "clean")
    assert ok.exit_code == 0, ok
    _fail_above(monkeypatch, method, 4, what="chunk_size")
    res, out = _run(cli, write_config, tmp_path, tiny_config, eight_images, "oom")
    assert res.exit_code == 0, res
    _same_outputs(clean, out)
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["oom_retries"] == 4  # 4 -> 2 -> 1 images, then chunk 16 -> 8 -> 4
    assert info["oom_backoff"]["chunk_sizes_in_use"] == {method: 4}
    assert info["config"]["methods"][0]["options"]["chunk_size"] == 16  # as configured


def test_oom_at_the_smallest_size_fails_the_images_and_the_run_goes_on(
        cli, tmp_path, write_config, tiny_config, eight_images, monkeypatch):
    tiny_config["run"]["batch_size"] = 4
    _fail_above(monkeypatch, "gradcam", 0)
    res, out = _run(cli, write_config, tmp_path, tiny_config, eight_images, "oom")
    assert res.exit_code == 1, res
    rows = _rows(out)
    assert len(rows) == N_IMAGES and all(r["status"] == "error" for r in rows)
    assert "out of memory even for one image" in rows[0]["error"]
    summary = json.loads((out / "run.json").read_text())["summary"]
    assert summary["images_failed"] == N_IMAGES and summary["images_explained"] == 0


class _FakeExplainer:
    """Just what :func:`explain_images` uses of an explainer: a device, sizes and a per-call function."""

    def __init__(self, call, limit: int):
        self.device = torch.device("cpu")
        self.batching = Batching(batch_size=limit, call_size=limit)
        self.explain_batch = call


def test_backoff_merges_pieces_in_order_and_reraises_other_errors():
    def explain(x):
        if x.shape[0] > 3:
            raise RuntimeError("CUDA error: out of memory")
        return Explanations(x[:, 0, 0, :1].long(), x[:, 0, 0, :1], {("m", None): x[:, :1] * 2})

    notes: list[str] = []
    fake = _FakeExplainer(explain, 8)
    x = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 2, 1, 1).contiguous()
    out = explain_images(fake, x, notes.append)
    assert out.targets.flatten().tolist() == list(range(10))
    assert torch.equal(out.maps[("m", None)], x[:, :1] * 2)
    assert fake.batching.retries == 2 and fake.batching.call_size == 2 and len(notes) == 2

    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        explain_images(_FakeExplainer(broken, 4), x)
    with pytest.raises(OutOfMemoryAtMinimum):
        explain_images(_FakeExplainer(lambda x: explain(x.expand(4, -1, -1, -1)), 4), x[:1])


def _figures(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))
            if p.relative_to(out).parts[0] in ("figures", "sweep")}


def test_figure_recompute_after_a_resume_backs_off_too(cli, tmp_path, write_config, tiny_config, eight_images,
                                                        monkeypatch):
    """A resumed run re-explains the skipped images its figures need through the same back-off."""
    tiny_config["run"]["batch_size"] = 8
    tiny_config["figures"] = {"topk": True, "images_per_class": 2}
    ok, clean = _run(cli, write_config, tmp_path, tiny_config, eight_images, "clean")
    assert ok.exit_code == 0, ok
    cfg = write_config(tmp_path / "resumed", tiny_config)
    out = tmp_path / "resumed" / "out"
    assert cli("explain", eight_images, "-c", cfg, "-o", out).exit_code == 0
    calls = _fail_above(monkeypatch, "gradcam", 1)
    res = cli("explain", eight_images, "-c", cfg, "-o", out)  # everything skipped: figures recomputed
    assert res.exit_code == 0, res
    assert "re-explaining 4 resumed image(s)" in res.output and "out of memory on 4 images" in res.output
    assert max(calls) == 4 and calls[-1] == 1
    assert _figures(out) == _figures(clean) and _figures(out)


def test_sweep_backs_off(cli, tmp_path, write_config, tiny_config, eight_images, monkeypatch):
    tiny_config["run"]["batch_size"] = 8
    cfg = write_config(tmp_path, tiny_config)
    args = ("sweep", eight_images, "-c", cfg, "--layers", "features.0.conv,features.1.conv", "-n", "2")
    ok = cli(*args, "-o", tmp_path / "clean")
    assert ok.exit_code == 0, ok
    calls = _fail_above(monkeypatch, "gradcam", 2)
    res = cli(*args, "-o", tmp_path / "oom")
    assert res.exit_code == 0, res
    assert "out of memory on 4 images" in res.output and calls[:2] == [4, 2]
    assert _figures(tmp_path / "oom") == _figures(tmp_path / "clean") and _figures(tmp_path / "clean")

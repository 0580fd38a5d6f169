"""Out-of-memory back-off (xaicli.engine.backoff): simulated OOMs give the same rows and maps, counted.

The OOM is simulated by wrapping a method so that it raises ``torch.OutOfMemoryError`` whenever a call
is larger than a threshold (images per call, or the method's inner chunk option).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xaicli.engine.backoff import OOMBackoff, OutOfMemoryAtMinimum
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
    """Make ``method``'s explain raise OutOfMemoryError when its call is larger than ``limit``."""
    cls = get_method(method)
    original = cls.explain
    calls: list[int] = []

    def explain(self, x, targets):
        size = x.shape[0] if what == "images" else self.opts[what]
        calls.append(size)
        if size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated, {what}={size} > {limit})")
        return original(self, x, targets)

    monkeypatch.setattr(cls, "explain", explain)
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
    assert info["oom_backoff"]["batch_size_in_use"] == 2
    assert calls == [8, 4, 2, 2, 2, 2]
    assert "out of memory on 8 images" in res.output and "retrying with 4" in res.output


def test_inner_chunks_back_off_at_one_image(cli, tmp_path, write_config, tiny_config, eight_images,
                                            monkeypatch):
    tiny_config["run"]["batch_size"] = 4
    tiny_config["methods"] = [{"name": "integrated_gradients",
                               "options": {"steps": 8, "internal_batch_size": 16}}]
    ok, clean = _run(cli, write_config, tmp_path, tiny_config, eight_images, "clean")
    assert ok.exit_code == 0, ok
    _fail_above(monkeypatch, "integrated_gradients", 4, what="internal_batch_size")
    res, out = _run(cli, write_config, tmp_path, tiny_config, eight_images, "oom")
    assert res.exit_code == 0, res
    _same_outputs(clean, out)
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["oom_retries"] == 4  # 4 -> 2 -> 1 images, then chunk 16 -> 8 -> 4
    assert info["oom_backoff"]["inner_chunks_in_use"] == {"integrated_gradients.internal_batch_size": 4}
    assert info["config"]["methods"][0]["options"]["internal_batch_size"] == 16  # as configured


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


def test_backoff_merges_pieces_in_order_and_reraises_other_errors():
    def explain(x):
        if x.shape[0] > 3:
            raise RuntimeError("CUDA error: out of memory")
        maps = {("m", None): x[:, :1] * 2}
        return x[:, 0, 0, :1].long(), x[:, 0, 0, :1], maps, {}

    notes: list[str] = []
    backoff = OOMBackoff(explain, 8, note=notes.append)
    x = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 2, 1, 1).contiguous()
    targets, probs, maps, _ = backoff(x)
    assert targets.flatten().tolist() == list(range(10))
    assert torch.equal(maps[("m", None)], x[:, :1] * 2)
    assert backoff.retries == 2 and backoff.limit == 2 and len(notes) == 2

    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        OOMBackoff(broken, 4)(x)
    with pytest.raises(OutOfMemoryAtMinimum):
        OOMBackoff(lambda x: explain(x.expand(4, -1, -1, -1)), 4)(x[:1])

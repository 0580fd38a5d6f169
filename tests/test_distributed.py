"""Multi-process runs (xaicli.engine.distributed): torchrun with 2 CPU processes and the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from xaicli.runs.distributed import DistEnv, distributed_env, merge_outputs, shard

N_IMAGES = 8


def _rows(outdir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (outdir / "manifest.jsonl").read_text().splitlines() if ln.strip()]


def _key(row: dict) -> tuple:
    return row["image"], row["method"], row["layer"], row["slot"]


def _torchrun(cwd: Path, *args: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "xaicli", "explain", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def eight_images(tmp_path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        path = tmp_path / "images" / ("cat" if i % 2 else "dog") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(path)
    return tmp_path / "images"


def test_torchrun_two_ranks_merge_and_resume(tmp_path, write_config, tiny_config, eight_images):
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    proc = _torchrun(tmp_path, eight_images, "-c", cfg, "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("done: ") == 1  # only rank 0 reports
    rows = _rows(out)
    assert len(rows) == N_IMAGES * 2 and all(r["status"] == "ok" for r in rows)  # top-2
    assert max(Counter(map(_key, rows)).values()) == 1
    assert len({r["image"] for r in rows}) == N_IMAGES
    assert all((out / r["overlay"]).is_file() and (out / r["map"]).is_file() for r in rows)
    assert not list(out.glob("*rank*"))  # shards merged and removed
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["world_size"] == 2
    assert info["summary"]["images_explained"] == N_IMAGES and info["summary"]["rows_written"] == N_IMAGES * 2
    assert [r["summary"]["images_explained"] for r in info["ranks"]] == [N_IMAGES // 2] * 2

    proc = _torchrun(tmp_path, eight_images, "-c", cfg, "-o", out)  # a rerun skips everything
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "run.json").read_text())["summary"]
    assert summary["images_skipped"] == N_IMAGES and summary["rows_written"] == 0
    assert sorted(map(_key, _rows(out))) == sorted(map(_key, rows))
    assert not list(out.glob("*rank*"))


def test_interrupted_run_resumes_from_merged_manifest_and_leftover_shards(tmp_path, write_config, tiny_config,
                                                                          eight_images):
    """What each rank does on a rerun (in one process here): rows in manifest.jsonl or any shard are done."""
    from xaicli.config import load_config
    from xaicli.engine import Explainer
    from xaicli.engine.discover import discover_images
    from xaicli.runs.explain import explain, explain_shard

    cfg = load_config(write_config(tmp_path, tiny_config))
    out = tmp_path / "out"
    explain(cfg, [str(eight_images)], out)
    rows = _rows(out)
    images = sorted({r["image"] for r in rows})
    missing, in_shard = images[:2], images[2]  # killed before the merge: one image only in a shard
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows
                                                if r["image"] not in (*missing, in_shard)))
    (out / "manifest.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows
                                                      if r["image"] == in_shard))
    items = discover_images([str(eight_images)])
    for rank in range(2):
        done = [out / "manifest.jsonl", *[p for p in out.glob("manifest.rank*.jsonl")
                                          if p.name != f"manifest.rank{rank}.jsonl"]]
        s = explain_shard(cfg, Explainer(cfg), shard(items, rank, 2), [str(eight_images)], out,
                          done_manifests=done, manifest_name=f"manifest.rank{rank}.jsonl",
                          run_json_name=f"run.rank{rank}.json")
        assert s.images_explained == 1 and s.images_skipped == 3
    merged = merge_outputs(out, 2)
    assert merged.images_explained == 2 and merged.images_skipped == N_IMAGES - 2
    assert sorted(map(_key, _rows(out))) == sorted(map(_key, rows))  # every explanation exactly once
    assert not list(out.glob("*rank*"))


def test_distributed_env_and_shards():
    assert distributed_env({}) is None
    assert distributed_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert distributed_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == DistEnv(2, 4, 0)
    items = list(range(10))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(parts, [])) == items


def test_merge_keeps_one_row_per_explanation_and_sums_the_summaries(tmp_path):
    def row(image, slot, status="ok"):
        return {"image": image, "status": status, "method": "gradcam", "layer": "l", "slot": slot}

    (tmp_path / "manifest.jsonl").write_text(json.dumps(row("a", "top1")) + "\n")
    (tmp_path / "manifest.rank0.jsonl").write_text(json.dumps(row("b", "top1")) + "\n")
    (tmp_path / "manifest.rank1.jsonl").write_text(json.dumps(row("a", "top1")) + "\n"
                                                   + json.dumps(row("c", "top1")) + "\n{torn")
    for rank, failures in ((0, []), (1, [{"image": "d", "error": "truncated"}])):
        summary = {"device": "cpu", "images_total": 2, "images_explained": 1, "images_skipped": 1,
                   "rows_written": 1, "oom_retries": rank, "failures": failures, "seconds": 1.0 + rank,
                   "timings": {"explain": 0.5}}
        (tmp_path / f"run.rank{rank}.json").write_text(json.dumps({"status": "complete", "summary": summary}))
    merged = merge_outputs(tmp_path, 2)
    assert [r["image"] for r in _rows(tmp_path)] == ["a", "b", "c"]
    assert (merged.images_total, merged.images_explained, merged.oom_retries) == (4, 2, 1)
    assert merged.seconds == 2.0
    assert merged.failures == [("d", "truncated")] and merged.exit_code == 1
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["world_size"] == 2
    assert info["summary"]["timings"] == {"rank0.explain": 0.5, "rank1.explain": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl", "run.json"]


@pytest.mark.slow
def test_seeded_perturbation_maps_are_identical_on_one_and_two_ranks(tmp_path, write_config, tiny_config,
                                                                     eight_images):
    """RISE masks and LIME / Kernel SHAP coalitions come from the seed alone, and SLIC from each image:
    every map of a 2-rank run equals the single-process map of the same image, with other batch-mates
    and one thread per rank. Equal up to the float rounding of forward passes on differently composed
    batches, which a regression can amplify (most maps are bitwise equal; the largest difference seen
    was 1.2e-5 on a [-1, 1] map)."""
    tiny_config["methods"] = [{"name": "rise", "options": {"masks": 40, "seed": 3}},
                              {"name": "lime", "options": {"samples": 40, "seed": 4}},
                              {"name": "kernel_shap", "options": {"samples": 40, "seed": 5}}]
    tiny_config["run"]["batch_size"] = 3  # different batch compositions on 1 and 2 ranks
    cfg = write_config(tmp_path, tiny_config)
    proc = _torchrun(tmp_path, eight_images, "-c", cfg, "-o", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from xaicli.config import load_config
    from xaicli.runs.explain import explain

    assert explain(load_config(cfg), [str(eight_images)], tmp_path / "one").exit_code == 0
    one, two = {_key(r): r for r in _rows(tmp_path / "one")}, {_key(r): r for r in _rows(tmp_path / "two")}
    assert set(one) == set(two) and len(one) == N_IMAGES * 3 * 2
    for key, row in one.items():
        assert row["target"] == two[key]["target"]
        np.testing.assert_allclose(np.load(tmp_path / "two" / two[key]["map"]),
                                   np.load(tmp_path / "one" / row["map"]), rtol=0, atol=1e-4)

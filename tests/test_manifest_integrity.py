"""The manifest is strict JSON and always whole; interrupts, kills, full disks and concurrent runs leave a
consistent OUTDIR (issue 10).

Signals, kills and resource limits act on real ``python -m xaicli`` processes; they poll for the state
they need (never a fixed sleep) so they hold on a loaded machine.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import resource
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    manifest_lines,
    many_images,
    strict_json,
    wait_for,
    xaicli_command,
    xaicli_env,
)
from PIL import Image

from xaicli.errors import ExitCode


def rows_of(outdir: Path) -> list[dict]:
    return [strict_json(ln) for ln in manifest_lines(outdir) if ln.strip()]


def ok_keys(rows: list[dict]) -> Counter:
    return Counter((r["rel"], r["method"], r["layer"], r["slot"]) for r in rows if r["status"] == "ok")


# --- strict JSON ------------------------------------------------------------------------------------------

NAN_MODEL = '''
import importlib.util

import torch

_spec = importlib.util.spec_from_file_location("_xaicli_nan_tiny", TINY_CNN_FILE)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


class NaNOnWhite(torch.nn.Module):
    """The tiny CNN, but NaN logits for an all-white image."""

    def __init__(self):
        super().__init__()
        self.net = _tiny.build()

    def forward(self, x):
        out = self.net(x)
        white = (x.flatten(1) > 1.99).all(dim=1)
        return torch.where(white[:, None], torch.full_like(out, float("nan")), out)


def build():
    return NaNOnWhite().eval()
'''


def test_nan_logits_give_error_rows_with_null_scores_not_bare_nan(cli, tmp_path, write_config, tiny_config,
                                                                  tiny_cnn_factory_file, image_tree):
    source = NAN_MODEL.replace("TINY_CNN_FILE", repr(str(tiny_cnn_factory_file)))
    (tmp_path / "nan_model.py").write_text(source)
    tiny_config["model"]["factory"] = "nan_model.py:build"
    tiny_config["methods"] = [{"name": "gradcam", "layers": ["net.features.1.conv"]},
                              {"name": "integrated_gradients", "options": {"steps": 4}}]
    white = image_tree / "dog" / "white.png"
    Image.new("RGB", (20, 16), (255, 255, 255)).save(white)
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == ExitCode.INPUTS_UNREADABLE, res
    rows = rows_of(out)  # strict: raises on a bare NaN / Infinity token
    bad = [r for r in rows if r["image"] == str(white)]
    assert [r["status"] for r in bad] == ["error"] and bad[0]["score"] is None
    assert "not finite" in bad[0]["error"]
    assert any(ln.startswith(f"failed: {white}: ") and "not finite" in ln for ln in res.stderr.splitlines())
    assert len([r for r in rows if r["status"] == "ok"]) == 3 * 2 * 2
    page = (out / "index.html").read_text()
    assert not re.search(r"[:,\[]\s*-?(NaN|Infinity)\b", page)  # the report's embedded data is strict too


def test_row_serialisation_refuses_non_finite_numbers():
    from xaicli.outputs.manifest import ManifestRow

    row = ManifestRow(image="a.png", rel="a.png", method="gradcam", slot="top1", target=0, score=0.5,
                      extras={"ig_delta": float("inf")})
    data = strict_json(row.to_json())
    assert data["ig_delta"] is None and "non-finite" in data["warning"]


# --- a torn last line is repaired; a failed append is rolled back -----------------------------------------


def test_a_torn_last_line_is_truncated_and_its_image_redone(cli, tmp_path, write_config, tiny_config,
                                                            image_tree):
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", cfg, "-o", out).exit_code == 0
    lines = manifest_lines(out)
    (out / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:30])  # killed mid-write
    res = cli("explain", image_tree, "-c", cfg, "-o", out, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["rows_written"] == 1
    rows = rows_of(out)  # every line parses
    assert len(rows) == 6 and max(ok_keys(rows).values()) == 1


def test_a_failed_append_is_rolled_back(tmp_path, monkeypatch):
    from xaicli.outputs import manifest as manifest_module
    from xaicli.outputs.manifest import ManifestRow, ManifestWriter

    path = tmp_path / "manifest.jsonl"
    rows = [ManifestRow(image=f"{i}.png", rel=f"{i}.png", method="m", slot="top1") for i in range(3)]
    with ManifestWriter(path, fresh=True) as writer:
        writer.write(rows[:1])
    size = path.stat().st_size
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up in the middle of the batch
        if len(data) > 10:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with ManifestWriter(path, fresh=False) as writer, pytest.raises(OSError, match="No space"):
        with monkeypatch.context() as patch:
            patch.setattr(manifest_module.os, "write", half_then_full)
            writer.write(rows[1:])
    assert path.stat().st_size == size and path.read_text().endswith("\n")


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


@pytest.mark.slow
def test_a_full_disk_mid_run_fails_with_one_line_and_leaves_no_torn_line(tmp_path, write_config, tiny_config):
    images = many_images(tmp_path / "images", 24)
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    proc = subprocess.run(xaicli_command("explain", images, "-c", cfg, "-o", out), env=xaicli_env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(9000))
    assert proc.returncode == ExitCode.RUN_FAILED, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr and "traceback in" in errors[0], proc.stderr
    assert "rerun the same command" in errors[0]
    assert (out / "manifest.jsonl").read_bytes().endswith(b"\n")
    partial = rows_of(out)  # no torn line
    assert 0 < len(partial) < 48
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    proc = subprocess.run(xaicli_command("explain", images, "-c", cfg, "-o", out, "--json"), env=xaicli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = rows_of(out)
    assert len(rows) == 48 and max(ok_keys(rows).values()) == 1
    assert json.loads(proc.stdout)["rows_written"] == 48 - len(partial)


# --- resumes do not pile up error rows; leftovers of killed runs are removed ------------------------------


def test_a_resume_keeps_one_error_row_per_unreadable_image(cli, tmp_path, write_config, tiny_config,
                                                            image_tree):
    (image_tree / "dog" / "broken.png").write_bytes(b"garbage")
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    for _ in range(3):
        assert cli("explain", image_tree, "-c", cfg, "-o", out).exit_code == 1
    errors = [r for r in rows_of(out) if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["rel"] == "dog/broken.png"


def test_leftover_temporary_files_are_removed(cli, tmp_path, write_config, tiny_config, image_tree):
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", cfg, "-o", out).exit_code == 0
    deep = next(out.rglob("*.npy")).parent
    planted = [deep / ".top1_cat.png.k2j3h4g5.tmp", out / ".run.json.a_b1c2d3.tmp"]
    for p in planted:
        p.write_bytes(b"half")
    mine = out / "notes.tmp"  # not the pattern of xaicli's temporary files: left alone
    mine.write_text("keep")
    assert cli("explain", image_tree, "-c", cfg, "-o", out).exit_code == 0
    assert not any(p.exists() for p in planted) and mine.exists()


def test_a_run_left_running_is_recorded_as_killed(tmp_path):
    from xaicli.outputs.run_json import previous_history

    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "history": [
        {"status": "complete"}, {"status": "running"}]}))
    assert [h["status"] for h in previous_history(tmp_path)] == ["complete", "killed"]
    (tmp_path / "run.json").write_text("{not json")
    assert previous_history(tmp_path) == []


# --- locks ------------------------------------------------------------------------------------------------


def test_a_second_run_into_a_busy_outdir_exits_2(cli, tmp_path, write_config, tiny_config, image_tree):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".xaicli.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("424242\n")
        held.flush()
        res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == ExitCode.USAGE, res
    assert res.stderr.strip() == f"error: OUTDIR {out} is in use by pid 424242 (another xaicli run); wait " \
                                 "for it to finish or use another -o"
    assert not (out / "manifest.jsonl").exists()


@pytest.mark.slow
def test_concurrent_runs_write_each_explanation_once(tmp_path, write_config, slow_config):
    images = many_images(tmp_path / "images", 40)
    hold = tmp_path / "hold"
    hold.touch()  # the first run waits in its first batch until the second one has tried
    cfg = write_config(tmp_path, slow_config(0.0, hold))
    out = tmp_path / "out"
    cmd = xaicli_command("explain", images, "-c", cfg, "-o", out)
    first = subprocess.Popen(cmd, env=xaicli_env(), stderr=subprocess.PIPE, text=True)
    lock = out / ".xaicli.lock"
    try:
        wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid),
                 what="the first run holding OUTDIR's lock", proc=first)
        second = subprocess.run(cmd, env=xaicli_env(), capture_output=True, text=True, timeout=300)
        assert first.poll() is None
    finally:
        hold.unlink()
        first.wait(timeout=300)
    assert first.returncode == 0
    assert second.returncode == ExitCode.USAGE, second.stderr
    assert f"is in use by pid {first.pid}" in second.stderr
    rows = rows_of(out)
    assert len(rows) == 80 and max(ok_keys(rows).values()) == 1


# --- interrupts -------------------------------------------------------------------------------------------


def test_ctrl_c_during_a_manifest_commit_commits_the_whole_batch_once(cli, tmp_path, write_config,
                                                                      tiny_config, monkeypatch):
    """SIGINT arriving while a batch's rows are being written: all of its rows land, once, then the run
    stops (exit 130, run.json 'interrupted')."""
    from xaicli.outputs.manifest import ManifestRow

    images = many_images(tmp_path / "images", 8)
    calls = {"n": 0}
    to_json = ManifestRow.to_json

    def interrupted_to_json(self):
        calls["n"] += 1
        if calls["n"] == 6:  # the middle of the second batch (2 images x top-2 = 4 rows a batch)
            os.kill(os.getpid(), signal.SIGINT)
        return to_json(self)

    monkeypatch.setattr(ManifestRow, "to_json", interrupted_to_json)
    out = tmp_path / "out"
    res = cli("explain", images, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 130, res
    rows = rows_of(out)
    assert len(rows) in (4, 8) and max(ok_keys(rows).values()) == 1, len(rows)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(ManifestRow, "to_json", to_json)
    res = cli("explain", images, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0 and len(rows_of(out)) == 16 and max(ok_keys(rows_of(out)).values()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_cleanly_and_the_rerun_finishes_it(tmp_path, write_config, slow_config, signum,
                                                                  code):
    images = many_images(tmp_path / "images", 40)
    cfg = write_config(tmp_path, slow_config(0.1))
    out = tmp_path / "out"
    proc = subprocess.Popen(xaicli_command("explain", images, "-c", cfg, "-o", out), env=xaicli_env(),
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(manifest_lines(out)) >= 4, what="the first rows", proc=proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted"
    rows = rows_of(out)
    assert len(rows) % 4 == 0 and 0 < len(rows) < 80 and max(ok_keys(rows).values()) == 1
    done = subprocess.run(xaicli_command("explain", images, "-c", cfg, "-o", out), env=xaicli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_of(out)
    assert len(rows) == 80 and max(ok_keys(rows).values()) == 1


@pytest.mark.slow
def test_a_killed_overwrite_rerun_does_not_leave_run_json_saying_complete(cli, tmp_path, write_config,
                                                                         slow_config):
    images = many_images(tmp_path / "images", 40)
    cfg = write_config(tmp_path, slow_config(0.1))
    out = tmp_path / "out"
    assert cli("explain", images, "-c", cfg, "-o", out, "-q").exit_code == 0
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    proc = subprocess.Popen(xaicli_command("explain", images, "-c", cfg, "-o", out, "--overwrite"),
                            env=xaicli_env(), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: 0 < len(manifest_lines(out)) < 80, what="the overwrite's first rows", proc=proc)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    res = cli("explain", images, "-c", cfg, "-o", out, "--json")
    assert res.exit_code == 0, res
    run = json.loads((out / "run.json").read_text())
    assert [h["status"] for h in run["history"]] == ["killed", "complete"]
    assert len(rows_of(out)) == 80

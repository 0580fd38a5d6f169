"""Where a run's time goes (issue 15): the stage clock, the thread budget, and run.json's stage table."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from xaicli.engine.threads import codec_thread_initializer, restore_intra_op, thread_budget
from xaicli.timing import LOOP, STAGES, STARTUP, NullClock, StageClock


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks")
def test_foreground_stages_leave_out_codec_threads():
    """A codec thread burning CPU while the main thread sleeps: the CPU is the codec stage's, not the
    foreground stage's."""
    clock = StageClock()
    started = threading.Event()

    def codec() -> None:
        started.set()
        with clock.worker("decode"):
            _burn(0.3)

    with ThreadPoolExecutor(1, initializer=clock.register_codec_thread) as pool:
        with clock.foreground("engine"):
            future = pool.submit(codec)
            started.wait()
            future.result()
    engine, decode = clock.stage("engine"), clock.stage("decode")
    assert decode.cpu == pytest.approx(0.3, abs=0.05) and decode.calls == 1
    assert engine.cpu < 0.1 and engine.wall >= 0.25  # it waited, it did not compute


def test_foreground_stages_count_the_main_threads_cpu():
    clock = StageClock()
    with clock.foreground("engine"):
        _burn(0.2)
    with clock.foreground("engine"):
        pass
    engine = clock.stage("engine")
    assert engine.cpu >= 0.19 and engine.calls == 2
    assert list(clock.to_dict()) == ["engine"]


def test_stage_table_is_in_pipeline_order_and_null_clock_records_nothing():
    clock = StageClock()
    for name in ("encode", "decode", "model", "custom"):
        clock.add(name, 1.0, 0.5)
    assert list(clock.to_dict()) == ["model", "decode", "encode", "custom"]
    assert set(STARTUP) | set(LOOP) == set(STAGES)
    null = NullClock()
    with null.foreground("engine"), null.worker("decode"):
        null.add("x", 1, 1)
    assert null.to_dict() == {}


def test_since_process_start_holds_the_process_so_far():
    clock = StageClock.since_process_start()
    start = clock.stage("start")
    assert start.cpu == pytest.approx(time.process_time(), abs=0.5) and start.wall > 0


@pytest.mark.parametrize("device, cores, decode, write", [
    ("cpu", 1, 1, 1), ("cpu", 2, 1, 1), ("cpu", 4, 1, 1), ("cpu", 8, 2, 2), ("cpu", 16, 4, 4),
    ("cpu", 64, 8, 8), ("cuda", 2, 2, 1), ("cuda", 16, 8, 8), ("cuda", 6, 6, 3)])
def test_thread_budget_rule(device, cores, decode, write):
    budget = thread_budget(device, cores=cores, intra_op=cores)
    assert (budget.decode, budget.write, budget.intra_op, budget.cores) == (decode, write, cores, cores)
    assert thread_budget(device, decode=3, cores=cores).decode == 3  # run.workers wins
    assert thread_budget(device, decode=0, cores=cores).decode == decode  # 0: the rule


def test_codec_threads_run_torch_single_threaded_and_the_model_thread_keeps_its_own():
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(1, initializer=codec_thread_initializer()) as pool:
            assert pool.submit(torch.get_num_threads).result() == 1
            assert torch.get_num_threads() == threads  # this (the model's) thread is unchanged
        restore_intra_op(threads)
        seen = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert seen == [threads]  # threads started later get the default back
    finally:
        torch.set_num_threads(threads)


def test_run_json_records_every_stage(cli, tmp_path, write_config, tiny_config, image_tree):
    cfg = write_config(tmp_path, tiny_config)
    res = cli("explain", image_tree, "-c", cfg, "-o", tmp_path / "out", "--quiet", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "run.json").read_text())["summary"]
    assert summary == json.loads(res.stdout) | {"stages": summary["stages"]}
    stages = summary["stages"]
    assert set(STARTUP) <= set(stages) and {"decode", "resize", "engine", "colour", "encode", "write",
                                             "manifest"} <= set(stages)
    assert stages["decode"]["calls"] == stages["resize"]["calls"] == 3  # one per image
    assert stages["encode"]["calls"] == stages["write"]["calls"] == 2 * 3 * 2  # overlay + map, 3 x top-2
    assert stages["engine"]["calls"] == 2  # batches of 2
    cpu = sum(v["cpu_s"] for v in stages.values())
    assert 0 < cpu <= summary["cpu_seconds"] * 1.05 + 0.05  # the stages split the process's CPU time
    engine_info = json.loads((tmp_path / "out" / "run.json").read_text())["engine"]
    assert set(engine_info["threads"]) == {"cores", "intra_op", "decode", "write"}

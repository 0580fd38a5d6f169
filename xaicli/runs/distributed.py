"""Multi-process runs under ``torchrun``: shard the images across ranks, explain, merge the results.

::

    torchrun --nproc-per-node 4 -m xaicli explain IMAGES -c cfg.yaml -o OUT            # one machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m xaicli explain IMAGES -c cfg.yaml -o OUT                                       # two machines

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` ``xaicli explain``
runs :func:`explain_distributed`:

1. the default process group is initialised: ``nccl`` when the run uses CUDA, with rank ``r`` on
   ``cuda:LOCAL_RANK`` (``run.device`` ``auto``/``cuda``), else ``gloo`` on the CPU;
2. every rank discovers the same sorted image list and takes ``items[rank::world_size]``; rank 0 checks
   OUTDIR, takes its lock (a second launch into the same OUTDIR is refused on every rank, exit 2) and
   removes temporary files a killed run left;
3. each rank writes its own overlays and maps into OUTDIR (paths never collide: they are per image)
   and its rows into ``manifest.rank{R}.jsonl`` and ``run.rank{R}.json``. Rows already in
   ``manifest.jsonl`` (an earlier run, single- or multi-process) or in a shard left by an interrupted
   run count as done, so a rerun resumes, also with a different number of processes;
4. all ranks meet in one all-reduce, which also agrees on the exit code (the maximum over ranks);
5. rank 0 merges: ``manifest.jsonl`` becomes the earlier rows plus every shard's rows (one row per
   explanation, the latest wins; an earlier error row of an image the shards hold again is dropped),
   written atomically; ``run.json`` holds rank 0's run information (with the ``history`` of the runs
   that wrote the folder), the summed summary and each rank's own summary and timings (``ranks``). The
   shard files are then deleted: everything in them is in the merged files. A run killed before the
   merge leaves its shards; the next run reads and merges them. Every rank checks the rows already
   there against its run's fingerprints, as a single process does (a different configuration: exit 2).

Only rank 0 reports progress and prints the summary. OUTDIR must be on a file system every rank sees
(one machine, or a shared mount across nodes).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xaicli.config import Config
from xaicli.errors import ExitCode
from xaicli.outputs.layout import MANIFEST, RUN_JSON

SHARD_MANIFEST = "manifest.rank{rank}.jsonl"
SHARD_RUN_JSON = "run.rank{rank}.json"
_SHARD = re.compile(r"^(manifest\.rank\d+\.jsonl|run\.rank\d+\.json)$")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int


def distributed_env(environ: dict[str, str] | None = None) -> DistEnv | None:
    """The torchrun environment when this process is one of several ranks, else None."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return DistEnv(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])))
    except (KeyError, ValueError):
        return None


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Rank ``rank``'s share of ``items``: every ``world_size``-th item starting at ``rank``."""
    return list(items[rank::world_size])


def _rank_device(cfg: Config, env: DistEnv) -> str:
    import torch

    wanted = cfg.run.device
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        return f"cuda:{env.local_rank}"
    return wanted


def explain_distributed(cfg: Config, inputs: Sequence[str], outdir: Path, env: DistEnv, *,
                        overwrite: bool = False, progress=None):
    """Run this rank's share and, on rank 0, merge. Returns (merged summary on rank 0 else None, exit code).

    The exit code is the same on every rank: the largest of the ranks' own codes (0 all explained,
    1 some images failed, 2 usage/config error on some rank, 4 a rank failed).
    """
    import torch
    import torch.distributed as dist

    from xaicli.engine.discover import discover_images
    from xaicli.errors import UsageError
    from xaicli.outputs.lock import OutdirLock
    from xaicli.outputs.outdir import remove_stale_temporaries
    from xaicli.runs.explain import command_explainer, explain_shard
    from xaicli.runs.preflight import prepare_inputs

    cfg.run.device = _rank_device(cfg, env)
    cuda = cfg.run.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(cfg.run.device))
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(cfg.run.device if cuda else "cpu")

    def agree(value: int) -> int:
        """The largest ``value`` over all ranks; also the point where every rank waits for the others."""
        flag = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    lock = OutdirLock(outdir)
    try:
        error: BaseException | None = None
        try:  # 1. the image list; rank 0 locks OUTDIR and clears it when overwritten, before anyone writes
            if env.rank == 0:
                items = prepare_inputs(inputs, outdir, progress.note if progress else _ignore)
                outdir.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                remove_stale_temporaries(outdir)
                if overwrite:
                    _remove_old_results(outdir)
            else:
                items = discover_images(inputs, exclude=[outdir] if outdir.is_dir() else [])
        except UsageError as err:
            error = err
        if agree(int(ExitCode.USAGE) if error else 0):
            raise error or UsageError("another rank could not start (see its error above)")

        code = ExitCode.OK  # 2. this rank's share
        try:
            t0 = time.perf_counter()
            mine = shard(items, env.rank, env.world_size)
            if progress is not None:
                progress.note(f"rank {env.rank} of {env.world_size}: {len(mine)} of {len(items)} image(s)")
            done = [] if overwrite else [outdir / MANIFEST, *_shard_manifests(outdir, exclude=env.rank)]
            explainer = command_explainer(cfg)
            summary = explain_shard(cfg, explainer, mine, inputs, outdir, overwrite=overwrite,
                                    progress=progress, manifest_name=SHARD_MANIFEST.format(rank=env.rank),
                                    run_json_name=SHARD_RUN_JSON.format(rank=env.rank), done_manifests=done,
                                    announce_to=[RUN_JSON] if env.rank == 0 else [], sweep_temporaries=False,
                                    t0=t0)
            code = summary.exit_code
        except UsageError as err:
            code, error = ExitCode.USAGE, err
        except Exception as err:  # re-raised below, after the other ranks have been told
            code, error = ExitCode.RUN_FAILED, err
        agreed = agree(int(code))  # every rank has finished writing past this point

        merged = None  # 3. rank 0 merges while the others wait, so that all leave together
        if env.rank == 0 and error is None:
            try:
                merged = merge_outputs(outdir, env.world_size, overwrite, rels=[str(it.rel) for it in items])
            except Exception as err:  # re-raised below, after the other ranks have been told
                error = err
        merge_failed = agree(int(ExitCode.RUN_FAILED) if env.rank == 0 and merged is None else 0)
        if error is not None:
            raise error
        if merged is not None:
            _finish_on_rank0(cfg, outdir, progress)
        return merged, ExitCode(max(agreed, merge_failed))
    finally:
        lock.release()
        dist.destroy_process_group()


def _ignore(_text: str) -> None:
    pass


def _finish_on_rank0(cfg: Config, outdir: Path, progress) -> None:
    """What a one-process run does after its loop, as far as it can be done without the explanations."""
    if cfg.figures.topk or cfg.figures.compare:
        print("figures are not built by a multi-process run: run the same `xaicli explain` once more "
              "in one process, it resumes over every explanation and builds them", file=sys.stderr)
    if cfg.figures.html:
        from xaicli.runs.report import write_report

        path = write_report(outdir)
        if progress is not None:
            progress.note(f"report: {path}")


def _shard_manifests(outdir: Path, exclude: int | None = None) -> list[Path]:
    found = sorted(outdir.glob("manifest.rank*.jsonl"), key=lambda p: _rank_of(p.name))
    return [p for p in found if _rank_of(p.name) != exclude]


def _rank_of(name: str) -> int:
    digits = re.search(r"rank(\d+)", name)
    return int(digits.group(1)) if digits else -1


def _remove_old_results(outdir: Path) -> None:
    (outdir / MANIFEST).unlink(missing_ok=True)
    for p in outdir.iterdir():
        if _SHARD.match(p.name):
            p.unlink(missing_ok=True)


def merge_outputs(outdir: Path, world_size: int, overwrite: bool = False, rels: Sequence[str] | None = None):
    """Rank 0, after every rank finished: merge the shard manifests and run files; delete the shards.
    ``rels``: the run's images (their outcomes give the merged summary's accuracy; None: every image
    of the merged manifest)."""
    from xaicli.outputs import atomic
    from xaicli.outputs.layout import output_path
    from xaicli.outputs.manifest import read_rows
    from xaicli.outputs.run_json import write_run_json
    from xaicli.runs.outcomes import image_outcomes
    from xaicli.runs.summary import RunSummary

    shard_rows = [row for path in _shard_manifests(outdir) for row in read_rows(path)]
    again = {row.key[0] for row in shard_rows}  # images this run handled: their old error rows go
    earlier = [] if overwrite else [r for r in read_rows(outdir / MANIFEST) if r.ok or r.key[0] not in again]
    rows = {}
    for row in [*earlier, *shard_rows]:
        rows[row.key] = row  # the latest row of an explanation wins; first-seen order is kept
    text = "".join(r.to_json() + "\n" for r in rows.values())
    atomic.write_text(output_path(outdir, MANIFEST), text)

    infos = []
    for rank in range(world_size):
        path = outdir / SHARD_RUN_JSON.format(rank=rank)
        infos.append(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None)
    parts = [i["summary"] for i in infos if i is not None]
    summary = RunSummary(outdir=outdir, device=", ".join(sorted({p["device"] for p in parts})) or "?")
    for key in ("images_total", "images_explained", "images_skipped", "rows_written", "oom_retries"):
        setattr(summary, key, sum(p.get(key) or 0 for p in parts))
    summary.failures = [(f["image"], f["error"]) for p in parts for f in p["failures"]]
    summary.seconds = max((p["seconds"] for p in parts), default=0.0)
    summary.outcomes = image_outcomes(rows.values(), rels)
    summary.unlabelled = [rel for p in parts for rel in p.get("unlabelled_images") or []]
    summary.timings = {f"rank{r}.{k}": v for r, i in enumerate(infos) if i
                       for k, v in i["summary"]["timings"].items()}
    statuses = [i.get("status", "?") if i else "missing" for i in infos]
    run = dict(infos[0] or {})
    run.pop("oom_backoff", None)
    status = "complete" if all(s == "complete" for s in statuses) else "incomplete"
    if run.get("history"):
        run["history"][-1].update(status=status, summary={k: summary.to_dict()[k] for k in (
            "images_total", "images_explained", "images_skipped", "images_failed", "rows_written")})
    run.update(
        status=status,
        world_size=world_size, summary=summary.to_dict(), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        ranks=[{"rank": r, "status": s, "device": i and i.get("device"), "summary": i and i.get("summary"),
                "oom_backoff": i and i.get("oom_backoff")} for r, (s, i) in enumerate(zip(statuses, infos,
                                                                                           strict=True))],
    )
    write_run_json(outdir, run)
    for path in outdir.iterdir():
        if _SHARD.match(path.name):
            path.unlink(missing_ok=True)
    return summary

"""The benchmark table, as aligned text (terminal), Markdown (BENCHMARKS.md) or JSON."""

from __future__ import annotations

import dataclasses
import json

from benchmarks.suite import BenchReport, Row

COLUMNS = ("method", "model", "input", "batch", "images", "xaicli img/s", "reference", "ref img/s", "ratio",
           "target", "met", "map corr.")


def _num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if v < 100 else f"{v:.0f}"


def _cells(row: Row) -> list[str]:
    met = "-" if row.met is None else ("yes" if row.met else "NO")
    corr = "-" if row.agreement is None else f"{row.agreement:.3f}"
    return [row.method, row.model, f"{row.size}x{row.size}", str(row.batch), str(row.images),
            _num(row.xaicli), row.reference, _num(row.reference_rate),
            "-" if row.ratio is None else f"{row.ratio:.2f}", row.target or "-", met, corr]


def _aligned(columns: tuple[str, ...], cells: list[list[str]]) -> list[str]:
    table = [list(columns)] + cells
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _markdown(columns: tuple[str, ...], cells: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(c) + " |" for c in cells])


def as_text(report: BenchReport) -> str:
    lines = _aligned(COLUMNS, [_cells(r) for r in report.rows])
    for row in report.rows:
        if row.stages:
            lines += ["", _stage_title(row)] + _aligned(STAGE_COLUMNS, _stage_cells(row))
    lines += [""] + _footer(report)
    return "\n".join(lines)


def as_markdown(report: BenchReport) -> str:
    lines = _markdown(COLUMNS, [_cells(r) for r in report.rows])
    for row in report.rows:
        if row.stages:
            lines += ["", f"**{_stage_title(row)}**", ""] + _markdown(STAGE_COLUMNS, _stage_cells(row))
    lines += [""] + [f"- {t}" for t in _footer(report)]
    return "\n".join(lines)


STAGE_COLUMNS = ("stage", "wall s", "cpu s", "cpu ms/img", "cpu share", "what")


def _stage_title(row: Row) -> str:
    return (f"where the time goes: xaicli explain, {row.images} images (the median run; stages overlap in "
            "wall time, their CPU times add up to the process's)")


def _stage_cells(row: Row) -> list[list[str]]:
    from xaicli.timing import STAGES

    total = sum(v["cpu_s"] for v in row.stages.values()) or 1.0
    cells = [[name, f"{v['wall_s']:.2f}", f"{v['cpu_s']:.2f}", f"{1000 * v['cpu_s'] / row.images:.1f}",
              f"{100 * v['cpu_s'] / total:.0f}%", STAGES.get(name, "")] for name, v in row.stages.items()]
    return cells + [["total", "-", f"{total:.2f}", f"{1000 * total / row.images:.1f}", "100%", ""]]


def _footer(report: BenchReport) -> list[str]:
    env = report.environment
    out = [f"machine: {env.get('cpu')}, {env.get('cores')} cores, {env.get('ram_gib')} GiB RAM, "
           f"torch threads {env.get('torch_threads')}, device {env.get('device')}"
           + (f" ({env['gpu']})" if env.get("gpu") else ""),
           f"versions: python {env.get('python')}, torch {env.get('torch')}, "
           f"torchvision {env.get('torchvision')}, "
           f"grad-cam {env.get('grad-cam')}, captum {env.get('captum')}",
           f"load average (1, 5, 15 min) at start {env.get('load_average_start')}, "
           f"at end {env.get('load_average_end')}"]
    out += [f"{r.method}: {r.note}" for r in report.rows if r.note]
    out += report.notes
    return out


def as_json(report: BenchReport) -> str:
    opts = dataclasses.asdict(report.options)
    return json.dumps({"options": opts, "environment": report.environment,
                       "rows": [dataclasses.asdict(r) for r in report.rows], "notes": report.notes},
                      indent=2, default=str)

"""The figures of ``xaicli evaluate``: what they need is gathered while batches are scored, then they
are drawn (:mod:`xaicli.render.charts`, :mod:`xaicli.render.figures`) and written under
``figures/evaluate/``, listed in ``figures/evaluate/evaluate.json`` (read by the HTML report).

* ``curves.png``: the mean deletion and insertion curves of each method and layer (one panel per
  metric), the area under each mean curve in the legend;
* ``mprt_similarity.png``: the cascading-randomisation test as in Adebayo et al. 2018 (fig. 4): mean
  Spearman rank correlation (|maps|) and SSIM between the original and the randomised model's maps,
  per stage, one line per method and layer;
* ``mprt/<image>.png``: the randomisation grid of a few images (fig. 2 of the paper): rows = methods and
  layers, columns = the original model, then the stages (at most :data:`MAX_STAGE_COLUMNS`, evenly spaced,
  the last always included);
* ``summary.png``: the table of means (± std) per method, layer and metric; red: a failed gate.

Memory: mean curves are running sums; the grid keeps ``evaluate.figure_images`` images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from xaicli.config import Config
from xaicli.metrics import MetricResult
from xaicli.outputs import atomic
from xaicli.render.charts import Panel, Series, TableCell, line_chart, table_image
from xaicli.render.figures import FigureStyle, GridCell, GridRow, render_grid

FIGURE_DIR = "figures/evaluate"
FIGURE_INDEX = f"{FIGURE_DIR}/evaluate.json"
CURVE_METRICS = ("deletion", "insertion")
MAX_STAGE_COLUMNS = 8
MapKey = tuple[str, str | None]


def key_label(key: MapKey) -> str:
    method, layer = key
    return f"{method} @ {layer}" if layer else method


@dataclass
class GridSample:
    image: np.ndarray  # (C, H, W) in [0, 1]
    target_name: str
    original: dict[MapKey, np.ndarray] = field(default_factory=dict)  # (H, W), first target
    stages: dict[MapKey, np.ndarray] = field(default_factory=dict)  # (S, H, W)


@dataclass
class FigureData:
    """Collected while evaluating: running sums of curves, and the randomisation grid's samples."""

    keys: list[MapKey]
    classes: list[str]
    signed: dict[str, bool]
    keep_ids: set[int] = field(default_factory=set)
    names: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (image path, relative stem)
    curve_sums: dict[tuple[str, MapKey], Tensor] = field(default_factory=dict)
    curve_counts: dict[tuple[str, MapKey], int] = field(default_factory=dict)
    stage_names: dict[MapKey, list[str]] = field(default_factory=dict)
    samples: dict[int, GridSample] = field(default_factory=dict)

    def add(self, key: MapKey, metric: str, result: MetricResult, ids: Tensor, images: Tensor, maps: Tensor,
            targets: Tensor) -> None:
        if metric in CURVE_METRICS and "curve" in result.fields:
            curves = result.fields["curve"].flatten(0, 1).double()  # (B*K, n + 1)
            ck = (metric, key)
            self.curve_sums[ck] = self.curve_sums.get(ck, 0) + curves.sum(0)
            self.curve_counts[ck] = self.curve_counts.get(ck, 0) + curves.shape[0]
        if metric == "mprt" and result.stages is not None:
            self.stage_names[key] = result.stages
            for b, image_id in enumerate(ids.tolist()):
                if image_id not in result.kept:
                    continue
                sample = self.samples.get(image_id)
                if sample is None:
                    sample = self.samples[image_id] = GridSample(
                        images[b].float().cpu().numpy(), self.classes[int(targets[b, 0])])
                sample.original[key] = maps[b, 0].float().cpu().numpy()
                sample.stages[key] = result.kept[image_id][0].float().numpy()  # first target: (S, H, W)

    def mean_curve(self, metric: str, key: MapKey) -> list[float] | None:
        ck = (metric, key)
        if ck not in self.curve_sums:
            return None
        return (self.curve_sums[ck] / self.curve_counts[ck]).tolist()


def write_evaluation_figures(cfg: Config, data: FigureData, stats: Sequence[dict[str, Any]],
                             gates: Sequence[Any], outdir: Path) -> list[str]:
    """Draw and write every figure the collected data allows; returns their paths (relative to OUTDIR)."""
    style = FigureStyle.from_config(cfg)
    font = max(12, style.font_size)
    records: list[dict[str, Any]] = []

    def save(kind: str, rel: str, fig: Any, keys: Sequence[MapKey], images: Sequence[str] = ()) -> None:
        atomic.write_bytes(outdir / rel, fig.png_bytes())
        records.append({"kind": kind, "path": rel, "title": fig.title, "class": None,
                        "methods": list(dict.fromkeys(m for m, _ in keys)),
                        "layers": list(dict.fromkeys(layer or "input" for _, layer in keys)),
                        "images": list(images)})

    panels = []
    for metric in CURVE_METRICS:
        series = []
        for key in data.keys:
            curve = data.mean_curve(metric, key)
            if curve is not None:
                auc = (sum(curve) - curve[0] / 2 - curve[-1] / 2) / max(len(curve) - 1, 1)
                series.append(Series(f"{key_label(key)} (AUC {auc:.3f})", curve))
        if series:
            better = "lower" if metric == "deletion" else "higher"
            verb = "removed" if metric == "deletion" else "restored"
            panels.append(Panel(f"{metric} ({better} AUC is better)", series,
                                xlabel=f"fraction of pixels {verb}", ylabel="p(target)", y_range=(0.0, 1.0)))
    if panels:
        fig = line_chart(panels, title="Deletion and insertion: mean curves", font_size=font,
                         subtitle="mean over every evaluated image and target of the target's softmax "
                                  "probability as the map's top pixels are removed from the input / restored "
                                  "into its blurred copy (Petsiuk et al. 2018); AUC of the mean curve")
        save("evaluate-curves", f"{FIGURE_DIR}/curves.png", fig, data.keys)

    mprt = [r for r in stats if r["metric"] == "mprt" and r.get("stages")]
    if mprt:
        records_by_key = {(r["method"], r["layer"]): r for r in mprt}
        n_stages = max(len(r["stages"]) for r in mprt)
        names = next(iter(records_by_key.values()))["stages"]
        ticks = [(0.0, "orig.")] + [(float(i + 1), str(i + 1)) for i in spread(len(names), 10)]
        series = []
        for k, r in records_by_key.items():
            ys = [1.0] + [s["mean"] if s["mean"] is not None else float("nan") for s in r["stages"]]
            series.append(Series(key_label(k), ys, list(range(len(ys)))))
        panels = [Panel("Spearman rank correlation of |maps|", series,
                        xlabel="randomisation stage (cascading, from the output layer)",
                        x_range=(0.0, float(n_stages)), y_range=(-1.0, 1.0), x_ticks=ticks)]
        stage_list = ", ".join(f"{i + 1} {s['stage']}" for i, s in enumerate(names[:12]))
        more = f", ... {len(names)} {names[-1]['stage']}" if len(names) > 12 else ""
        fig = line_chart(panels, title="Model parameter randomisation (cascading)", font_size=font,
                         subtitle="similarity of each map to the map of a model randomised from the output "
                                  "layer down (Adebayo et al. 2018); lower = the map depends on the weights. "
                                  f"Stages: {stage_list}{more}")
        save("evaluate-mprt", f"{FIGURE_DIR}/mprt_similarity.png", fig, list(records_by_key))
        for image_id, sample in sorted(data.samples.items()):
            path, stem = data.names.get(image_id, (str(image_id), f"image_{image_id}"))
            grid = mprt_grid(sample, data, style, stem)
            save("evaluate-mprt-grid", f"{FIGURE_DIR}/mprt/{stem}.png", grid, list(sample.stages), [path])

    if stats:
        fig = summary_table(stats, gates, font)
        save("evaluate-summary", f"{FIGURE_DIR}/summary.png", fig, data.keys)
    atomic.write_text(outdir / FIGURE_INDEX, json.dumps({"figures": records}, indent=1) + "\n")
    return [r["path"] for r in records]


def spread(n: int, k: int) -> list[int]:
    """At most ``k`` indices of ``range(n)``, evenly spaced, the first and last included."""
    if k <= 0:
        return []
    if k == 1:
        return [0] if n else []
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def mprt_grid(sample: GridSample, data: FigureData, style: FigureStyle, name: str):
    keys = [k for k in data.keys if k in sample.stages]
    names = data.stage_names[keys[0]]
    cols = spread(len(names), MAX_STAGE_COLUMNS)
    rows = []
    for key in keys:
        signed = data.signed.get(key[0], False)
        cells = [GridCell(sample.image, sample.original[key], "original", signed=signed)]
        cells += [GridCell(sample.image, sample.stages[key][c], f"{c + 1}: {names[c]}", signed=signed)
                  for c in cols]
        rows.append(GridRow(key_label(key), cells))
    headers = ["original model"] + [f"stage {c + 1}" for c in cols]
    return render_grid(rows, title=f"Cascading randomisation: {name} (target {sample.target_name})",
                       subtitle="each column re-initialises one more parametrised module, from the output "
                                "layer down (Adebayo et al. 2018, fig. 2); a map that does not change is "
                                "not explaining the model", col_headers=headers, style=style)


def summary_table(stats: Sequence[dict[str, Any]], gates: Sequence[Any], font: int):
    metrics = list(dict.fromkeys(r["metric"] for r in stats))
    keys = list(dict.fromkeys((r["method"], r["layer"]) for r in stats))
    by = {(r["method"], r["layer"], r["metric"]): r for r in stats}
    failed = {(g.method, g.layer, g.gate.metric) for g in gates if not g.passed}
    higher = {m: next(r["higher_is_better"] for r in stats if r["metric"] == m) for m in metrics}
    best: dict[str, tuple[str, str | None]] = {}
    for m in metrics:
        scored = [(by[(*k, m)]["mean"], k) for k in keys if (*k, m) in by and by[(*k, m)]["mean"] is not None]
        if len(scored) > 1:
            best[m] = (max if higher[m] else min)(scored)[1]
    header = ["method @ layer"] + [f"{m} {'↑' if higher[m] else '↓'}" for m in metrics]
    rows = []
    for key in keys:
        cells = [TableCell(key_label(key))]
        for m in metrics:
            r = by.get((*key, m))
            if r is None or r["mean"] is None:
                cells.append(TableCell("-"))
                continue
            text = f"{r['mean']:.3f} ± {r['std']:.3f} (n={r['n']})"
            cells.append(TableCell(text, alert=(*key, m) in failed, good=best.get(m) == key))
        rows.append(cells)
    notes = ["↑ higher is better, ↓ lower is better; mean ± standard deviation over images and targets, n "
             "defined values; mprt: at the last stage (fully randomised model); green: best of the column; "
             "red: a failed gate"]
    notes += [g.line() for g in gates if not g.passed]
    return table_image(header, rows, title="Evaluation summary", notes=notes, font_size=font)


__all__ = ["FIGURE_INDEX", "FigureData", "write_evaluation_figures"]

"""What the report (``index.html``) shows, read from an output folder: figures, overlay rows, failures
and the run's summary.

It only reads what a run wrote (``manifest.jsonl``, ``run.json``, the figure indexes) and returns plain
JSON-ready data, so the page itself (:func:`xaicli.render.report.report_page`) stays a pure function of
it and can be rebuilt at any time from the folder alone, e.g. after a resumed run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xaicli.outputs.layout import MANIFEST, RUN_JSON
from xaicli.outputs.manifest import read_manifest

FIGURE_INDEXES = ("figures/figures.json", "sweep/sweep.json", "figures/evaluate/evaluate.json",
                  "figures/drift/drift.json")
ROW_FIELDS = ("overlay", "map", "image", "class", "method", "layer", "slot", "target", "score", "label")


def collect_report_data(outdir: Path) -> dict[str, Any]:
    """Figures, overlay rows and failures of ``outdir``, as embedded in the page.

    Rows are lists in ``ROW_FIELDS`` order (not dicts): a report of many thousand overlays stays small.
    Figures whose PNG is missing are left out, so the page never links a file that is not there.
    """
    figures: list[dict] = []
    for rel in FIGURE_INDEXES:
        path = outdir / rel
        if path.is_file():
            for rec in json.loads(path.read_text(encoding="utf-8")).get("figures", []):
                if (outdir / rec["path"]).is_file():
                    figures.append({k: rec.get(k) for k in ("kind", "path", "title", "class", "methods",
                                                             "layers", "images")})
    manifest = read_manifest(outdir / MANIFEST)
    top1 = {r["image"]: r["target_name"] for r in manifest
            if r.get("status") == "ok" and r.get("slot") == "top1"}
    rows, failures = [], []
    for r in manifest:
        if r.get("status") != "ok":
            failures.append({"image": r.get("image"), "error": r.get("error")})
            continue
        cls = r.get("label") or top1.get(r["image"]) or ""
        rows.append([r.get("overlay"), r.get("map"), r.get("image"), cls, r.get("method"),
                     r.get("layer") or "input", r.get("slot"), r.get("target_name"), r.get("score"),
                     r.get("label")])
    info: dict[str, Any] = {}
    run_json = outdir / RUN_JSON
    if run_json.is_file():
        run = json.loads(run_json.read_text(encoding="utf-8"))
        model = run.get("config", {}).get("model", {})
        described = run.get("model", {}).get("description") if isinstance(run.get("model"), dict) else None
        info = {"model": described or model.get("name") or model.get("path") or model.get("factory"),
                "methods": [m.get("name") for m in run.get("config", {}).get("methods", [])],
                "device": run.get("device"), "started": run.get("started"), "status": run.get("status"),
                "summary": {k: run.get("summary", {}).get(k) for k in ("images_total", "images_explained",
                                                                      "images_skipped", "images_failed")}}
    return {"fields": list(ROW_FIELDS), "figures": figures, "rows": rows, "failures": failures, "info": info}

"""``OUTDIR/index.html``: a static report of a run, opened from disk with no server and no internet.

It lists every figure (``figures/figures.json``, ``sweep/sweep.json``) and every overlay in
``manifest.jsonl`` with its scores. Everything is in the one file: inline CSS, inline plain JavaScript
and the data as an inline JSON block; images are linked by relative paths, so the folder can be moved
or zipped as a whole.

In the page: one ``<select>`` per facet (class, method, layer, kind) filters figures and overlays;
clicking a table header sorts by that column (again: reverse). Filter and sort live in the URL hash,
e.g. ``index.html#method=gradcam&class=Bag&sort=-score``, so a view can be bookmarked. The overlay table
shows 200 rows at a time ("show more" adds more).

Self-check (used by the tests, handy after copying a report): ``index.html#check=1`` loads every image
the report references and writes the result into ``<pre id="selfcheck">`` as JSON
(``{"total": N, "loaded": N, "failed": [...]}``); ``<div id="status">`` always carries how many
figures and rows the current filter shows and whether every ``<img>`` on the page loaded.

The *class* of an overlay row is the image's true label, or its top-1 predicted class without one.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from xaicli.outputs import atomic
from xaicli.outputs.layout import MANIFEST, RUN_JSON
from xaicli.outputs.manifest import read_manifest

INDEX_HTML = "index.html"
FIGURE_INDEXES = ("figures/figures.json", "sweep/sweep.json")
ROW_FIELDS = ("overlay", "map", "image", "class", "method", "layer", "slot", "target", "score", "label")


def collect_report_data(outdir: Path) -> dict[str, Any]:
    """Figures, overlay rows and failures of ``outdir``, as embedded in the page."""
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
        info = {"model": model.get("name") or model.get("path") or model.get("factory"),
                "methods": [m.get("name") for m in run.get("config", {}).get("methods", [])],
                "device": run.get("device"), "started": run.get("started"), "status": run.get("status"),
                "summary": {k: run.get("summary", {}).get(k) for k in ("images_total", "images_explained",
                                                                      "images_skipped", "images_failed")}}
    return {"fields": list(ROW_FIELDS), "figures": figures, "rows": rows, "failures": failures, "info": info}


def write_report(outdir: Path, title: str | None = None) -> Path:
    """Write ``outdir/index.html`` from what is in ``outdir`` now; returns its path."""
    data = collect_report_data(outdir)
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    blob = blob.replace("</", "<\\/").replace("<!--", "<\\!--")  # cannot end the <script> block
    page = _PAGE.replace("@@TITLE@@", html.escape(title or f"xaicli report: {outdir.resolve().name}")) \
                .replace("@@CSS@@", _CSS).replace("@@JS@@", _JS).replace("@@DATA@@", blob)
    path = outdir / INDEX_HTML
    atomic.write_text(path, page)
    return path


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>@@CSS@@</style>
</head>
<body>
<header>
<h1>@@TITLE@@</h1>
<p id="info"></p>
<form id="filters" onsubmit="return false">
  <label>class <select data-facet="class"></select></label>
  <label>method <select data-facet="method"></select></label>
  <label>layer <select data-facet="layer"></select></label>
  <label>kind <select data-facet="kind"></select></label>
  <button type="button" id="reset">reset</button>
  <span id="counts"></span>
</form>
</header>
<main>
<section><h2>Figures</h2><div id="figures"></div><p id="no-figures" hidden>No figures match.</p></section>
<section><h2>Overlays</h2>
<table id="rows"><thead><tr>
<th data-key="overlay">overlay</th><th data-key="image">image</th><th data-key="class">class</th>
<th data-key="method">method</th><th data-key="layer">layer</th><th data-key="slot">target</th>
<th data-key="target">explained class</th><th data-key="score" class="num">probability</th>
</tr></thead><tbody></tbody></table>
<p><button type="button" id="more" hidden>show more</button></p>
</section>
<section id="failures-section" hidden><h2>Failed inputs</h2><ul id="failures"></ul></section>
<pre id="selfcheck" hidden></pre>
<div id="status" data-ready="0"></div>
</main>
<script type="application/json" id="data">@@DATA@@</script>
<script>@@JS@@</script>
</body>
</html>
"""

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222}
header{position:sticky;top:0;background:#f7f7f7;border-bottom:1px solid #ddd;padding:8px 16px;z-index:1}
h1{font-size:18px;margin:0 0 4px}h2{font-size:16px;margin:16px 0 8px}
main{padding:0 16px 24px}#info{margin:0 0 6px;color:#555}
#filters label{margin-right:12px}#filters select{max-width:220px}#counts{color:#555;margin-left:8px}
#figures{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:6px;background:#fff;max-width:420px}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:12px;color:#444;margin-top:4px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e5e5e5;padding:4px 8px;text-align:left}
th{cursor:pointer;user-select:none;background:#fafafa;position:sticky;top:0}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td img{width:64px;height:auto;image-rendering:pixelated;display:block}
.tag{display:inline-block;background:#eef;border-radius:3px;padding:0 4px;margin-right:4px}
"""

_JS = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("data").textContent);
  var F = {};
  DATA.fields.forEach(function (f, i) { F[f] = i; });
  var FACETS = ["class", "method", "layer", "kind"];
  var PAGE = 200;
  var state = {filters: {}, sortKey: null, sortDir: 1, limit: PAGE};
  var selects = {};
  document.querySelectorAll("select[data-facet]").forEach(function (s) { selects[s.dataset.facet] = s; });

  function url(path) { return path.split("/").map(encodeURIComponent).join("/"); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function uniq(values) {
    var seen = {};
    values.forEach(function (v) { if (v !== null && v !== undefined && v !== "") seen[v] = 1; });
    return Object.keys(seen).sort();
  }
  function rowFacet(r, facet) {
    if (facet === "kind") return "overlay";
    return r[F[facet]];
  }
  function figFacet(f, facet) {
    if (facet === "class") return f["class"] ? [f["class"]] : [];
    if (facet === "method") return f.methods || [];
    if (facet === "layer") return f.layers || [];
    return [f.kind];
  }
  function rowMatches(r) {
    return FACETS.every(function (k) { var v = state.filters[k]; return !v || rowFacet(r, k) === v; });
  }
  function figMatches(f) {
    return FACETS.every(function (k) {
      var v = state.filters[k];
      return !v || figFacet(f, k).indexOf(v) >= 0;
    });
  }

  function fillSelects() {
    FACETS.forEach(function (k) {
      var values = [];
      DATA.rows.forEach(function (r) { values.push(rowFacet(r, k)); });
      DATA.figures.forEach(function (f) { values = values.concat(figFacet(f, k)); });
      var s = selects[k];
      s.appendChild(el("option", {value: ""}, "all"));
      uniq(values).forEach(function (v) { s.appendChild(el("option", {value: v}, v)); });
      s.addEventListener("change", function () {
        state.filters[k] = s.value; state.limit = PAGE; writeHash(); render();
      });
    });
  }
  function readHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, "") || location.search.replace(/^\?/, ""));
    FACETS.forEach(function (k) {
      var v = params.get(k) || "";
      state.filters[k] = v;
      var s = selects[k];
      if (v && !Array.prototype.some.call(s.options, function (o) { return o.value === v; })) {
        s.appendChild(el("option", {value: v}, v));
      }
      s.value = v;
    });
    var sort = params.get("sort") || "";
    state.sortKey = F[sort.replace(/^-/, "")] !== undefined ? sort.replace(/^-/, "") : null;
    state.sortDir = sort.charAt(0) === "-" ? -1 : 1;
    return params;
  }
  function writeHash() {
    var params = new URLSearchParams();
    FACETS.forEach(function (k) { if (state.filters[k]) params.set(k, state.filters[k]); });
    if (state.sortKey) params.set("sort", (state.sortDir < 0 ? "-" : "") + state.sortKey);
    var h = params.toString();
    history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
  }

  function renderFigures() {
    var box = document.getElementById("figures");
    box.textContent = "";
    var shown = DATA.figures.filter(figMatches);
    shown.forEach(function (f) {
      var fig = el("figure", {"data-kind": f.kind, "data-class": f["class"] || ""});
      var a = el("a", {href: url(f.path)});
      a.appendChild(el("img", {src: url(f.path), alt: f.title || f.path}));
      fig.appendChild(a);
      var cap = el("figcaption");
      cap.appendChild(el("span", {"class": "tag"}, f.kind));
      cap.appendChild(document.createTextNode(f.title || f.path));
      fig.appendChild(cap);
      box.appendChild(fig);
    });
    document.getElementById("no-figures").hidden = shown.length > 0 || DATA.figures.length === 0;
    return shown.length;
  }
  function sortedRows() {
    var rows = DATA.rows.filter(rowMatches);
    if (state.sortKey) {
      var i = F[state.sortKey], d = state.sortDir;
      rows = rows.slice().sort(function (a, b) {
        var x = a[i], y = b[i];
        if (typeof x === "number" && typeof y === "number") return d * (x - y);
        x = String(x === null ? "" : x);
        y = String(y === null ? "" : y);
        return d * x.localeCompare(y, undefined, {numeric: true});
      });
    }
    return rows;
  }
  function renderRows() {
    var body = document.querySelector("#rows tbody");
    body.textContent = "";
    var rows = sortedRows();
    rows.slice(0, state.limit).forEach(function (r) {
      var tr = el("tr", {"data-method": r[F.method], "data-layer": r[F.layer], "data-class": r[F["class"]],
                         "data-score": r[F.score]});
      var td = el("td");
      var link = r[F.overlay] || r[F.map];
      if (r[F.overlay]) {
        var a = el("a", {href: url(r[F.overlay])});
        a.appendChild(el("img", {src: url(r[F.overlay]), alt: "overlay"}));
        td.appendChild(a);
      } else if (link) {
        td.appendChild(el("a", {href: url(link)}, "map"));
      }
      tr.appendChild(td);
      tr.appendChild(el("td", {}, r[F.image]));
      tr.appendChild(el("td", {}, r[F["class"]] + (r[F.label] ? "" : " (predicted)")));
      tr.appendChild(el("td", {}, r[F.method]));
      tr.appendChild(el("td", {}, r[F.layer]));
      tr.appendChild(el("td", {}, r[F.slot]));
      tr.appendChild(el("td", {}, r[F.target]));
      tr.appendChild(el("td", {"class": "num"}, typeof r[F.score] === "number" ? r[F.score].toFixed(4) : ""));
      body.appendChild(tr);
    });
    var more = document.getElementById("more");
    more.hidden = rows.length <= state.limit;
    more.textContent = "show more (" + Math.min(state.limit, rows.length) + " of " + rows.length + " shown)";
    return rows.length;
  }
  function imagesLoaded() {
    var imgs = Array.prototype.slice.call(document.images);
    return Promise.all(imgs.map(function (img) {
      if (img.complete) return Promise.resolve();
      return new Promise(function (res) {
        img.addEventListener("load", res);
        img.addEventListener("error", res);
      });
    })).then(function () {
      var bad = imgs.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
      return {total: imgs.length, failed: bad.map(function (img) { return img.getAttribute("src"); })};
    });
  }
  function render() {
    var nf = renderFigures(), nr = renderRows();
    document.getElementById("counts").textContent = nf + " figure(s), " + nr + " overlay row(s)";
    document.querySelectorAll("#rows th").forEach(function (th) {
      th.classList.toggle("sorted-asc", th.dataset.key === state.sortKey && state.sortDir > 0);
      th.classList.toggle("sorted-desc", th.dataset.key === state.sortKey && state.sortDir < 0);
    });
    var status = document.getElementById("status");
    status.dataset.figuresVisible = nf;
    status.dataset.rowsVisible = nr;
    status.dataset.filter = JSON.stringify(state.filters);
    status.dataset.ready = "0";
    imagesLoaded().then(function (res) {
      status.dataset.imagesTotal = res.total;
      status.dataset.imagesFailed = res.failed.length;
      status.dataset.ready = "1";
    });
  }
  function selfCheck() {
    var urls = uniq(DATA.figures.map(function (f) { return f.path; })
      .concat(DATA.rows.map(function (r) { return r[F.overlay]; })));
    var out = document.getElementById("selfcheck");
    out.hidden = false;
    Promise.all(urls.map(function (p) {
      return new Promise(function (res) {
        var img = new Image();
        img.onload = function () { res(img.naturalWidth > 0 ? null : p); };
        img.onerror = function () { res(p); };
        img.src = url(p);
      });
    })).then(function (results) {
      var failed = results.filter(function (p) { return p !== null; });
      var result = {total: urls.length, loaded: urls.length - failed.length, failed: failed};
      out.textContent = JSON.stringify(result);
      out.dataset.done = "1";
    });
  }

  var info = DATA.info || {};
  var parts = [];
  if (info.model) parts.push("model " + info.model);
  if (info.methods && info.methods.length) parts.push("methods " + info.methods.join(", "));
  if (info.summary && info.summary.images_total !== undefined) {
    parts.push(info.summary.images_total + " image(s), " + (info.summary.images_failed || 0) + " failed");
  }
  if (info.device) parts.push("device " + info.device);
  if (info.started) parts.push("started " + info.started);
  document.getElementById("info").textContent = parts.join(" · ");
  if (DATA.failures.length) {
    document.getElementById("failures-section").hidden = false;
    var ul = document.getElementById("failures");
    DATA.failures.forEach(function (f) { ul.appendChild(el("li", {}, f.image + ": " + f.error)); });
  }
  fillSelects();
  var params = readHash();
  document.querySelectorAll("#rows th").forEach(function (th) {
    th.addEventListener("click", function () {
      state.sortDir = state.sortKey === th.dataset.key ? -state.sortDir : 1;
      state.sortKey = th.dataset.key;
      writeHash();
      render();
    });
  });
  document.getElementById("more").addEventListener("click", function () { state.limit += PAGE; render(); });
  document.getElementById("reset").addEventListener("click", function () {
    FACETS.forEach(function (k) { state.filters[k] = ""; selects[k].value = ""; });
    state.limit = PAGE; writeHash(); render();
  });
  window.addEventListener("hashchange", function () { readHash(); state.limit = PAGE; render(); });
  render();
  if (params.get("check") === "1") selfCheck();
})();
"""

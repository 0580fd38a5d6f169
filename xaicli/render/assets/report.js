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

"""``OUTDIR/index.html``: data, self-containment, and (in headless Chromium) that every image loads and
the filters and sorting work when the page is opened from disk."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import tiny_cnn
from PIL import Image
from typer.testing import CliRunner

from xaicli.cli.app import app
from xaicli.outputs.manifest import read_manifest
from xaicli.outputs.report_data import collect_report_data
from xaicli.render.report import report_page
from xaicli.runs.report import write_report

ODD_FOLDER = "odd #1 name"  # no class name: grouped by prediction; '#' and ' ' must survive in URLs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, torch_single_thread: None) -> Path:
    """A tiny explain (two methods, figures, a broken file, an odd folder name) plus a sweep."""
    tmp = tmp_path_factory.mktemp("report")
    images = tiny_cnn.write_images(tmp / "imgs", per_class=2)
    tiny_cnn.write_images(tmp / "imgs", per_class=1, folders=[ODD_FOLDER], seed=1)
    (tmp / "imgs" / "dog" / "broken.png").write_bytes(b"not a png")
    cfg = tiny_cnn.write_config(tmp / "tiny.yaml", topk=True, compare=True, cell_size=32)
    out = tmp / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["explain", str(images), "-c", str(cfg), "-o", str(out), "-q",
                              "-m", "gradcam", "-m", "saliency"])
    assert res.exit_code == 1, res.output  # the broken file
    res = runner.invoke(app, ["sweep", str(images), "-c", str(cfg), "-o", str(out), "-q", "-n", "1"])
    assert res.exit_code == 1, res.output
    return out


def test_report_data_lists_every_overlay_figure_and_failure(run_dir: Path) -> None:
    data = collect_report_data(run_dir)
    manifest = read_manifest(run_dir / "manifest.jsonl")
    ok = [r for r in manifest if r["status"] == "ok"]
    f = {name: i for i, name in enumerate(data["fields"])}
    assert len(data["rows"]) == len(ok) == 7 * 2 * 2  # images x methods x top-2
    assert {r[f["method"]] for r in data["rows"]} == {"gradcam", "saliency"}
    assert {r[f["layer"]] for r in data["rows"]} == {"features.1.bn", "input"}
    odd = [r for r in data["rows"] if ODD_FOLDER in r[f["image"]]]
    assert odd and all(r[f["label"]] is None and r[f["class"]] in tiny_cnn.CLASSES for r in odd)
    kinds = [fig["kind"] for fig in data["figures"]]
    assert kinds.count("topk") == kinds.count("sweep") >= 3 and kinds.count("sweep-summary") == 1
    assert kinds.count("compare") == 7
    assert [x["image"].endswith("broken.png") for x in data["failures"]] == [True]
    assert data["info"]["methods"] == ["gradcam", "saliency"]


def test_page_is_self_contained(run_dir: Path) -> None:
    page = (run_dir / "index.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert re.findall(r"<script[^>]*\ssrc=", page) == []
    assert page.count("</script>") == 2  # the data block and the code; nothing in the data ends them


def test_data_cannot_break_out_of_its_script_block(tmp_path: Path) -> None:
    row = {"image": "x/</script><b>y.png", "status": "ok", "method": "m", "layer": None, "slot": "top1",
           "target": 0, "target_name": "<!--c", "score": 0.5, "label": None, "overlay": None, "map": None}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and "<!--c" not in page


def test_page_is_a_pure_function_of_data_and_title() -> None:
    data = {"fields": ["image"], "figures": [], "rows": [["a @@TITLE@@.png"]], "failures": [], "info": {}}
    page = report_page(data, "<b> & @@CSS@@")
    assert page == report_page(data, "<b> & @@CSS@@")
    assert page.count("<title>&lt;b&gt; &amp; @@CSS@@</title>") == 1  # escaped, placeholders not expanded
    assert page.count("@@CSS@@") == 2 and page.count("@@TITLE@@") == 1  # title, h1; the data row
    assert "th.sorted-asc::after" in page and "function fillSelects()" in page  # CSS and JS from the assets


# --- in a browser -----------------------------------------------------------------------------------


class _Dom(HTMLParser):
    """Attributes of #status and of the table's rows, and the text of #selfcheck, from --dump-dom."""

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, str] = {}
        self.rows: list[dict[str, str]] = []
        self.selfcheck = ""
        self._in_check = False
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("id") == "status":
            self.status = a
        self._in_check = a.get("id") == "selfcheck"
        self._in_body = self._in_body or tag == "tbody"
        if tag == "tr" and self._in_body:
            self.rows.append(a)

    def handle_data(self, data: str) -> None:
        if self._in_check:
            self.selfcheck += data

    def handle_endtag(self, tag: str) -> None:
        self._in_check = False
        if tag == "tbody":
            self._in_body = False


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian package 'chromium')")
    return exe


def open_page(page: Path, fragment: str, profile: Path) -> _Dom:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
           "--dump-dom", page.resolve().as_uri() + fragment]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    assert dom.status.get("data-ready") == "1", proc.stdout[-2000:]
    return dom


def test_every_image_loads_and_the_method_filter_works(run_dir: Path, tmp_path: Path) -> None:
    data = collect_report_data(run_dir)
    f = {name: i for i, name in enumerate(data["fields"])}
    dom = open_page(run_dir / "index.html", "#method=gradcam&check=1", tmp_path / "profile")
    check = json.loads(dom.selfcheck)
    n_overlays = len({r[f["overlay"]] for r in data["rows"]})
    assert check == {"total": len(data["figures"]) + n_overlays, "loaded": check["total"], "failed": []}
    status = dom.status
    assert status["data-images-failed"] == "0" and int(status["data-images-total"]) > 0
    gradcam = [r for r in data["rows"] if r[f["method"]] == "gradcam"]
    assert int(status["data-rows-visible"]) == len(gradcam) == len(dom.rows)
    assert {r["data-method"] for r in dom.rows} == {"gradcam"}
    # figures made with gradcam stay (top-k, compare, sweep), none is lost
    assert int(status["data-figures-visible"]) == len(data["figures"])
    assert json.loads(status["data-filter"])["method"] == "gradcam"


def test_class_filter_and_sort_by_score(run_dir: Path, tmp_path: Path) -> None:
    data = collect_report_data(run_dir)
    dom = open_page(run_dir / "index.html", "#class=dog&layer=input&sort=-score", tmp_path / "profile")
    assert dom.rows and {(r["data-class"], r["data-layer"]) for r in dom.rows} == {("dog", "input")}
    scores = [float(r["data-score"]) for r in dom.rows]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    # dog's top-k figure and its compare figures show saliency ('input'); the sweeps do not
    figures = [x for x in data["figures"] if x["class"] == "dog" and "input" in x["layers"]]
    assert {x["kind"] for x in figures} == {"compare", "topk"}
    assert int(dom.status["data-figures-visible"]) == len(figures)
    everything = open_page(run_dir / "index.html", "", tmp_path / "profile2")
    assert int(everything.status["data-rows-visible"]) == len(collect_report_data(run_dir)["rows"])


def test_the_self_check_reports_a_missing_image(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    rows = [{"image": f"{name}.png", "status": "ok", "method": "gradcam", "layer": "l", "slot": "top1",
             "target": 0, "target_name": "a", "score": 0.5, "label": "a", "overlay": f"{name}.png",
             "map": None} for name in ("ok", "missing")]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dom = open_page(write_report(tmp_path), "#check=1", tmp_path / "profile")
    assert json.loads(dom.selfcheck) == {"total": 2, "loaded": 1, "failed": ["missing.png"]}
    assert dom.status["data-images-failed"] == "1"

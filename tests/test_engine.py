"""The run loop end to end: resume, bad and unusual inputs, hook and model-state hygiene."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaicli.config import config_from_dict
from xaicli.methods import available_methods
from xaicli.runs.explain import explain as run_explain


def read_rows(outdir: Path) -> list[dict]:
    rows = []
    for line in (outdir / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def key(row: dict) -> tuple:
    return row["rel"], row["method"], row["layer"], row["slot"]


def ok_keys(rows: list[dict]) -> list[tuple]:
    return [key(r) for r in rows if r["status"] == "ok"]


# --- resume ------------------------------------------------------------------------------------------------


@pytest.fixture
def first_run(cli, tmp_path, write_config, tiny_config, image_tree):
    """A finished run of 3 images x (gradcam on 2 layers) x top-2 = 12 rows; returns (args, outdir)."""
    tiny_config["methods"] = [{"name": "gradcam", "layers": ["features.0.conv", "features.1.conv"]}]
    out = tmp_path / "out"
    args = ("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    res = cli(*args)
    assert res.exit_code == 0, res
    assert len(read_rows(out)) == 12
    return args, out


def test_rerun_skips_everything(cli, first_run):
    args, out = first_run
    before = (out / "manifest.jsonl").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    res = cli(*args, "--json")
    assert res.exit_code == 0
    summary = json.loads(res.stdout)
    assert (summary["images_skipped"], summary["images_explained"], summary["rows_written"]) == (3, 0, 0)
    assert (out / "manifest.jsonl").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == mtimes
    res = cli(*args)
    assert "resuming: 3 image(s) already in manifest.jsonl, skipped" in res.stderr


def test_interrupted_run_redoes_exactly_the_missing_rows(cli, first_run):
    args, out = first_run
    manifest = out / "manifest.jsonl"
    rows = read_rows(manifest.parent)
    all_keys = set(ok_keys(rows))
    # drop every row of one image, one row of another, and tear the last line (killed mid-write)
    gone_image = rows[0]["image"]
    keep = [r for r in rows if r["image"] != gone_image]
    dropped_single = keep.pop(1)
    torn = keep[-1]
    text = "".join(json.dumps(r) + "\n" for r in keep[:-1]) + json.dumps(torn)[:25]
    manifest.write_text(text)
    (out / rows[0]["map"]).unlink()  # its files may be missing too

    res = cli(*args, "--json")
    assert res.exit_code == 0, res
    summary = json.loads(res.stdout)
    redone = {key(r) for r in rows if r["image"] == gone_image} | {key(dropped_single), key(torn)}
    images_redone = {k[0] for k in redone}
    assert summary["images_skipped"] == 3 - len(images_redone)
    assert summary["images_explained"] == len(images_redone)
    assert summary["rows_written"] == len(redone)
    after = read_rows(out)
    new_rows = after[len(keep) - 1:]
    assert sorted(ok_keys(new_rows)) == sorted(redone)
    assert sorted(ok_keys(after)) == sorted(all_keys)  # each explanation exactly once
    assert (out / rows[0]["map"]).is_file()
    # the torn line was cut off (and its explanation redone), not kept as a broken line
    assert manifest.read_text().count("\n") == len(keep) - 1 + len(redone)
    assert all(json.loads(line) for line in manifest.read_text().splitlines())


def test_overwrite_redoes_everything(cli, first_run):
    args, out = first_run
    with (out / "manifest.jsonl").open("a") as f:
        f.write('{"torn": ')
    res = cli(*args, "--overwrite", "--json")
    assert res.exit_code == 0
    summary = json.loads(res.stdout)
    assert (summary["images_explained"], summary["images_skipped"], summary["rows_written"]) == (3, 0, 12)
    rows = read_rows(out)
    assert len(rows) == 12 and len(set(ok_keys(rows))) == 12


def test_resume_with_more_targets_adds_only_new_rows(cli, first_run):
    args, out = first_run
    res = cli(*args, "--topk", "3", "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["rows_written"] == 3 * 2  # top3 for 3 images x 2 layers
    rows = read_rows(out)
    assert len(rows) == 18 and len(set(ok_keys(rows))) == 18


def test_failed_images_are_retried_on_resume(cli, tmp_path, write_config, tiny_config, image_tree):
    bad = image_tree / "dog" / "broken.png"
    bad.write_bytes(b"")
    out = tmp_path / "out"
    args = ("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out, "--json")
    assert cli(*args).exit_code == 1
    res = cli(*args)
    assert res.exit_code == 1
    summary = json.loads(res.stdout)
    assert summary["images_skipped"] == 3 and [f["image"] for f in summary["failures"]] == [str(bad)]
    bad.write_bytes((image_tree / "dog" / "c.png").read_bytes())  # fixed by the user
    res = cli(*args)
    assert res.exit_code == 0 and json.loads(res.stdout)["images_explained"] == 1
    assert len([r for r in read_rows(out) if r["image"] == str(bad) and r["status"] == "ok"]) == 2


# --- bad input never stops the batch ---------------------------------------------------------------------


def _png_bytes(size=(16, 20), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode).save(
        buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(size=(64, 80)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (*size, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_bad_inputs(folder: Path) -> dict[Path, str]:
    """Every kind of unreadable input, with a fragment of the expected message."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = {}
    (folder / "zero.png").write_bytes(b"")
    bad[folder / "zero.png"] = "empty file"
    (folder / "garbage.jpg").write_bytes(os.urandom(300))
    bad[folder / "garbage.jpg"] = "not an image"
    png = _png_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    bad[folder / "truncated.png"] = "truncated or corrupt"
    jpeg = _jpeg_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    bad[folder / "truncated.jpg"] = "truncated or corrupt"
    (folder / "notes.png").write_text("this is a text file with an image name\n")
    bad[folder / "notes.png"] = "not an image"
    (folder / "x.png").mkdir()
    bad[folder / "x.png"] = "is a directory"
    (folder / "dangling.png").symlink_to(folder / "does_not_exist.png")
    bad[folder / "dangling.png"] = "No such file or directory"
    return bad


def test_bad_inputs_are_reported_and_the_rest_explained(cli, tmp_path, write_config, tiny_config, image_tree):
    bad = make_bad_inputs(image_tree / "junk")
    text_file = tmp_path / "readme.txt"  # a file given explicitly is always tried, whatever its suffix
    text_file.write_text("hello")
    bad[text_file] = "not an image"
    out = tmp_path / "out"
    res = cli("explain", image_tree, text_file, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 1, res
    assert "Traceback" not in res.output
    rows = read_rows(out)
    errors = {r["image"]: r for r in rows if r["status"] == "error"}
    assert set(errors) == {str(p) for p in bad}
    for path, fragment in bad.items():
        assert f"failed: {path}: " in res.stderr
        line = next(ln for ln in res.stderr.splitlines() if ln.startswith(f"failed: {path}: "))
        assert fragment in line, line
        assert fragment in errors[str(path)]["error"]
        assert errors[str(path)]["overlay"] is None and errors[str(path)]["map"] is None
    good = [r for r in rows if r["status"] == "ok"]
    assert len(good) == 3 * 2
    assert all((out / r["overlay"]).is_file() and (out / r["map"]).is_file() for r in good)
    assert f"3 explained, 0 skipped (already done), {len(bad)} failed" in res.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["summary"]["images_failed"] == len(bad)
    assert run["summary"]["exit_code"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 file")
def test_unreadable_file_permission(cli, tmp_path, write_config, tiny_config, image_tree):
    locked = image_tree / "cat" / "locked.png"
    locked.write_bytes(_png_bytes())
    locked.chmod(0)
    try:
        res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    finally:
        locked.chmod(0o644)
    assert res.exit_code == 1 and f"failed: {locked}: cannot open" in res.stderr


def test_a_batch_of_only_bad_images(cli, tmp_path, write_config, tiny_config):
    folder = tmp_path / "allbad"
    make_bad_inputs(folder)
    out = tmp_path / "out"
    res = cli("explain", folder, "-c", write_config(tmp_path, tiny_config), "-o", out, "-b", "2")
    assert res.exit_code == 1
    rows = read_rows(out)
    assert rows and all(r["status"] == "error" for r in rows)


def make_unusual_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    paths = []

    def save(img: Image.Image, name: str, **kw) -> None:
        img.save(folder / name, **kw)
        paths.append(folder / name)

    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (24, 30), dtype=np.uint8)))
    save(rgba, "rgba.png")
    save(rgba.convert("LA"), "la.png")
    save(rgb.quantize(16), "palette.png")
    save(rgb.quantize(16), "palette_trns.png", transparency=0)
    save(rgb.convert("CMYK"), "cmyk.jpg", quality=90)
    save(Image.fromarray(rng.integers(0, 65536, (24, 30), dtype=np.uint16)), "gray16.png")
    save(Image.fromarray(rng.integers(0, 2**20, (24, 30), dtype=np.int32)), "gray32.tif")
    save(Image.fromarray(rng.random((24, 30), dtype=np.float32)), "float.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    save(rgb, "exif_rotated.jpg", exif=exif)
    save(rgb.convert("L"), "gray.bmp")
    save(rgb.convert("1"), "bilevel.png")
    save(rgb, "photo.webp")
    save(rgb, "UPPER.PNG")
    save(Image.fromarray(rng.integers(0, 256, (600, 900, 3), dtype=np.uint8)), "large.jpg", quality=80)
    save(Image.new("RGB", (1, 1), (200, 10, 10)), "tiny.png")
    save(Image.new("RGB", (70, 1), (10, 200, 10)), "thin.png")
    frames = [Image.new("RGB", (20, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(folder / "animated.png", save_all=True, append_images=frames[1:])
    paths.append(folder / "animated.png")
    return paths


def test_unusual_but_valid_images_are_explained(cli, tmp_path, write_config, tiny_config):
    paths = make_unusual_images(tmp_path / "odd")
    out = tmp_path / "out"
    res = cli("explain", tmp_path / "odd", "-c", write_config(tmp_path, tiny_config), "-o", out, "-b", "8")
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert all(r["status"] == "ok" for r in rows)
    assert {r["image"] for r in rows} == {str(p) for p in paths}
    assert len(rows) == 2 * len(paths)
    for r in rows:
        m = np.load(out / r["map"])
        assert m.shape == (16, 20) and np.isfinite(m).all() and 0.0 <= m.min() and m.max() <= 1.0
        assert 0.0 < r["score"] <= 1.0
    assert (out / "UPPER.PNG" / "gradcam").is_dir()


def test_grayscale_model_input(cli, tmp_path, write_config, tiny_config, tiny_cnn_factory_file, image_tree):
    """mode L: colour inputs are reduced to one channel for a 1-channel model."""
    (tmp_path / "gray_factory.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('tiny_for_gray', {str(tiny_cnn_factory_file)!r})\n"
        "mod = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(mod)\n"
        "def build():\n    return mod.TinyCNN(in_channels=1).eval()\n")
    tiny_config["model"]["factory"] = "gray_factory.py:build"
    tiny_config["preprocess"].update(mode="L", size=[12, 12])
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    rows = read_rows(out)
    assert len(rows) == 6 and all(np.load(out / r["map"]).shape == (12, 12) for r in rows)


# --- hooks and model state -------------------------------------------------------------------------------

HOOK_MODELS = '''
import importlib.util

import torch

_spec = importlib.util.spec_from_file_location("_xaicli_test_hook_tiny", TINY_CNN_FILE)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)
build_tiny = _tiny.build

BUILT = []


class Flaky(torch.nn.Module):
    """The tiny CNN with its first block frozen; refuses any batch holding an all-white image."""

    def __init__(self):
        super().__init__()
        self.net = build_tiny()
        for p in self.net.features[0].parameters():
            p.requires_grad_(False)

    def forward(self, x):
        if (x.flatten(1) > 1.99).all(dim=1).any():  # white = (1 - 0.5) / 0.25 = 2 after normalisation
            raise RuntimeError("flaky model: refusing a white image")
        return self.net(x)


def build():
    model = Flaky().eval()
    BUILT.append(model)
    return model
'''

HOOK_MODULE = "xaicli_test_hook_models"
CHEAP_OPTIONS = {"scorecam": {"max_n": 3, "chunk_size": 8}, "integrated_gradients": {"steps": 4},
                 "smoothgrad": {"samples": 3}}


@pytest.fixture
def hook_models(tmp_path, tiny_cnn_factory_file, monkeypatch):
    """A uniquely named importable module (``package.module:function`` factory) around the tiny CNN."""
    source = HOOK_MODELS.replace("TINY_CNN_FILE", repr(str(tiny_cnn_factory_file)))
    (tmp_path / f"{HOOK_MODULE}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, HOOK_MODULE, raising=False)
    yield f"{HOOK_MODULE}:build"
    sys.modules.pop(HOOK_MODULE, None)


def _all_methods_config(tiny_config: dict, factory: str) -> dict:
    tiny_config["model"]["factory"] = factory
    tiny_config["methods"] = [
        {"name": name, "layers": ["net.features.1.conv", "net.features.0.relu"] if cls.needs_layer else [],
         "options": CHEAP_OPTIONS.get(name, {})}
        for name, cls in available_methods().items()]
    return tiny_config


def assert_model_clean(model: torch.nn.Module) -> None:
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, attr, {}), f"{attr} left on {name or 'the model'}"
    from torch.nn.modules import module as nn_module

    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        assert not getattr(nn_module, attr, {}), f"global {attr} left behind"
    frozen = {f"net.features.0.{n}" for n, _ in model.net.features[0].named_parameters()}
    for name, p in model.named_parameters():
        assert p.requires_grad == (name not in frozen), f"requires_grad of {name} not restored"
        assert p.grad is None, f"{name} received a gradient"
    assert not model.training


def test_hooks_removed_and_requires_grad_restored_after_a_run(tmp_path, tiny_config, image_tree, hook_models):
    cfg = config_from_dict(_all_methods_config(tiny_config, hook_models), base_dir=tmp_path)
    summary = run_explain(cfg, [str(image_tree)], tmp_path / "out")
    assert summary.exit_code == 0 and summary.images_explained == 3
    model = sys.modules[HOOK_MODULE].BUILT[-1]
    assert_model_clean(model)
    rows = read_rows(tmp_path / "out")
    assert {r["method"] for r in rows} == set(available_methods())


def test_hooks_removed_when_the_model_fails_mid_run(tmp_path, tiny_config, image_tree, hook_models):
    Image.new("RGB", (20, 16), (255, 255, 255)).save(image_tree / "dog" / "z_white.png")  # 2nd batch
    cfg = config_from_dict(_all_methods_config(tiny_config, hook_models), base_dir=tmp_path)
    assert cfg.run.batch_size == 2
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="flaky model"):
        run_explain(cfg, [str(image_tree)], out)
    assert_model_clean(sys.modules[HOOK_MODULE].BUILT[-1])
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed"
    # the model still works afterwards, without hooks interfering
    model = sys.modules[HOOK_MODULE].BUILT[-1]
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 16, 20)).shape == (2, 4)


def test_explainer_library_use_leaves_no_hooks(tiny_config, tmp_path, hook_models):
    from xaicli.engine import Explainer

    tiny_config["model"]["factory"] = hook_models
    tiny_config["methods"] = [{"name": "gradcam", "layers": ["net.features.0.relu"]},
                              {"name": "guided_backprop"}]
    explainer = Explainer(config_from_dict(tiny_config, base_dir=tmp_path))
    images = torch.rand(3, 3, 16, 20)
    result = explainer.explain_batch(images)
    targets, probs, maps = result.targets, result.probs, result.maps
    assert targets.shape == probs.shape == (3, 2)
    assert maps[("gradcam", "net.features.0.relu")].shape == (3, 2, 16, 20)
    assert maps[("guided_backprop", None)].shape == (3, 2, 16, 20)
    assert_model_clean(explainer.loaded.model)
    with torch.no_grad():  # in-place ReLU after the hooked layer did not corrupt the probabilities
        x = (images - 0.5) / 0.25
        expected = explainer.loaded.model(x).softmax(1).gather(1, targets)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


# --- one model per command --------------------------------------------------------------------------------

COUNTING_FACTORY = '''
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_xaicli_counted_tiny", TINY_CNN_FILE)
_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tiny)


def build():
    log = Path(__file__).with_suffix(".count")
    log.write_text(log.read_text() + "x" if log.exists() else "x")
    return _tiny.build()
'''


def test_each_command_loads_the_model_once(cli, tmp_path, tiny_config, tiny_cnn_factory_file, write_config,
                                           image_tree):
    """explain (also resumed with figures, which re-explains skipped images), sweep (also scoring its layers)
    and evaluate (explain + metrics that recompute maps on copies) build one model."""
    (tmp_path / "counted.py").write_text(COUNTING_FACTORY.replace("TINY_CNN_FILE",
                                                                  repr(str(tiny_cnn_factory_file))))
    tiny_config["model"]["factory"] = "counted.py:build"
    tiny_config["figures"] = {"topk": True, "compare": True}
    cfg = write_config(tmp_path, tiny_config)
    count = tmp_path / "counted.count"
    for args in (("explain", image_tree, "-o", tmp_path / "out"),
                 ("explain", image_tree, "-o", tmp_path / "out"),  # resumed: figures recomputed in memory
                 ("sweep", image_tree, "-o", tmp_path / "sweep", "--layers", "auto"),
                 ("evaluate", image_tree, "-o", tmp_path / "eval", "--metrics",
                  "sparseness,mprt,random_logit"),
                 ("layers",)):
        count.unlink(missing_ok=True)
        res = cli(*args, "-c", cfg)
        assert res.exit_code == 0, res
        assert count.read_text() == "x", f"{args[0]} built the model {len(count.read_text())} times"
    assert "re-explaining 3 resumed image(s)" in cli("explain", image_tree, "-o", tmp_path / "out", "-c",
                                                     cfg).output

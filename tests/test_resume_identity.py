"""Resume identity (issue 10): every row carries the fingerprint of what produced its map, a resume skips
only rows of the same model, weights, preprocessing, method options and targets, and any other rerun into
the same OUTDIR is refused (exit 2, one line saying what differs) unless it only adds methods, layers or
top-k slots."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CNN_SOURCE, save_random_image, strict_json

from xaicli.errors import ExitCode


def rows_of(outdir: Path) -> list[dict]:
    return [strict_json(ln) for ln in (outdir / "manifest.jsonl").read_text().splitlines() if ln.strip()]


def keys(rows: list[dict]) -> Counter:
    return Counter((r["rel"], r["method"], r["layer"], r["slot"]) for r in rows if r["status"] == "ok")


def refused(res, *needles: str) -> str:
    """Exit 2 with one error line naming what differs and how to go on."""
    assert res.exit_code == ExitCode.USAGE, res
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.stderr
    for needle in ("--overwrite", "-o", *needles):
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture
def first(cli, tmp_path, write_config, tiny_config, image_tree):
    """A finished run (3 images, Grad-CAM at one layer, top-2): (config dict, outdir, manifest bytes)."""
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == 0, res
    return tiny_config, out, (out / "manifest.jsonl").read_bytes()


def rerun(cli, tmp_path, write_config, image_tree, cfg: dict, out: Path, *args):
    return cli("explain", image_tree, "-c", write_config(tmp_path, cfg, "second.yaml"), "-o", out, *args)


def test_every_row_has_a_fingerprint_and_run_json_keeps_the_history(cli, first, tmp_path, write_config,
                                                                      image_tree):
    cfg, out, _ = first
    rows = rows_of(out)
    assert all(r["fingerprint"] and r["rel"] for r in rows)
    assert len({r["fingerprint"] for r in rows}) == 1  # one method at one layer: one map definition
    res = rerun(cli, tmp_path, write_config, image_tree, cfg, out, "-k", "3")
    assert res.exit_code == 0, res
    run = json.loads((out / "run.json").read_text())
    assert [h["status"] for h in run["history"]] == ["complete", "complete"]
    assert rows[0]["fingerprint"] in run["history"][0]["fingerprints"].values()
    assert run["status"] == "complete" and run["fingerprints"] == run["history"][1]["fingerprints"]


def test_other_weights_are_refused_not_resumed(cli, tmp_path, write_config, tiny_config, image_tree):
    """The factory file stays the same; the weights it loads change: only hashing the weights sees it."""
    (tmp_path / "loads_weights.py").write_text(TINY_CNN_SOURCE + '''

def build_from_file():
    from pathlib import Path
    model = TinyCNN()
    model.load_state_dict(torch.load(Path(__file__).with_name("weights.pt"), weights_only=True))
    return model.eval()
''')
    torch.manual_seed(0)
    torch.save(_tiny_state(0), tmp_path / "weights.pt")
    tiny_config["model"]["factory"] = "loads_weights.py:build_from_file"
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", cfg, "-o", out).exit_code == 0
    before = (out / "manifest.jsonl").read_bytes()
    torch.save(_tiny_state(1), tmp_path / "weights.pt")  # retrained
    line = refused(cli("explain", image_tree, "-c", cfg, "-o", out), "weights")
    assert "OUTDIR" in line
    assert (out / "manifest.jsonl").read_bytes() == before  # nothing touched
    res = cli("explain", image_tree, "-c", cfg, "-o", out, "--overwrite", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["images_explained"] == 3


def _tiny_state(seed: int) -> dict:
    import importlib.util

    from conftest import TINY_CNN_SOURCE as src

    spec = importlib.util.spec_from_loader("_tiny_for_state", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(src, module.__dict__)
    torch.manual_seed(seed)
    return module.TinyCNN().state_dict()


def test_another_checkpoint_file_is_refused(cli, tmp_path, write_config, tiny_config, image_tree):
    torch.save(_tiny_state(0), tmp_path / "a.pt")
    torch.save(_tiny_state(2), tmp_path / "b.pt")
    out = tmp_path / "out"
    tiny_config["model"]["checkpoint"] = "a.pt"
    assert cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out).exit_code == 0
    tiny_config["model"]["checkpoint"] = "b.pt"
    refused(rerun(cli, tmp_path, write_config, image_tree, tiny_config, out), "weights")


def test_other_method_options_are_refused(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["methods"] = [{"name": "gradcam_pp", "layers": ["features.1.conv"]}]
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out).exit_code == 0
    tiny_config["methods"][0]["options"] = {"alpha_norm": False}
    refused(rerun(cli, tmp_path, write_config, image_tree, tiny_config, out), "gradcam_pp", "alpha_norm")


def test_other_preprocessing_is_refused(cli, first, tmp_path, write_config, image_tree):
    cfg, out, before = first
    cfg["preprocess"]["mean"] = [0.4]
    refused(rerun(cli, tmp_path, write_config, image_tree, cfg, out), "preprocess", "mean")
    assert (out / "manifest.jsonl").read_bytes() == before


def test_other_targets_are_refused(cli, first, tmp_path, write_config, image_tree):
    cfg, out, _ = first
    cfg["targets"] = {"classes": [1]}
    refused(rerun(cli, tmp_path, write_config, image_tree, cfg, out), "targets")


def test_other_class_names_are_refused(cli, first, tmp_path, write_config, image_tree):
    cfg, out, _ = first
    cfg["model"]["classes"] = ["kitten", "puppy", "bird", "fish"]
    refused(rerun(cli, tmp_path, write_config, image_tree, cfg, out), "classes")


def test_adding_methods_layers_and_topk_slots_extends_the_run(cli, first, tmp_path, write_config, image_tree):
    cfg, out, before = first
    cfg["methods"] = [{"name": "gradcam", "layers": ["features.1.conv", "features.0.conv"]},
                      {"name": "saliency"}]
    res = rerun(cli, tmp_path, write_config, image_tree, cfg, out, "-k", "3", "--json")
    assert res.exit_code == 0, res
    assert json.loads(res.stdout)["rows_written"] == 3 * 3 * 3 - 3 * 2  # all new, none redone
    manifest = (out / "manifest.jsonl").read_bytes()
    assert manifest.startswith(before)  # the earlier rows are kept as they were
    counts = keys(rows_of(out))
    assert len(counts) == 27 and max(counts.values()) == 1
    # fewer slots or methods than the directory holds: a subset of it, nothing to redo
    res = rerun(cli, tmp_path, write_config, image_tree, cfg, out, "-k", "1", "-m", "gradcam", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["images_skipped"] == 3


def test_overwrite_replaces_results_of_another_configuration(cli, first, tmp_path, write_config, image_tree):
    cfg, out, _ = first
    cfg["preprocess"]["std"] = [0.3]
    res = rerun(cli, tmp_path, write_config, image_tree, cfg, out, "--overwrite")
    assert res.exit_code == 0, res
    rows = rows_of(out)
    assert len(rows) == 6 and len({r["fingerprint"] for r in rows}) == 1
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["preprocess"]["std"] == [0.3] and len(run["history"]) == 1


def test_a_changed_image_is_explained_again(cli, first, tmp_path, write_config, image_tree):
    cfg, out, _ = first
    changed = image_tree / "cat" / "a.png"
    save_random_image(changed, seed=99)
    os.utime(changed, ns=(1, 1))  # a different modification time whatever the clock's resolution
    res = rerun(cli, tmp_path, write_config, image_tree, cfg, out, "--json")
    assert res.exit_code == 0, res
    summary = json.loads(res.stdout)
    assert (summary["images_explained"], summary["images_skipped"]) == (1, 2)
    rows = rows_of(out)
    assert max(keys(rows).values()) == 1 and len(rows) == 6  # the stale rows were replaced, not kept
    fresh = [r for r in rows if r["rel"] == "cat/a.png"]
    assert np.load(out / fresh[0]["map"]).shape == (16, 20)


def test_a_resume_from_another_working_directory_skips_the_same_images(cli, tmp_path, write_config,
                                                                        tiny_config, image_tree, monkeypatch):
    cfg = write_config(tmp_path, tiny_config)
    monkeypatch.chdir(tmp_path)
    assert cli("explain", "images", "-c", cfg, "-o", "out").exit_code == 0
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    res = cli("explain", "../images", "-c", cfg, "-o", "../out", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["images_skipped"] == 3
    assert len(rows_of(tmp_path / "out")) == 6


def test_rows_without_fingerprints_are_refused(cli, first, tmp_path, write_config, image_tree):
    """A manifest written before fingerprints existed cannot be vouched for."""
    cfg, out, _ = first
    rows = rows_of(out)
    for r in rows:
        del r["fingerprint"]
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused(rerun(cli, tmp_path, write_config, image_tree, cfg, out), "fingerprint")


def test_model_digest_hashes_files_or_the_state_dict(tmp_path, tiny_config, tiny_cnn_factory_file):
    from xaicli.config import config_from_dict
    from xaicli.models.digest import model_digest, state_dict_digest
    from xaicli.models.loader import load_model

    cfg = config_from_dict(tiny_config, base_dir=tmp_path)
    loaded = load_model(cfg)
    first = model_digest(cfg, loaded.model)
    assert first.weights == state_dict_digest(loaded.model.state_dict())
    assert first == model_digest(cfg, load_model(cfg).model)  # deterministic
    with torch.no_grad():
        loaded.model.fc.bias[0] += 1e-6  # one float changed
    assert model_digest(cfg, loaded.model).weights != first.weights
    builtin = config_from_dict({})
    digest = model_digest(builtin, load_model(builtin).model)
    from xaicli.models.fashion_mnist import WEIGHTS_PATH

    assert digest.weights == "sha256:" + hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest()

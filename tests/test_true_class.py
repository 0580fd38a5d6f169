"""Targets that do not move with the model (issue 12): the true-class slot, labels CSV files, slot-named
files, accuracy and confusion pairs, and the identity of such runs."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY_CLASSES, save_random_image
from xaicli.config import config_from_dict
from xaicli.engine import Explainer, Slot
from xaicli.methods import TopK, WithClasses, resolve_targets
from xaicli.outputs.manifest import read_rows
from xaicli.runs.outcomes import Accuracy, ImageOutcome, image_outcomes

# --- the engine: one pass, per-image targets ---------------------------------------------------------------


def test_resolve_targets_appends_per_image_classes_and_stands_in_for_unknown():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 4.0, 1.0]])
    got = resolve_targets(logits, WithClasses(TopK(2), torch.tensor([[0], [-1]])))
    assert got.tolist() == [[1, 3, 0], [0, 2, 0]]  # top-2, then the label; -1 -> the top-1 class
    fixed = resolve_targets(logits, WithClasses(torch.tensor([[2]]), torch.tensor([3, 1])))
    assert fixed.tolist() == [[2, 3], [2, 1]]
    assert resolve_targets(logits, WithClasses(None, torch.tensor([-1, 3]))).tolist() == [[1], [3]]


def test_slot_names_round_trip():
    assert Slot("true").name == "true" and Slot.parse("true") == Slot("true")
    assert Slot("true").rank is None and Slot("true").label(TINY_CLASSES) == "true class"
    assert Slot.parse("top2") == Slot("top", 2) and Slot.parse("class3") == Slot("class", 3)


@pytest.mark.parametrize("method", ["gradcam", "saliency", "integrated_gradients"])
def test_true_slot_is_the_labelled_class_in_the_same_call(tiny_config, method):
    """The ``true`` map of an image is exactly the map of a fixed-class run for its label, and adding the
    true slot leaves the top-k maps as they were."""
    base = dict(tiny_config, methods=[{"name": method, "layers": ["features.1.conv"]}
                                      if method == "gradcam" else {"name": method}])
    images = torch.rand((3, 3, 16, 20), generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([2, -1, 0])
    with_true = Explainer(config_from_dict({**base, "targets": {"topk": 2, "true_class": True}}))
    assert [s.name for s in with_true.slots] == ["top1", "top2", "true"]
    out = with_true.explain_batch(images, labels)
    key = next(iter(out.maps))
    top1 = out.predicted.tolist()
    assert out.targets[:, 2].tolist() == [2, top1[1], 0]  # unknown label: the top-1 class stands in
    plain = Explainer(config_from_dict({**base, "targets": {"topk": 2}})).explain_batch(images)
    torch.testing.assert_close(out.maps[key][:, :2], plain.maps[key], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.targets[:, :2], plain.targets)
    for b in (0, 2):
        fixed = Explainer(config_from_dict({**base, "targets": {"classes": [int(labels[b])]}}))
        ref = fixed.explain_batch(images[b:b + 1])
        torch.testing.assert_close(out.maps[key][b, 2], ref.maps[key][0, 0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.probs[b, 2], ref.probs[0, 0])
    only = Explainer(config_from_dict({**base, "targets": {"true_class": True}}))
    assert [s.name for s in only.slots] == ["true"]
    assert only.explain_batch(images, labels).targets[:, 0].tolist() == [2, top1[1], 0]
    with pytest.raises(ValueError, match="pass labels"):
        only.explain_batch(images)


# --- labels: folders and CSV files -------------------------------------------------------------------------


@pytest.fixture
def labelled_tree(image_tree):
    """``image_tree`` plus ``misc/d.png``, an image in a folder that names no class."""
    save_random_image(image_tree / "misc" / "d.png", seed=4)
    return image_tree


def _rows(outdir):
    return [r for r in read_rows(outdir / "manifest.jsonl") if r.ok]


def test_true_class_with_slot_names_from_folder_labels(tmp_path, cli, write_config, tiny_config,
                                                       labelled_tree):
    cfg = dict(tiny_config, targets={"topk": 2, "true_class": True}, output={"names": "slot"})
    out = tmp_path / "out"
    res = cli("explain", labelled_tree, "-c", write_config(tmp_path, cfg), "-o", out, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    rows = _rows(out)
    for name in ("cat/a.png", "cat/b.jpg", "dog/c.png"):
        folder = out / name / "gradcam" / "features.1.conv"
        assert sorted(p.name for p in folder.iterdir()) == ["top1.npy", "top1.png", "top2.npy", "top2.png",
                                                           "true.npy", "true.png"]
        true = next(r for r in rows if r.rel == name and r.slot == "true")
        assert true.target == TINY_CLASSES.index(name.split("/")[0]) and true.label == name.split("/")[0]
        assert true.overlay == f"{name}/gradcam/features.1.conv/true.png" and true.rank is None
    misc = sorted(p.name for p in (out / "misc/d.png/gradcam/features.1.conv").iterdir())
    assert misc == ["top1.npy", "top1.png", "top2.npy", "top2.png"]  # no label: no true map; the rest
    assert summary["unlabelled"] == 1 and summary["unlabelled_images"] == ["misc/d.png"]
    assert sum("misc/d.png" in w and "no known label" in w for w in summary["warnings"]) == 1
    # accuracy: the top-1 row's class against the label, over the three labelled images
    top1 = {r.rel: r.target_name for r in rows if r.slot == "top1"}
    labelled = {r.rel: r.label for r in rows if r.label}
    correct = sum(top1[rel] == label for rel, label in labelled.items())
    assert summary["labelled"] == 3 and summary["accuracy"] == pytest.approx(correct / 3, abs=1e-6)
    wrong = [(label, top1[rel]) for rel, label in labelled.items() if top1[rel] != label]
    assert sum(c["count"] for c in summary["confusion"]) == len(wrong)
    assert all(r.predicted == top1[r.rel] for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["summary"]["accuracy"] == summary["accuracy"] and run["slots"] == ["top1", "top2", "true"]


def test_labels_csv_wins_over_folders_and_accepts_indices(tmp_path, cli, write_config, tiny_config,
                                                          labelled_tree):
    (tmp_path / "labels.csv").write_text("label,image\nfish,cat/a.png\n1,misc/d.png\nbird,elsewhere.png\n",
                                         encoding="utf-8")
    cfg = dict(tiny_config, targets={"true_class": True, "labels": "labels.csv"})
    out = tmp_path / "out"
    res = cli("explain", labelled_tree, "-c", write_config(tmp_path, cfg), "-o", out, "--json")
    assert res.exit_code == 0, res.output
    true = {r.rel: r for r in _rows(out) if r.slot == "true"}
    assert {rel: (r.target, r.label) for rel, r in true.items()} == {
        "cat/a.png": (3, "fish"), "cat/b.jpg": (0, "cat"), "dog/c.png": (1, "dog"), "misc/d.png": (1, "dog")}
    assert (out / "misc/d.png/gradcam/features.1.conv/true_dog.png").is_file()  # names: class (default)
    assert json.loads(res.stdout)["labelled"] == 4 and json.loads(res.stdout)["unlabelled"] == 0


@pytest.mark.parametrize(("text", "needle"), [
    ("image,label\ncat/a.png,cat\ncat/b.jpg,fsh\n", ["row 3", "'fsh'", "'fish'"]),
    ("image,label\ncat/a.png,9\n", ["row 2", "out of range 0..3"]),
    ("name,class\ncat/a.png,cat\n", ["image,label"]),
    ("image,label\ncat/a.png,cat\ncat/a.png,dog\n", ["row 3", "listed again"]),
])
def test_a_bad_labels_file_is_a_usage_error(tmp_path, cli, write_config, tiny_config, image_tree, text,
                                            needle):
    (tmp_path / "labels.csv").write_text(text, encoding="utf-8")
    cfg = dict(tiny_config, targets={"true_class": True, "labels": "labels.csv"})
    res = cli("explain", image_tree, "-c", write_config(tmp_path, cfg), "-o", tmp_path / "out")
    assert res.exit_code == 2
    assert "targets.labels" in res.stderr and all(n in res.stderr for n in needle), res.stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_a_missing_labels_file_is_a_config_error(tmp_path):
    from xaicli.errors import ConfigError

    with pytest.raises(ConfigError, match="targets.labels"):
        config_from_dict({"targets": {"labels": "nope.csv"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="output.names"):
        config_from_dict({"output": {"names": "rank"}})


# --- identity: labels and naming are part of the run -------------------------------------------------------


def test_labels_file_and_naming_are_part_of_the_identity(tmp_path, cli, write_config, tiny_config,
                                                         image_tree):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\ncat/a.png,fish\n", encoding="utf-8")
    cfg = dict(tiny_config, targets={"topk": 1, "true_class": True, "labels": "labels.csv"},
               output={"names": "slot"})
    path = write_config(tmp_path, cfg)
    out = tmp_path / "out"
    assert cli("explain", image_tree, "-c", path, "-o", out).exit_code == 0
    again = cli("explain", image_tree, "-c", path, "-o", out)
    assert again.exit_code == 0 and "3 image(s) already in manifest.jsonl" in again.stderr
    labels.write_text("image,label\ncat/a.png,bird\n", encoding="utf-8")
    changed = cli("explain", image_tree, "-c", path, "-o", out)
    assert changed.exit_code == 2 and "targets" in changed.stderr and "sha256:" in changed.stderr
    labels.write_text("image,label\ncat/a.png,fish\n", encoding="utf-8")
    renamed = cli("explain", image_tree, "-c", write_config(tmp_path, {**cfg, "output": {"names": "class"}},
                                                            "class.yaml"), "-o", out)
    assert renamed.exit_code == 2 and "output.names slot, this run has class" in renamed.stderr
    no_true = cli("explain", image_tree, "-c", write_config(tmp_path, {**cfg, "targets": {"topk": 1}},
                                                            "plain.yaml"), "-o", out)
    assert no_true.exit_code == 2 and "the true class" in no_true.stderr


def test_default_targets_keep_their_fingerprint(tiny_config):
    """Runs without true_class, labels or names: slot hash as before those keys existed (old OUTDIRs
    resume)."""
    from xaicli.outputs.fingerprint import _digest
    from xaicli.runs.identity import run_identity

    identity = run_identity(Explainer(config_from_dict(tiny_config)))
    assert identity.targets == "top-k predicted classes"
    old = _digest({"model": identity.model, "classes": identity.classes, "preprocess": identity.preprocess,
                   "targets": "top-k predicted classes", "version": identity.version})[:12]
    assert identity.run_part() == old


# --- the summary's accuracy and the per-image outcomes -----------------------------------------------------


def test_accuracy_counts_labelled_images_and_orders_confusion_pairs():
    outcomes = [ImageOutcome("a", "a", predicted="cat", label="cat"),
                ImageOutcome("b", "b", predicted="dog", label="cat"),
                ImageOutcome("c", "c", predicted="dog", label="cat"),
                ImageOutcome("d", "d", predicted="cat", label="bird"),
                ImageOutcome("e", "e", predicted="cat", label=None),
                ImageOutcome("f", "f", error="cannot read")]
    acc = Accuracy.of(outcomes)
    assert (acc.labelled, acc.correct) == (4, 1) and acc.value == 0.25
    assert acc.confusion == [("cat", "dog", 2), ("bird", "cat", 1)]
    assert acc.to_dict()["confusion"][0] == {"label": "cat", "predicted": "dog", "count": 2}
    assert Accuracy.of([]).value is None and Accuracy.of([]).line() is None


def test_outcomes_take_the_last_word_and_fall_back_to_the_top1_row():
    from xaicli.outputs.manifest import ManifestRow

    rows = [ManifestRow("x/a.png", "a.png", slot="top1", target_name="dog", label="cat"),  # no 'predicted'
            ManifestRow.failed("x/b.png", "old error", "b.png"),
            ManifestRow("x/b.png", "b.png", slot="top1", target_name="cat", label="cat", predicted="cat"),
            ManifestRow("x/c.png", "c.png", slot="top1", target_name="cat", predicted="cat"),
            ManifestRow.failed("x/c.png", "unreadable now", "c.png")]
    got = {o.rel: o for o in image_outcomes(rows, ["a.png", "b.png", "c.png", "absent.png"])}
    assert got["a.png"].predicted == "dog" and got["a.png"].misclassified
    assert got["b.png"].ok and not got["b.png"].misclassified
    assert got["c.png"].error == "unreadable now" and "absent.png" not in got

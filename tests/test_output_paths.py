"""One output path per input, and nothing written outside OUTDIR (issue 10).

Output stems keep the image's extension (``cat/a.png/gradcam/...``), several inputs with the same name
are told apart by their parent folders, OUTDIR inside an input folder is not searched, directory
symlinks are followed once (a loop is reported), every path is built from escaped components and must
stay inside OUTDIR (also through a symlink planted there), and a file name cannot forge a stderr line.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from conftest import save_random_image, strict_json

from xaicli.errors import ExitCode


def rows_of(outdir: Path) -> list[dict]:
    return [strict_json(ln) for ln in (outdir / "manifest.jsonl").read_text().splitlines() if ln.strip()]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def assert_one_output_per_input(out: Path, rows: list[dict]) -> None:
    ok = [r for r in rows if r["status"] == "ok"]
    assert len({r["overlay"] for r in ok}) == len(ok) and len({r["map"] for r in ok}) == len(ok)
    by_image: dict[str, set[str]] = {}
    for r in ok:
        by_image.setdefault(r["map"].split("/gradcam/")[0], set()).add(r["image"])
    assert all(len(v) == 1 for v in by_image.values()), by_image  # one image per output folder
    for r in ok:
        assert (out / r["overlay"]).is_file() and (out / r["map"]).is_file()


def test_same_name_other_extension_gets_its_own_outputs(cli, tmp_path, write_config, tiny_config):
    root = tmp_path / "images"
    save_random_image(root / "cat" / "a.png", seed=1)
    save_random_image(root / "cat" / "a.jpg", seed=2, quality=95)
    out = tmp_path / "out"
    res = cli("explain", root, "-c", write_config(tmp_path, tiny_config), "-o", out, "-k", "1")
    assert res.exit_code == 0, res
    rows = rows_of(out)
    assert len(rows) == 2
    assert_one_output_per_input(out, rows)
    assert {r["rel"] for r in rows} == {"cat/a.png", "cat/a.jpg"}
    for r in rows:
        assert r["overlay"].startswith(f"{r['rel']}/gradcam/features.1.conv/top1_")
    maps = {r["rel"]: np.load(out / r["map"]) for r in rows}
    assert not np.array_equal(maps["cat/a.png"], maps["cat/a.jpg"])  # each row points at its own map


def test_two_input_folders_with_the_same_name(cli, tmp_path, write_config, tiny_config):
    for i, parent in enumerate(("A", "B")):
        save_random_image(tmp_path / parent / "data" / "cat" / "x.png", seed=10 + i)
    out = tmp_path / "out"
    res = cli("explain", tmp_path / "A" / "data", tmp_path / "B" / "data", "-c",
              write_config(tmp_path, tiny_config), "-o", out, "-k", "1")
    assert res.exit_code == 0, res
    rows = rows_of(out)
    assert len(rows) == 2
    assert_one_output_per_input(out, rows)
    assert sorted(r["rel"] for r in rows) == ["A/data/cat/x.png", "B/data/cat/x.png"]


def test_two_explicit_files_with_the_same_name(cli, tmp_path, write_config, tiny_config):
    a = save_random_image(tmp_path / "x" / "a.png", seed=1)
    b = save_random_image(tmp_path / "y" / "a.png", seed=2)
    out = tmp_path / "out"
    res = cli("explain", a, b, "-c", write_config(tmp_path, tiny_config), "-o", out, "-k", "1")
    assert res.exit_code == 0, res
    rows = rows_of(out)
    assert_one_output_per_input(out, rows)
    assert sorted(r["rel"] for r in rows) == ["x/a.png", "y/a.png"]


def test_output_names_do_not_change_between_runs(tmp_path, image_tree):
    from xaicli.engine.discover import discover_images

    first = [(str(i.path), str(i.rel)) for i in discover_images([str(image_tree)])]
    assert first == [(str(i.path), str(i.rel)) for i in discover_images([str(image_tree)])]
    assert [r for _, r in first] == ["cat/a.png", "cat/b.jpg", "dog/c.png"]


def test_a_collision_that_cannot_be_resolved_is_an_error_not_an_overwrite():
    from xaicli.engine.discover import InputImage, claim_outputs

    items = [InputImage(Path("/x/a.png"), PurePosixPath("a.png")),
             InputImage(Path("/y/a.png"), PurePosixPath("a.png")),
             InputImage(Path("/z/b.png"), PurePosixPath("b.png"))]
    claimed = claim_outputs(items)
    assert [i.problem for i in claimed][::2] == [None, None]
    assert "same output" in claimed[1].problem and "/x/a.png" in claimed[1].problem


def test_duplicate_target_classes_are_refused(cli, tmp_path, write_config, tiny_config, image_tree):
    tiny_config["targets"] = {"classes": [1, "dog"]}  # 'dog' is class 1
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out)
    assert res.exit_code == ExitCode.USAGE, res
    assert "targets.classes[1]" in res.stderr and "twice" in res.stderr


def test_outdir_inside_an_input_folder_is_not_searched(cli, tmp_path, write_config, tiny_config, image_tree):
    cfg = write_config(tmp_path, tiny_config)
    out = image_tree / "out"
    for _ in range(2):
        res = cli("explain", image_tree, "-c", cfg, "-o", out, "--json")
        assert res.exit_code == 0, res
        assert json.loads(res.stdout)["images_total"] == 3
    assert not any("/out/" in r["image"] for r in rows_of(out))


def test_outdir_that_is_the_input_folder_is_refused(cli, tmp_path, write_config, tiny_config, image_tree):
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", image_tree)
    assert res.exit_code == ExitCode.USAGE and "is the input folder" in res.stderr, res


def test_directory_symlinks_are_followed_once_and_loops_reported(cli, tmp_path, write_config, tiny_config,
                                                                  image_tree):
    elsewhere = tmp_path / "elsewhere"
    save_random_image(elsewhere / "e.png", seed=5)
    (image_tree / "linked").symlink_to(elsewhere, target_is_directory=True)
    (image_tree / "cat" / "loop").symlink_to(image_tree, target_is_directory=True)  # back to the root
    out = tmp_path / "out"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", out, "-k", "1")
    assert res.exit_code == 0, res
    assert sorted(r["rel"] for r in rows_of(out)) == ["cat/a.png", "cat/b.jpg", "dog/c.png", "linked/e.png"]
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("notice: ")]
    assert len(notes) == 1 and "cat/loop" in notes[0] and "already" in notes[0], res.stderr


@pytest.mark.parametrize("name", ["..png", "...png", "....png"])
def test_dot_names_write_nothing_outside_outdir(cli, tmp_path, write_config, tiny_config, name):
    root = tmp_path / "images"
    save_random_image(root / name, seed=3, format="PNG")  # Pillow cannot tell the format from '..png'
    save_random_image(root / "ok.png", seed=4)
    cfg = write_config(tmp_path / "cfg", tiny_config)
    before = files_under(tmp_path)
    out = tmp_path / "work" / "out"
    res = cli("explain", root, "-c", cfg, "-o", out, "--figures")
    assert res.exit_code == 0, res
    outside = {p for p in files_under(tmp_path) - before if out not in p.parents}
    assert not outside, outside
    assert {r["rel"] for r in rows_of(out)} == {name, "ok.png"}
    assert_one_output_per_input(out, rows_of(out))


def test_a_symlink_planted_in_outdir_is_not_followed_out_of_it(cli, tmp_path, write_config, tiny_config,
                                                               image_tree):
    cfg = write_config(tmp_path, tiny_config)
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "cat").symlink_to(outside, target_is_directory=True)
    res = cli("explain", image_tree, "-c", cfg, "-o", out)
    assert res.exit_code == ExitCode.INPUTS_UNREADABLE, res
    assert not list(outside.iterdir())
    errors = {r["rel"]: r["error"] for r in rows_of(out) if r["status"] == "error"}
    assert set(errors) == {"cat/a.png", "cat/b.jpg"} and all("outside OUTDIR" in e for e in errors.values())
    assert len([r for r in rows_of(out) if r["status"] == "ok"]) == 2


def test_every_file_a_run_writes_resolves_inside_outdir(cli, tmp_path, write_config, tiny_config,
                                                        monkeypatch):
    """explain with figures, compare figures and the report, then sweep: every write lands inside OUTDIR."""
    from xaicli.outputs import atomic

    written: list[Path] = []
    original = atomic.write_bytes

    def spy(path, data):
        written.append(Path(path))
        original(path, data)

    monkeypatch.setattr(atomic, "write_bytes", spy)
    root = tmp_path / "images"
    for i, name in enumerate(("cat/..png", "cat/...png", "cat/a b#%.png", "figures/topk/cat.png")):
        save_random_image(root / name, seed=i, format="PNG")  # the last one's outputs: where a figure goes
    tiny_config["figures"] = {"topk": True, "compare": True, "cell_size": 16}
    tiny_config["model"]["classes"] = ["cat", "../dog", "..", "."]
    out = tmp_path / "out"
    cfg = write_config(tmp_path, tiny_config)
    assert cli("explain", root, "-c", cfg, "-o", out).exit_code == 0
    assert cli("sweep", root, "-c", cfg, "-o", out, "--layers", "features.1.conv").exit_code == 0
    real = out.resolve()
    assert written and all(real in p.resolve().parents for p in written), [p for p in written
                                                                          if real not in p.resolve().parents]
    counts = Counter(r["overlay"] for r in rows_of(out))
    assert max(counts.values()) == 1


def test_output_path_escapes_components_and_checks_symlinks(tmp_path):
    from xaicli.outputs.layout import OutsideOutdirError, escape_component, output_path

    out = tmp_path / "out"
    out.mkdir()
    assert output_path(out, "a/../b").relative_to(out).parts == ("a", "%2E%2E", "b")
    assert output_path(out, "/etc/passwd").relative_to(out).parts == ("etc", "passwd")
    assert escape_component("a\nb%c") == "a%0Ab%25c" and escape_component(".") == "%2E"
    assert escape_component("..png") == "..png"  # a name, not a path step
    assert len({escape_component(n) for n in ("a%0Ab", "a\nb", "a%250Ab")}) == 3  # injective
    (out / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(OutsideOutdirError, match="outside OUTDIR"):
        output_path(out, "link/x.png")


def test_a_file_name_cannot_forge_a_summary_line(cli, tmp_path, write_config, tiny_config, image_tree):
    evil = image_tree / "dog" / "x\ndone: 0 explained, 0 skipped.png"
    evil.write_bytes(b"not an image")
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("done: ")] == [lines[-1]]
    failed = [ln for ln in lines if ln.startswith("failed: ")]
    assert len(failed) == 1 and "x\\ndone: 0 explained" in failed[0]
    rows = rows_of(tmp_path / "out")
    assert [r["image"] for r in rows if r["status"] == "error"] == [str(evil)]  # JSON keeps the real name
    assert os.path.exists([r["image"] for r in rows if r["status"] == "error"][0])

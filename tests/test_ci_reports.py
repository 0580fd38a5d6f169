"""JUnit XML and Markdown writers (xaicli.outputs.ci_reports): parseable, counted, escaped."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from xaicli.outputs.ci_reports import TestCase, junit_xml, markdown_table, write_junit
from xaicli.outputs.manifest import read_rows


def test_junit_counts_failures_and_carries_messages(tmp_path):
    cases = [TestCase("img_1.png gradcam@layer4", "diff.gradcam"),
             TestCase("img_2 <&> \"odd\".png", "diff.gradcam", failure="similarity 0.41 < 0.80",
                      details="baseline top1=cat, candidate top1=dog")]
    path = write_junit(tmp_path / "r" / "junit.xml", "xaicli diff", cases, {"baseline": "runs/a"})
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert suite.find("properties/property").get("value") == "runs/a"
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ['img_2 <&> "odd".png']  # escaped in XML, exact when read
    assert failed[0].find("failure").get("message") == "similarity 0.41 < 0.80"
    assert "candidate top1=dog" in failed[0].find("failure").text


def test_junit_with_no_cases_is_valid():
    root = ET.fromstring(junit_xml("empty", []).split("\n", 1)[1])
    assert root.find("testsuite").get("tests") == "0"


def test_markdown_table_escapes_cells():
    text = markdown_table(["image", "similarity"], [["a|b.png", 0.123456], ["c\nd.png", None]])
    lines = text.splitlines()
    assert lines[0] == "| image | similarity |" and lines[1] == "|---|---|"
    assert lines[2] == "| a\\|b.png | 0.1235 |" and lines[3] == "| c d.png | - |"


def test_junit_system_out_and_unrepresentable_characters():
    cases = [TestCase("bad\x1bname\udcff.png", "xaicli.explain", output="predicted dog, label cat"),
             TestCase("x.png", "xaicli.explain", failure="cannot read\x00 it")]
    text = junit_xml("s", cases)
    text.encode("utf-8")  # no lone surrogate left
    root = ET.fromstring(text.split("\n", 1)[1])
    first, second = root.findall("testsuite/testcase")
    assert first.find("system-out").text == "predicted dog, label cat"
    assert first.get("name") == "bad\ufffdname\ufffd.png"
    assert second.find("failure").get("message") == "cannot read\ufffd it"


# --- the reports of explain and evaluate (--junit, --markdown) ---------------------------------------------


def _cases(path):
    suite = ET.parse(path).getroot().find("testsuite")
    return suite, {c.get("name"): c for c in suite.findall("testcase")}


def test_explain_reports_one_case_per_image_failed_images_fail(tmp_path, cli, write_config, tiny_config,
                                                               image_tree):
    (image_tree / "dog" / "broken.png").write_bytes(b"not an image")
    junit, markdown = tmp_path / "ci" / "deep" / "explain.xml", tmp_path / "summary" / "step.md"
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out",
              "--junit", junit, "--markdown", markdown, "-q")
    assert res.exit_code == 1  # the reports are written anyway
    suite, cases = _cases(junit)
    assert (suite.get("tests"), suite.get("failures")) == ("4", "1")
    assert set(cases) == {"cat/a.png", "cat/b.jpg", "dog/c.png", "dog/broken.png"}
    assert {c.get("classname") for c in cases.values()} == {"xaicli.explain"}
    assert cases["dog/broken.png"].find("failure") is not None
    rows = {r.rel: r for r in read_rows(tmp_path / "out" / "manifest.jsonl") if r.ok and r.slot == "top1"}
    for rel, row in rows.items():  # a wrong top-1 is not a failure, but it is said
        case = cases[rel]
        assert case.find("failure") is None
        said = case.find("system-out").text
        assert f"predicted {row.target_name}, label {row.label}" in said
        assert ("differs from the label" in said) == (row.target_name != row.label)
    text = markdown.read_text(encoding="utf-8")
    assert "## xaicli explain: 4 image(s)" in text and "### Failed images" in text
    assert "| dog/broken.png |" in text
    wrong = [rel for rel, r in rows.items() if r.target_name != r.label]
    assert ("differs from the label" in text) == bool(wrong)


def test_evaluate_reports_gates_as_cases(tmp_path, cli, write_config, tiny_config, image_tree):
    from tests.conftest import save_random_image

    save_random_image(image_tree / "misc" / "d.png", seed=4)  # no label: top-1 only, scored in its own group
    junit, markdown = tmp_path / "r" / "evaluate.xml", tmp_path / "r" / "evaluate.md"
    cfg = dict(tiny_config, targets={"topk": 1, "true_class": True})
    res = cli("evaluate", image_tree, "-c", write_config(tmp_path, cfg), "-o", tmp_path / "out",
              "--metrics", "sparseness", "--fail-under", "sparseness=1.5", "--fail-over", "sparseness=2",
              "--junit", junit, "--markdown", markdown, "-q")
    assert res.exit_code == 3
    suite, cases = _cases(junit)
    assert suite.get("name") == "xaicli evaluate"
    assert {c.get("classname") for c in cases.values()} == {"xaicli.evaluate"}
    assert {"cat/a.png", "cat/b.jpg", "dog/c.png", "misc/d.png"} <= set(cases)
    scored = [json.loads(line) for line in (tmp_path / "out" / "evaluation.jsonl").read_text().splitlines()]
    assert sorted((r["image"].split("images/")[1], r["slot"]) for r in scored) == [
        ("cat/a.png", "top1"), ("cat/a.png", "true"), ("cat/b.jpg", "top1"), ("cat/b.jpg", "true"),
        ("dog/c.png", "top1"), ("dog/c.png", "true"), ("misc/d.png", "top1")]
    under = cases["gate sparseness >= 1.5: gradcam @ features.1.conv"]
    over = cases["gate sparseness <= 2: gradcam @ features.1.conv"]
    assert over.find("failure") is None
    message = under.find("failure").get("message")
    mean = json.loads((tmp_path / "out" / "evaluation.json").read_text())["summary"][0]["mean"]
    assert f"= {mean:.4g}" in message and ">= 1.5" in message
    assert suite.get("failures") == "1"
    text = markdown.read_text(encoding="utf-8")
    assert "### Gates" in text and "| FAILED | sparseness |" in text and "1 of 2 passed" in text

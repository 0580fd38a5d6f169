"""JUnit XML and Markdown writers (xaicli.outputs.ci_reports): parseable, counted, escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from xaicli.outputs.ci_reports import TestCase, junit_xml, markdown_table, write_junit


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

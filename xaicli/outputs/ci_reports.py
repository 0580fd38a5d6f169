"""Reports that CI systems display natively: JUnit XML (test tabs of GitHub, GitLab, Jenkins, Azure) and a
Markdown summary (GitHub's ``$GITHUB_STEP_SUMMARY``, GitLab merge-request notes).

A run becomes a test suite: one test case per checked thing (an image of ``explain``, a matched row of
``diff``, a gate), failed when it failed, with the numbers in the failure message so the CI display
alone says what went wrong. These writers only format and write; what a case *is* is decided by the
use case (``xaicli.runs``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xaicli.outputs import atomic


@dataclass(frozen=True)
class TestCase:
    """One JUnit test case. ``failure``: the one-line reason when it failed (None: passed)."""

    __test__ = False  # not a pytest test class

    name: str
    classname: str
    failure: str | None = None
    details: str | None = None  # more text for the failure body (e.g. the numbers, the paths)
    seconds: float = 0.0
    skipped: str | None = None  # the reason a case was not checked (e.g. only one run has it)
    output: str | None = None  # the case's <system-out>: what to know about a passed case too


_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    """``value`` without the characters XML 1.0 cannot hold (control characters; the lone surrogates of a
    name that is not UTF-8)."""
    return _NOT_XML.sub("\ufffd", value)


def junit_xml(suite: str, cases: Sequence[TestCase], properties: dict[str, str] | None = None) -> str:
    """A JUnit XML document with one ``<testsuite>`` (the schema every CI display reads)."""
    failures = sum(1 for c in cases if c.failure is not None)
    skipped = sum(1 for c in cases if c.failure is None and c.skipped is not None)
    root = ET.Element("testsuites", name="xaicli", tests=str(len(cases)), failures=str(failures))
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                         errors="0", skipped=str(skipped), time=f"{sum(c.seconds for c in cases):.3f}")
    if properties:
        props = ET.SubElement(node, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=_text(key), value=_text(str(value)))
    for case in cases:
        element = ET.SubElement(node, "testcase", name=_text(case.name), classname=_text(case.classname),
                                time=f"{case.seconds:.3f}")
        if case.failure is not None:
            failure = ET.SubElement(element, "failure", message=_text(case.failure), type="xaicli")
            failure.text = _text(case.details or case.failure)
        elif case.skipped is not None:
            ET.SubElement(element, "skipped", message=_text(case.skipped))
        if case.output:
            ET.SubElement(element, "system-out").text = _text(case.output)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, suite: str, cases: Sequence[TestCase],
                properties: dict[str, str] | None = None) -> Path:
    atomic.write_text(path, junit_xml(suite, cases, properties))
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` and newlines in cells are escaped so rows stay rows."""

    def cell(value: object) -> str:
        text = "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)

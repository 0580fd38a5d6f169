"""The CI examples in docs/ci/ really run: their shell steps are taken from the YAML files as written and
run against the bundled demo model - an unchanged candidate passes (exit 0), a candidate with its last
conv block re-initialised fails the diff step with exit 3 and a JUnit file naming the failing images.

Only the install steps are left out (this environment is installed already); ``xaicli`` is this
checkout's ``python -m xaicli``, and ``$GITHUB_STEP_SUMMARY`` a file of the test's own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, xaicli_env

pytestmark = pytest.mark.slow  # four demo-model runs per workflow (~1 min on 2 cores)

DOCS = REPO_ROOT / "docs" / "ci"
SHIM = 'xaicli() { "$XAICLI_PYTHON" -m xaicli "$@"; }\n'


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    """Two classes of the sample images (10 images): the golden set."""
    root = tmp_path_factory.mktemp("golden") / "images"
    for cls in ("Bag", "Sandal"):
        shutil.copytree(REPO_ROOT / "sample_images" / cls, root / cls)
    return root


@pytest.fixture(scope="module")
def changed_config(tmp_path_factory) -> Path:
    """The demo model with ``features.2`` re-initialised, written by the documented helper."""
    folder = tmp_path_factory.mktemp("changed")
    subprocess.run([sys.executable, "-m", "xaicli.demo.reinit", "-o", str(folder / "changed.pt")], check=True,
                   env=xaicli_env(), capture_output=True)
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "fashion_mnist.yaml").read_text(encoding="utf-8"))
    cfg["model"]["checkpoint"] = "changed.pt"  # relative to the config file
    (folder / "changed.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return folder / "changed.yaml"


def run_steps(steps: list[tuple[str, str, bool]], env: dict[str, str], cwd: Path) -> dict[str, int]:
    """Run (name, script, always) steps in order as a CI runner does: after a failure only ``always``
    steps run. Returns each step's exit code."""
    codes: dict[str, int] = {}
    failed = False
    for name, script, always in steps:
        if failed and not always:
            continue
        done = subprocess.run(["bash", "-e", "-c", SHIM + script], cwd=cwd, env=env, capture_output=True,
                              text=True)
        codes[name] = done.returncode
        failed = failed or done.returncode != 0
    return codes


def github_steps() -> tuple[dict[str, str], list[tuple[str, str, bool]]]:
    wf = yaml.safe_load((DOCS / "github-actions.yml").read_text(encoding="utf-8"))
    job = next(iter(wf["jobs"].values()))
    steps = [(s.get("name", s["run"][:30]), s["run"], "always()" in str(s.get("if", "")))
             for s in job["steps"] if "run" in s and not s.get("name", "").startswith("Install")]
    return {k: str(v) for k, v in wf["env"].items()}, steps


def gitlab_steps() -> tuple[dict[str, str], list[tuple[str, str, bool]]]:
    job = yaml.safe_load((DOCS / "gitlab-ci.yml").read_text(encoding="utf-8"))["explanations"]
    steps = [(line[:40], line, False) for line in job["script"] if not line.startswith("pip ")]
    return {k: str(v) for k, v in job["variables"].items()}, steps


def workspace(tmp_path: Path, golden: Path, candidate: Path, variables: dict[str, str]) -> dict[str, str]:
    """The workflow's variables, pointed at the test's golden set and candidate config."""
    return xaicli_env(**{**variables, "XAICLI_PYTHON": sys.executable, "GOLDEN": str(golden),
                         "BASELINE_CONFIG": str(REPO_ROOT / "configs" / "fashion_mnist.yaml"),
                         "CANDIDATE_CONFIG": str(candidate),
                         "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md")})


@pytest.mark.parametrize("ci", ["github", "gitlab"])
def test_workflow_passes_an_unchanged_model_and_fails_a_changed_one(tmp_path, golden, changed_config, ci):
    variables, steps = github_steps() if ci == "github" else gitlab_steps()
    assert any("xaicli diff" in script for _, script, _ in steps)
    # unchanged: the candidate is the released model
    same = tmp_path / "same"
    same.mkdir()
    codes = run_steps(steps, workspace(same, golden, REPO_ROOT / "configs" / "fashion_mnist.yaml", variables),
                      same)
    assert set(codes.values()) == {0}, codes
    if ci == "github":
        assert (same / "step_summary.md").read_text(encoding="utf-8").startswith("## xaicli diff: passed")

    # changed: the diff step fails with exit 3, the summary and the report are still written
    changed = tmp_path / "changed"
    changed.mkdir()
    codes = run_steps(steps, workspace(changed, golden, changed_config, variables), changed)
    diff_step = next(name for name, script, _ in steps if "xaicli diff" in script)
    assert codes[diff_step] == 3, codes
    assert all(code == 0 for name, code in codes.items() if name != diff_step)
    suite = ET.parse(changed / "runs" / "diff" / "junit.xml").getroot().find("testsuite")
    failing = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert any(name.startswith(("Bag/", "Sandal/")) for name in failing)
    assert (changed / "runs" / "diff" / "index.html").is_file()
    if ci == "github":
        assert "FAILED (exit 3)" in (changed / "step_summary.md").read_text(encoding="utf-8")

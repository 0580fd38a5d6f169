"""The README's method and metric tables are generated from the registries (`python -m xaicli.docs
--write`); keep them equal."""

from pathlib import Path

from xaicli.docs import methods_table, metrics_table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_method_table_matches_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert methods_table() in readme, "README method table is stale: run `python -m xaicli.docs --write`"


def test_readme_metric_table_matches_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert metrics_table() in readme, "README metric table is stale: run `python -m xaicli.docs --write`"

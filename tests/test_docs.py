"""The README's method table is generated from the registry (`python -m xaicli.docs`); keep them equal."""

from pathlib import Path

from xaicli.docs import methods_table

ROOT = Path(__file__).resolve().parent.parent


def test_readme_method_table_matches_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert methods_table() in readme, "README method table is stale: run `python -m xaicli.docs`"

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


def test_readme_config_reference_lists_every_key():
    """Every key of the config schema appears in the README's config reference (a new key is documented)."""
    import dataclasses
    import re

    from xaicli.config import Config

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Config reference", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    documented = set(re.findall(r"^\s*#?\s*(?:- )?(\w+):", block, flags=re.M))
    missing = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            if f.name not in documented:
                missing.append(prefix + f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            inner = default[0] if isinstance(default, list) and default else default
            if dataclasses.is_dataclass(inner):
                walk(type(inner), f"{prefix}{f.name}.")

    walk(Config, "")
    assert not missing, f"README config reference misses {missing}"

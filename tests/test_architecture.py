"""The package's layers: imports only point down, so a use case, a method or a metric has one home.

    __main__ -> cli, docs, demo   (entry points)
      -> runs               (use cases: explain, sweep, ...; each one short function)
      -> engine | render | outputs | metrics   (the explainer and its loop | pixels | files | scores;
                                                 never each other)
      -> methods            (attribution methods behind the registry)
      -> models             (loading models, layers)
      -> config | errors | naming    (the schema, typed errors, file-safe names)

Every ``import`` in ``xaicli/`` is read from the source (also the ones inside functions, which the lazy
imports of the CLI use), so a shortcut up or sideways fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xaicli"

#: package -> tier; a module may import its own package and packages of a strictly lower tier
TIERS = {
    "__main__": 7,  # python -m xaicli: the CLI
    "cli": 6, "bench": 6, "docs": 6, "demo": 6,
    "runs": 5,
    "engine": 4, "render": 4, "outputs": 4, "metrics": 4,
    "methods": 3,
    "models": 2,
    "config": 1, "errors": 0, "naming": 0, "timing": 0, "": 0,  # "" = the package root (__version__)
}


def _imports() -> list[tuple[str, str, int]]:
    """(importing module, imported xaicli module, line) for every import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        module = ".".join(("xaicli", *parts)).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(module, n, node.lineno) for n in names if n == "xaicli" or n.startswith("xaicli.")]
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_tier():
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if p.suffix == ".py" or (p / "__init__.py").is_file()}
    packages = {_package(m) for m, _, _ in _imports()} | top
    packages.discard("__init__")
    assert packages <= set(TIERS), f"give these a tier in TIERS: {sorted(packages - set(TIERS))}"


def test_imports_only_point_down():
    wrong = []
    for module, target, line in _imports():
        src, dst = _package(module), _package(target)
        if src != dst and TIERS[dst] >= TIERS[src]:
            wrong.append(f"{module}:{line} imports {target} (tier {TIERS[src]} -> {TIERS[dst]})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package, forbidden", [
    ("engine", {"torchvision.io", "PIL.ImageDraw"}),  # the engine never renders or writes outputs
    ("render", {"os", "tempfile", "shutil"}),  # render is pixels only: no file system
])
def test_layers_keep_to_their_job(package: str, forbidden: set[str]):
    used = set()
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                used |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                used.add(node.module)
    assert not used & forbidden, f"{package} imports {sorted(used & forbidden)}"

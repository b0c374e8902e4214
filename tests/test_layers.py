"""The import rule of helpers' layers (see helpers/__init__.py), read from the source, not by importing it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import helpers

PACKAGE = Path(helpers.__file__).parent


def rank_of_layers(layers) -> dict[str, int]:
    """Each layer's height: side-by-side layers (a tuple in LAYERS) share one."""
    return {name: height for height, level in enumerate(layers)
            for name in (level if isinstance(level, tuple) else (level,))}


def imports_of(package: Path, name: str = "helpers") -> dict[str, set[str]]:
    """Every module of ``package`` and the package modules it imports, at the top or inside a function."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        module = ".".join((name, *parts)).removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: against the importer's package (a package's __init__ is its own)
                    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    base = package_parts[: len(package_parts) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                if origin == name or origin.startswith(name + "."):
                    # `from helpers.eval import plots` imports the module helpers.eval.plots
                    targets |= {f"{origin}.{alias.name}" if _is_module(package, name, f"{origin}.{alias.name}")
                                else origin for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith(name + ".")}
        found[module] = {t for t in targets if t != module}
    return found


def _is_module(package: Path, name: str, dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:]) if dotted != name else Path()
    return (package / relative).with_suffix(".py").is_file() or (package / relative / "__init__.py").is_file()


def layer_of(module: str) -> str | None:
    """The sub-package a module belongs to; None for the modules at the top (the CLI, the root API)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def layer_violations(imports: dict[str, set[str]], layers) -> list[str]:
    """Imports that reach beside or above the importer's layer."""
    rank = rank_of_layers(layers)
    wrong = []
    for module, targets in imports.items():
        own = layer_of(module)
        if own is None:
            continue
        assert own in rank, f"{module} is in no layer of helpers.LAYERS"
        for target in sorted(targets):
            other = layer_of(target)
            if other is None and target.count(".") == 0:
                wrong.append(f"{module} imports the package root {target}")
            elif other is None:
                wrong.append(f"{module} imports {target}, above every layer")
            elif other != own and rank[other] >= rank[own]:
                wrong.append(f"{module} ({own}) imports {target} ({other})")
    return wrong


def circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Import circles among modules (each found once, from a depth-first search)."""
    found, state = [], {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(imports.get(module, ())):
            if state.get(target) == "open":
                found.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(imports):
        if module not in state:
            visit(module, [module])
    return found


def test_no_layer_imports_from_beside_or_above():
    assert layer_violations(imports_of(PACKAGE), helpers.LAYERS) == []


def test_no_import_circles():
    imports = {m: {t for t in ts if layer_of(t) is not None} for m, ts in imports_of(PACKAGE).items()}
    assert circles(imports) == []


def test_every_sub_package_is_a_layer():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(rank_of_layers(helpers.LAYERS))


@pytest.fixture
def toy(tmp_path):
    """A small package with the same layer names, for planting mistakes."""
    root = tmp_path / "helpers"
    for layer in ("core", "data", "model", "eval", "training", "handin", "tools"):
        (root / layer).mkdir(parents=True)
        (root / layer / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "core" / "io.py").write_text("import os\n")
    (root / "data" / "layout.py").write_text("from helpers.core.io import os\n")
    (root / "training" / "engine.py").write_text("def run():\n    from helpers.data import layout\n")
    return root


def test_the_checks_catch_an_upward_import_a_sideways_one_and_a_circle(toy):
    assert layer_violations(imports_of(toy), helpers.LAYERS) == []
    assert circles(imports_of(toy)) == []
    (toy / "data" / "layout.py").write_text("def later():\n    from helpers.training.engine import run\n")
    (toy / "model" / "resnet.py").write_text("from ..data.layout import later\n")
    (toy / "core" / "io.py").write_text("from helpers.core import config\n")
    (toy / "core" / "config.py").write_text("from . import io\n")
    wrong = layer_violations(imports_of(toy), helpers.LAYERS)
    assert wrong == ["helpers.data.layout (data) imports helpers.training.engine (training)",
                     "helpers.model.resnet (model) imports helpers.data.layout (data)"]
    assert ["helpers.core.config", "helpers.core.io", "helpers.core.config"] in circles(imports_of(toy))

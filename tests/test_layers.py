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


def modules_of(package: Path, name: str = "helpers"):
    """Each module of ``package``: its dotted name, its file and its parsed source."""
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        yield ".".join((name, *parts)).removesuffix(".__init__"), path, ast.parse(path.read_text(), str(path))


def origin_of(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads; a relative one against the importer's package (a
    package's __init__ is its own)."""
    if not node.level:
        return node.module or ""
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package_parts[: len(package_parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(package: Path, name: str = "helpers") -> dict[str, set[str]]:
    """Every module of ``package`` and the package modules it imports, at the top or inside a function."""
    found = {}
    for module, path, tree in modules_of(package, name):
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                origin = origin_of(module, path, node)
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


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(package: Path, name: str = "helpers") -> list[str]:
    """Each place a module reads another module's private name: ``from x import _y``, or ``x._y`` where ``x``
    was imported from the package (a module, or a class or function of one)."""
    wrong = []
    for module, path, tree in modules_of(package, name):
        imported = {}  # a local name -> the package's module or object it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                origin = origin_of(module, path, node)
                if origin == name or origin.startswith(name + "."):
                    for alias in node.names:
                        if is_private(alias.name) and origin != module:
                            wrong.append(f"{module} imports {origin}.{alias.name}")
                        imported[alias.asname or alias.name] = f"{origin}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == name or alias.name.startswith(name + "."):
                        # `import helpers.a.b` binds `helpers`; `import helpers.a.b as b` binds the module
                        imported[alias.asname or name] = alias.name if alias.asname else name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                owner = _named(node.value, imported)
                if owner is not None and owner != module:
                    wrong.append(f"{module} uses {owner}.{node.attr}")
    return wrong


def _named(node: ast.expr, imported: dict[str, str]) -> str | None:
    """What of the package an expression such as ``bench`` or ``helpers.tools.bench`` names, when imported."""
    if isinstance(node, ast.Name):
        return imported.get(node.id)
    if isinstance(node, ast.Attribute) and not is_private(node.attr):
        owner = _named(node.value, imported)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


def test_no_layer_imports_from_beside_or_above():
    assert layer_violations(imports_of(PACKAGE), helpers.LAYERS) == []


def test_no_import_circles():
    imports = {m: {t for t in ts if layer_of(t) is not None} for m, ts in imports_of(PACKAGE).items()}
    assert circles(imports) == []


def test_no_module_reads_another_modules_private_names():
    assert private_uses(PACKAGE) == []


def test_every_sub_package_is_a_layer():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(rank_of_layers(helpers.LAYERS))


@pytest.fixture
def toy(tmp_path):
    """A small package with the same layer names, for planting mistakes."""
    root = tmp_path / "helpers"
    for layer in ("core", "data", "model", "runtime", "eval", "training", "handin", "tools"):
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


def test_the_runtime_layer_sits_between_data_and_model_and_eval(toy):
    (toy / "model" / "resnet.py").write_text("import os\n")
    (toy / "runtime" / "device.py").write_text("from helpers.model import resnet\nfrom helpers.data import layout\n")
    (toy / "eval" / "evaluation.py").write_text("from helpers.runtime.device import resnet\n")
    assert layer_violations(imports_of(toy), helpers.LAYERS) == []  # runtime reads data and model; eval reads it
    (toy / "model" / "resnet.py").write_text("def later():\n    from helpers.runtime import device\n")
    (toy / "data" / "layout.py").write_text("from ..runtime.device import resnet\n")
    (toy / "runtime" / "device.py").write_text("from helpers.eval import evaluation\n")
    assert layer_violations(imports_of(toy), helpers.LAYERS) == [
        "helpers.data.layout (data) imports helpers.runtime.device (runtime)",
        "helpers.model.resnet (model) imports helpers.runtime.device (runtime)",
        "helpers.runtime.device (runtime) imports helpers.eval.evaluation (eval)"]


def test_the_check_catches_a_private_name_read_from_another_module(toy):
    (toy / "core" / "io.py").write_text("import os\n\n\ndef _open():\n    return os\n")
    (toy / "data" / "layout.py").write_text("from helpers.core.io import os\nfrom helpers.core import io\n\n\n"
                                            "def _own():\n    return _own.__name__, io.__name__, io.os\n")
    assert private_uses(toy) == []  # its own private names and dunders are fine
    (toy / "data" / "layout.py").write_text("from helpers.core.io import _open\n")
    (toy / "model" / "resnet.py").write_text("from ..core import io\n\n\ndef build():\n    return io._open()\n")
    (toy / "eval" / "plots.py").write_text("import helpers.core.io\n\nhelpers.core.io._open()\n")
    (toy / "tools" / "bench.py").write_text("import helpers.core.io as files\n\nfiles._open()\n")
    assert private_uses(toy) == ["helpers.data.layout imports helpers.core.io._open",
                                 "helpers.eval.plots uses helpers.core.io._open",
                                 "helpers.model.resnet uses helpers.core.io._open",
                                 "helpers.tools.bench uses helpers.core.io._open"]


def test_no_module_is_over_500_lines():
    """A module past 500 lines is split by concern before it lands (the style guide: files under 500 lines)."""
    long = {str(path.relative_to(PACKAGE)): lines for _, path, _ in modules_of(PACKAGE)
            if (lines := len(path.read_text().splitlines())) > 500}
    assert long == {}

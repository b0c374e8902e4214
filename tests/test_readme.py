"""README.md's table of the pieces names every module under helpers/, and nothing that is not there."""

from __future__ import annotations

import re

from conftest import ROOT


def pieces_table(readme: str) -> list[str]:
    """The paths in the first column of the README's "The pieces" table, in order."""
    section = readme.split("\n## The pieces\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [path for row in rows for path in re.findall(r"`([^`]+)`", row.split(" | ", 1)[0])]


def modules_named(paths: list[str]) -> set[str]:
    """The Python files under helpers/ that ``paths`` name; a sub-package's row (``helpers/core/``) names its
    ``__init__.py``."""
    named = {path for path in paths if path.startswith("helpers/") and path.endswith(".py")}
    return named | {f"{path}__init__.py" for path in paths if path.startswith("helpers/") and path.endswith("/")
                    and path != "helpers/" and path != "helpers/configs/"}


def test_the_pieces_table_names_every_module_and_only_those():
    paths = pieces_table((ROOT / "README.md").read_text())
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "helpers").rglob("*.py")}
    assert sorted(modules_named(paths) - modules) == [], "the README names modules that are not there"
    assert sorted(modules - modules_named(paths)) == [], "modules missing from the README's table of the pieces"
    assert [path for path in paths if not (ROOT / path).exists()] == []
    assert len(paths) == len(set(paths)), "a path named twice"


def test_the_check_sees_a_module_left_out_and_one_that_is_gone():
    readme = ("# x\n\n## The pieces\n\n| where | what |\n| --- | --- |\n| `helpers/core/` | the floor |\n"
              "| `helpers/core/io.py`, `helpers/core/gone.py` | writes |\n| `RECIPES.md` | not a module |\n\n"
              "## Command line\n\n| `helpers/cli.py` | another table |\n")
    paths = pieces_table(readme)
    assert paths == ["helpers/core/", "helpers/core/io.py", "helpers/core/gone.py", "RECIPES.md"]
    assert modules_named(paths) == {"helpers/core/__init__.py", "helpers/core/io.py", "helpers/core/gone.py"}

"""The command line's table: every command it declares builds, answers --help, and runs its own handler."""

from __future__ import annotations

import pytest
from conftest import call_cli

from helpers import cli, commands


def test_each_row_names_the_handler_of_its_command():
    for command in cli.COMMANDS:  # a copied row that kept another command's handler runs the wrong command
        assert command.handler is getattr(commands, "do_" + command.name.replace("-", "_")), command.name


@pytest.mark.parametrize("command", cli.COMMANDS, ids=lambda command: command.name)
def test_every_command_answers_help_with_its_arguments(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([command.name, "--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: python -m helpers {command.name}")
    for argument in command.arguments:
        for flag in getattr(argument, "flags", ()):
            assert flag in shown, flag


def test_a_command_runs_the_handler_its_row_names(monkeypatch, capsys):
    seen = []
    row = next(command for command in cli.COMMANDS if command.name == "stage-data")
    monkeypatch.setattr(row, "handler", lambda args: seen.append((args.src, args.dest)) or 7)
    assert call_cli(capsys, "stage-data", "SRC", "DEST")[0] == 7
    assert seen == [("SRC", "DEST")]


def test_bad_usage_exits_2_before_any_handler():
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(["train", "--no-such-option"])
    assert stop.value.code == 2

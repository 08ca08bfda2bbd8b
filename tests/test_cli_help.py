"""`--help` of the program and of every command and sub-command, typed as a user types it: each in
a fresh process through the installed console script. A help text that crashes argparse (an
unescaped % once did) or a command module that fails to import fails here."""

from __future__ import annotations

import argparse
import subprocess

import pytest

from conftest import cli_program
from studio import cli


def _command_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(prefix + (name,))
                out += _command_paths(sub, prefix + (name,))
    return out


COMMANDS = _command_paths(cli.build_parser())


def _program() -> list[str]:
    return cli_program()


def test_every_command_group_is_found():
    names = {path[0] for path in COMMANDS}
    assert {"gui", "setup", "train", "runs", "recipe", "methods", "chat", "eval", "generate",
            "hyper", "compare-methods"} <= names
    assert ("recipe", "new") in COMMANDS and ("hyper", "build-library") in COMMANDS


@pytest.mark.parametrize("command", [()] + COMMANDS, ids=lambda c: " ".join(c) or "peft-studio")
def test_help(command):
    proc = subprocess.run(_program() + list(command) + ["--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "skipped" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("usage: peft-studio" + "".join(" " + c for c in command))
    if command:
        assert "-h, --help" in proc.stdout
    else:   # the program's own help names every command
        for path in COMMANDS:
            if len(path) == 1:
                assert path[0] in proc.stdout

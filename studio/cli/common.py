"""Small helpers the CLI command modules share: number and duration formatting, the command line."""

from __future__ import annotations

import shlex
import sys


def fmt_duration(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_float(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


def command_line(argv: list[str] | None = None) -> str:
    """The command the user typed, quoted so it can be pasted back into a shell."""
    args = sys.argv[1:] if argv is None else argv
    return "peft-studio " + " ".join(shlex.quote(a) for a in args)

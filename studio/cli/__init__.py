"""`peft-studio`: the GUI's headless twin. Layer: the top (it may import every other layer, and
nothing imports it).

    peft-studio                      start the GUI (same as `peft-studio gui`)
    peft-studio train RECIPE         train in this process, one line per logged step
    peft-studio train --resume RUN   continue a run from its latest checkpoint
    peft-studio runs                 list runs
    peft-studio setup                install the default model (once)
    peft-studio recipe new OUT.toml  write the demo recipe to edit
    peft-studio methods              list adapter methods (and broken plugins)
    peft-studio chat --model DIR [--adapter DIR] "prompt"   base vs adapter answers
    peft-studio eval / compare-methods / generate / hyper ...   (see --help)

Errors the user can fix print one line on stderr and exit with code 2 (no traceback).

One module per command group in this package (`studio/cli/<group>.py`). Each defines

    def register(subparsers) -> None:
        p = subparsers.add_parser("generate", help="...")
        p.add_argument(...)
        p.set_defaults(func=cmd_generate)      # cmd_generate(args) -> int exit code

and is found automatically; no edit here is needed. A command module holds argument parsing and
printing only: what a command computes lives in core / hyper / worker, where the GUI and the
benchmarks reach it too. Keep heavy imports (torch, transformers) inside the command functions so
`--help` stays fast. A module that fails to import is reported on stderr and skipped: the other
commands still work.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from studio.errors import UserError

# The order of the groups in --help; groups not named here follow in name order.
GROUP_ORDER = ("app", "models", "train", "queue", "runs", "recipe", "methods", "chat", "eval",
               "hyper", "compare")
NOT_COMMANDS = frozenset({"common"})


def command_modules() -> list[str]:
    """Names of the command-group modules in this package, in --help order."""
    names = [info.name for info in pkgutil.iter_modules(__path__)
             if not info.name.startswith("_") and info.name not in NOT_COMMANDS]
    rank = {name: i for i, name in enumerate(GROUP_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peft-studio",
        description="Fine-tune a local LLM with adapter methods. No subcommand: start the GUI.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        try:
            module = importlib.import_module(f"{__name__}.{name}")
            module.register(sub)
        except Exception as err:  # one group's bug must not take the whole CLI down
            print(f"warning: CLI module {__name__}.{name} skipped: {type(err).__name__}: {err}",
                  file=sys.stderr)
    return parser


def main(argv=None) -> int:
    from studio.worker.child import quiet_library_noise

    quiet_library_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        from studio.cli.app import cmd_gui

        args.func = cmd_gui
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        from studio.fileio import disk_full_error, is_disk_full

        if not is_disk_full(err):
            raise
        print(f"error: {disk_full_error(err.filename or '.')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

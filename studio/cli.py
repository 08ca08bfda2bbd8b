"""`peft-studio`: the GUI's headless twin.

    peft-studio                      start the GUI (same as `peft-studio gui`)
    peft-studio train RECIPE         train in this process, one line per logged step
    peft-studio train --resume RUN   continue a run from its latest checkpoint
    peft-studio runs                 list runs
    peft-studio setup                install the default model (once)
    peft-studio recipe new OUT.toml  write the demo recipe to edit
    peft-studio methods              list adapter methods (and broken plugins)
    peft-studio chat --model DIR [--adapter DIR] "prompt"   base vs adapter answers

Errors the user can fix print one line on stderr and exit with code 2 (no traceback).

More subcommands live in their own modules `studio/cli_<topic>.py` (compare-methods, generate,
eval, hyper, export ...). Each such module defines

    def register(subparsers) -> None:
        p = subparsers.add_parser("generate", help="...")
        p.add_argument(...)
        p.set_defaults(func=cmd_generate)      # cmd_generate(args) -> int exit code

and is found automatically (every `studio.cli_*` module, in name order); no edit here is needed.
Keep heavy imports (torch, transformers) inside the command functions so `--help` stays fast.
A module that fails to import is reported on stderr and skipped: the other commands still work.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
from pathlib import Path

from studio.errors import UserError


def _fmt_duration(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_float(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


def describe_event(event: dict, total: int | None = None) -> str | None:
    """One human line per event (None for events not worth a line)."""
    name = event.get("event")
    if name == "started":
        extra = f", resumed from step {event['resumed_from']}" if event.get("resumed_from") else ""
        return (f"started: {event['total_steps']} steps, {event['trainable_params']:,} of "
                f"{event['total_params']:,} parameters trained on {event.get('device', '?')}{extra}")
    if name == "log":
        return (f"step {event['step']}/{total or '?'}  loss {_fmt_float(event['loss'])}  "
                f"lr {event['lr']:.2e}  grad {_fmt_float(event.get('grad_norm'), '.3f')}  "
                f"tok/s {event['tokens_per_s']:.0f}  mem {event['memory_mb']:.0f} MB  "
                f"ETA {_fmt_duration(event.get('eta_s'))}")
    if name == "eval":
        return f"eval at step {event['step']}: loss {_fmt_float(event['eval_loss'])}"
    if name == "checkpoint":
        return f"checkpoint: {event['path']}"
    if name in ("paused", "resumed"):
        return f"{name} at step {event['step']}"
    if name == "cancelled":
        return f"cancelled at step {event['step']}; checkpoint: {event['checkpoint']}"
    if name == "finished":
        return f"finished at step {event['step']}\nadapter: {event['adapter_path']}"
    if name == "failed":
        return f"failed: {event['cause']}"
    return None


# ---- commands -------------------------------------------------------------------------------

def cmd_gui(args) -> int:
    from studio.ui import app

    return int(app.main() or 0)


def cmd_train(args) -> int:
    from studio.core import runs
    from studio.core.recipe import Recipe
    from studio.core.training import Control, run_training

    if args.resume:
        run_dir = runs.find_run(args.resume)
        runs.check_not_running(run_dir)
        recipe = runs.load_recipe(run_dir)
        if args.recipe:
            print(f"note: resuming with the run's own recipe ({run_dir / 'recipe.toml'}); "
                  f"{args.recipe} is not used", file=sys.stderr)
    else:
        if not args.recipe:
            raise UserError("no recipe given", fix="peft-studio train RECIPE.toml "
                            "(make one with `peft-studio recipe new OUT.toml`)")
        recipe = Recipe.load(args.recipe)
        recipe.validate()
        run_dir = runs.create_run(recipe, base=Path(args.runs_dir) if args.runs_dir else None)
        recipe = runs.load_recipe(run_dir)
    print(f"run: {run_dir}", flush=True)
    import os

    log = runs.RunLog(run_dir, pid=os.getpid())
    control = Control()
    total = {"steps": None}

    def emit(event: dict) -> None:
        log.append(event)
        if event["event"] == "started":
            total["steps"] = event["total_steps"]
        line = describe_event(event, total["steps"])
        if line:
            print(line, flush=True)

    def on_interrupt(signum, frame):
        if control.cancelled:
            raise KeyboardInterrupt
        print("\nstopping after this step (checkpoint kept; Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)
        control.cancel()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        run_training(recipe, run_dir, emit, control, resume=bool(args.resume))
    except UserError as err:
        from studio.core import events

        log.append(events.failed(str(err), "", user_error=True))
        raise
    except BaseException as err:
        from studio.core import events
        from studio.worker.child import describe_failure

        cause, tail = describe_failure(err)
        log.append(events.failed(cause, tail))
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def cmd_runs(args) -> int:
    from studio.core import runs

    found = runs.list_runs(Path(args.runs_dir) if args.runs_dir else None)
    if not found:
        print("no runs yet (start one with `peft-studio train RECIPE.toml`)")
        return 0
    header = ("RUN", "STATUS", "STEP", "LOSS", "EVAL", "METHOD", "MODEL", "CREATED")
    rows = [header]
    for r in found:
        steps = f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step)
        rows.append((r.path.name, r.status, steps, _fmt_float(r.last_loss),
                     _fmt_float(r.eval_loss), r.method, r.model, r.created.replace("T", " ")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    if args.verbose:
        for r in found:
            if r.cause:
                print(f"\n{r.path.name}: {r.cause}")
    return 0


def cmd_setup(args) -> int:
    from studio.core.models import ensure_default_model

    path = ensure_default_model(log=print)
    print(f"default model: {path}")
    return 0


def cmd_recipe_new(args) -> int:
    from studio.core.recipe import Recipe

    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError("file already exists", path=out, fix="choose another name or add --force")
    recipe = Recipe.default(model_path=args.model, data_path=args.data, method=args.method)
    recipe.validate(check_paths=False)
    recipe.save(out)
    print(f"wrote {out} (method {recipe.method.id}); edit it, then `peft-studio train {out}`")
    return 0


def cmd_methods(args) -> int:
    from studio.plugins import discover

    found, problems = discover()
    width = max((len(p.id) for p in found.values()), default=4)
    for plugin in sorted(found.values(), key=lambda p: (p.family, p.id)):
        print(f"{plugin.id.ljust(width)}  {plugin.family:<12}  {plugin.description}")
    if problems:
        print(f"\n{len(problems)} plugin problem(s):")
        for problem in problems:
            print(f"  {problem}")
    return 0


def cmd_chat(args) -> int:
    from studio.core.chat import compare_answers, generate, load_for_chat

    model, tokenizer = load_for_chat(args.model, args.adapter)
    if args.adapter:
        answers = compare_answers(model, tokenizer, args.prompt, args.max_new_tokens)
        print(f"base:    {answers['base']}")
        print(f"adapter: {answers['adapter']}")
    else:
        print(generate(model, tokenizer, args.prompt, args.max_new_tokens))
    return 0


# ---- parser ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peft-studio",
        description="Fine-tune a local LLM with adapter methods. No subcommand: start the GUI.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("gui", help="start the desktop app")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("train", help="train from a recipe in this process")
    p.add_argument("recipe", nargs="?", help="recipe file (.toml or .json)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    p.add_argument("--runs-dir", help="where to create the run folder (default: the data folder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs-dir", help="runs folder to list (default: the data folder)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print why runs failed")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("setup", help="install the default model (once)")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("recipe", help="recipe files")
    recipe_sub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    q = recipe_sub.add_parser("new", help="write the demo recipe to a file")
    q.add_argument("out", help="file to write (.toml or .json)")
    q.add_argument("--method", default="lora", help="adapter method id (see `peft-studio methods`)")
    q.add_argument("--model", help="model folder (default: the installed default model)")
    q.add_argument("--data", help="training data file (default: the dates demo data)")
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    q.set_defaults(func=cmd_recipe_new)

    p = sub.add_parser("methods", help="list adapter methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("chat", help="answer a prompt with the base model and with an adapter")
    p.add_argument("--model", required=True, help="base model folder")
    p.add_argument("--adapter", help="adapter folder (a run's adapter/)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("prompt")
    p.set_defaults(func=cmd_chat)

    for name in extension_modules():
        try:
            module = importlib.import_module(f"studio.{name}")
            module.register(sub)
        except Exception as err:  # a helper module's bug must not take the whole CLI down
            print(f"warning: CLI module studio.{name} skipped: {type(err).__name__}: {err}",
                  file=sys.stderr)
    return parser


def extension_modules() -> list[str]:
    """Names of the optional `studio/cli_<topic>.py` modules present, in name order."""
    import studio

    return sorted(info.name for info in pkgutil.iter_modules(studio.__path__)
                  if info.name.startswith("cli_"))


def main(argv=None) -> int:
    from studio.worker.child import quiet_library_noise

    quiet_library_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", cmd_gui)
    try:
        return func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

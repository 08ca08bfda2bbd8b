"""`peft-studio compare-methods`: train several adapter methods on the same data and step budget.

    peft-studio compare-methods --methods lora,dora,ia3 --steps 40 --out docs/method_comparison.md

Each method trains in its own process (an ordinary run folder); the table (trainable parameters,
wall time, peak memory, final train/eval loss, exact-match accuracy, adapter size) is printed and
written to OUT (.md) and OUT with .json. `--progress-json` adds one machine-readable line per
progress step (`@progress {...}`), which the GUI's compare dialog reads.
"""

from __future__ import annotations

import argparse
import shlex
import signal
from pathlib import Path

from studio.core import events
from studio.errors import UserError



def _parse_sets(items: list[str]) -> dict[str, dict]:
    """`--set lora_dash.num_directions=4` -> {"lora_dash": {"num_directions": "4"}}."""
    out: dict[str, dict] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not (eq and dot and method and name):
            raise UserError(f"--set {item!r} is not METHOD.PARAM=VALUE", field="set",
                            fix="e.g. --set bitfit.include_norms=true")
        out.setdefault(method.strip(), {})[name.strip()] = value.strip()
    return out


def _learning_rate(text: str) -> float | str:
    if text in ("method", "recipe"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise UserError(f"--lr {text!r} is not a learning rate", field="lr",
                        fix="use 'method' (each plugin's suggestion), 'recipe', or a number "
                            "such as 2e-4")
    return value


def _command_line(args) -> str:
    """The command that regenerates the report, rebuilt from the parsed options."""
    parts = ["peft-studio", "compare-methods", "--methods", args.methods, "--steps", str(args.steps)]
    for flag in ("recipe", "model", "data", "batch_size"):      # not --runs-dir: only a place
        value = getattr(args, flag)
        if value:
            parts += ["--" + flag.replace("_", "-"), str(value)]
    if args.lr != "method":
        parts += ["--lr", args.lr]
    if args.eval_limit != 60:
        parts += ["--eval-limit", str(args.eval_limit)]
    for item in args.set or []:
        parts += ["--set", item]
    if args.no_baseline:
        parts.append("--no-baseline")
    if args.out:
        parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_compare_methods(args) -> int:
    from studio.worker import method_compare
    from studio.core.recipe import Recipe

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.steps < 1:
        raise UserError(f"--steps {args.steps} is too small", field="steps", fix="e.g. --steps 40")
    if args.recipe:
        base = Recipe.load(args.recipe)
    else:
        base = Recipe.default(model_path=args.model, data_path=args.data)
    if args.batch_size:
        base.training.batch_size = args.batch_size
    base.training.eval_every = 0          # one evaluation at the end: the same for every method
    base.training.save_every = 0
    base.validate(check_method=False)
    learning_rate = _learning_rate(args.lr)
    overrides = _parse_sets(args.set)
    out = Path(args.out) if args.out else None
    if out and out.suffix.lower() != ".md":
        raise UserError("the report is written as Markdown", path=out, field="out",
                        fix="give a file name ending in .md (the .json goes beside it)")

    command = _command_line(args)
    machine = method_compare.describe_machine()
    report_recipe = base.resolved()               # names the eval file really used
    method_compare.limit_eval_file(report_recipe, args.eval_limit)
    done_rows: list[dict] = []

    def progress(info: dict) -> None:
        if out and info.get("phase") == "done":      # a partial report survives an interruption
            done_rows.append(info["row"])
            method_compare.write_report(done_rows, out, command, None, report_recipe,
                                        learning_rate, planned=methods, machine=machine)
        if args.progress_json:
            info = {k: v for k, v in info.items() if k != "row"} | (
                {"row": info["row"]} if "row" in info else {})
            print(events.progress_line(info), flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)   # the GUI's Stop: end the child too
    try:
        rows = method_compare.compare_methods(
            base, methods, args.steps, eval_limit=args.eval_limit, log=log,
            learning_rate=learning_rate, overrides=overrides, on_progress=progress,
            runs_dir=Path(args.runs_dir) if args.runs_dir else None)
        base_acc = None
        if not args.no_baseline:
            log("[base] evaluating the base model without an adapter ...")
            if args.progress_json:
                print(events.progress_line({"phase": "base"}), flush=True)
            base_acc = method_compare.baseline_accuracy(base, args.eval_limit)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print()
    print(method_compare.markdown_table(rows, base_acc), flush=True)
    if out:
        method_compare.write_report(rows, out, command, base_acc, report_recipe, learning_rate,
                                    machine=machine)
        print(f"\nwrote {out} and {out.with_suffix('.json')}", flush=True)
    if args.progress_json:
        print(events.progress_line({"phase": "finished", "out": str(out) if out else None,
                                          "base_accuracy": base_acc}), flush=True)
    return 0 if all(r["status"] == "finished" for r in rows) else 1


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare-methods", help="train several methods on the same data and compare them",
        description="Train each method in its own process with the same data and step budget; "
                    "print and save a table of trainable parameters, wall time, peak memory, "
                    "final train/eval loss, exact-match accuracy and adapter size.")
    p.add_argument("--methods", required=True,
                   help="comma list of method ids (see `peft-studio methods`), e.g. lora,dora,ia3")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per method (default 40)")
    p.add_argument("--out", help="write the table here (.md) and the raw numbers beside it (.json)")
    p.add_argument("--recipe", help="recipe whose model, data and training settings are shared "
                                    "(default: the demo recipe on the default model)")
    p.add_argument("--model", help="model folder (without --recipe; default: the default model)")
    p.add_argument("--data", help="training data (without --recipe; default: the demo data)")
    p.add_argument("--lr", default="method",
                   help="'method' (default: each plugin's suggested learning rate), 'recipe', "
                        "or one number for all methods")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--eval-limit", type=int, default=60,
                   help="eval examples for exact-match accuracy (default 60; 0 = all)")
    p.add_argument("--set", action="append", metavar="METHOD.PARAM=VALUE",
                   help="change one method parameter, e.g. bitfit.include_norms=true (repeatable)")
    p.add_argument("--runs-dir", help="where the run folders go (default: the data folder)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the base model's accuracy line")
    p.add_argument("--progress-json", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_compare_methods)

"""`peft-studio transfer ADAPTER --to MODEL [--out DIR]`: move an adapter to another base model
(Trans-LoRA: synthetic prompts written by the target, a discriminator filter, the source adapter's
answers, a new adapter trained on the target). Runs in this process as a run folder on the target;
`--resume RUN` continues one; `--check` only checks and prints the plan."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from studio.errors import UserError


def _settings(args) -> dict:
    from studio.transfer.plan import TRANSFER_SCHEMA

    return {key: getattr(args, key) for key in TRANSFER_SCHEMA if getattr(args, key) is not None}


def _print_plan(plan: dict) -> None:
    s = plan["settings"]
    print(f"source: {plan['source']['adapter']}\n  on {plan['source']['model']}")
    print(f"target: {plan['target']}")
    print(f"seeds:  {len(plan['seeds'])} real prompts ({plan['seeds_from']})"
          + (f"; task: {plan['task']}" if plan.get("task") else ""))
    print(f"plan:   write {s['prompts']} prompts"
          + (f" (x{s['candidates']} candidates; the discriminator keeps the most real-looking, "
             f"none less real than {1 - s['real_quantile']:.0%} of the real prompts)"
             if s["filter"] else " (no filter)")
          + f", the source adapter answers, a LoRA learns them on {Path(plan['target']).name}")
    print(f"memory: about {plan['memory']['need_mb']:,} MB needed"
          + (f", {plan['memory']['free_mb']:,} MB free" if plan["memory"].get("free_mb") else ""))
    for note in plan.get("notes") or []:
        print(f"note:   {note}")


def cmd_transfer(args) -> int:
    from studio.core import runs
    from studio.cli.train import train_locked
    from studio.transfer import plan as plans
    from studio.transfer.pipeline import run_transfer

    if args.resume:
        run_dir = runs.find_run(args.resume)
        if not (run_dir / plans.PLAN_FILE).is_file():
            raise UserError("this run is not a transfer.", path=run_dir,
                            fix="Resume it with `peft-studio train --resume RUN`.")
        runs.lock_run(run_dir)
        runs.check_not_running(run_dir)
        out = None
    else:
        if not args.adapter or not args.to:
            raise UserError("give the adapter (or run) and the target model.",
                            fix="peft-studio transfer RUN_OR_ADAPTER --to MODEL_FOLDER")
        out = None
        if args.out:
            from studio.core.adapter_files import check_adapter_target

            out = check_adapter_target(args.out)       # refused before any slow work
        plan = plans.check_transfer(args.adapter, args.to, source_model=args.source_model,
                                    seeds_file=args.seeds, task=args.task or "",
                                    settings=_settings(args))
        _print_plan(plan)
        if args.check:
            return 0
        training = {}
        if args.steps:
            training.update(max_steps=args.steps, epochs=0)
        if args.epochs:
            training.update(epochs=args.epochs, max_steps=0)
        if args.learning_rate:
            training.update(learning_rate=args.learning_rate)
        run_dir = plans.create_transfer_run(plan, name=args.name or "", training=training,
                                            runs_base=Path(args.runs_dir) if args.runs_dir else None)
        runs.lock_run(run_dir)
    try:
        code = train_locked(args, run_dir, runs.load_recipe(run_dir),
                            body=lambda emit, control: run_transfer(run_dir, emit, control,
                                                                    resume=bool(args.resume)))
    finally:
        runs.unlock_run(run_dir)
    status = runs.read_status(run_dir)
    if out is not None and status.get("status") == "finished":
        _copy_adapter(run_dir / "adapter", out)
        print(f"adapter copied to {out}")
    return code


def _copy_adapter(adapter: Path, out: Path) -> None:
    from studio.core.adapter_files import check_adapter_target
    from studio.fileio import atomic_dir

    target = check_adapter_target(out)            # again: it may have changed while we trained
    with atomic_dir(target, replace=target.is_dir()) as tmp:
        for file in adapter.iterdir():
            if file.is_file():
                shutil.copy2(file, tmp / file.name)


def register(sub) -> None:
    from studio.transfer.plan import TRANSFER_SCHEMA

    p = sub.add_parser(
        "transfer", help="move an adapter to another base model (Trans-LoRA)",
        description="Move an adapter to another base model without its training data: the "
                    "target writes task prompts from a few real ones, a discriminator keeps the "
                    "real-looking ones, the source adapter answers them, and a new LoRA learns "
                    "those answers on the target. The result is a run on the target model.")
    p.add_argument("adapter", nargs="?", help="a run folder (or name) or a PEFT adapter folder")
    p.add_argument("--to", metavar="MODEL", help="the target model folder")
    p.add_argument("--out", metavar="DIR", help="also copy the new adapter here (a new or empty "
                                                "folder)")
    p.add_argument("--from", dest="source_model", metavar="MODEL",
                   help="the source base model, when the adapter's own record does not name a "
                        "folder on this machine")
    p.add_argument("--seeds", metavar="FILE", help="real task examples (chat or alpaca) to start "
                                                   "from (default: the run's evaluation split)")
    p.add_argument("--task", metavar="TEXT", help="the task in a sentence (shown to the "
                                                  "generator; enough on its own without seeds)")
    p.add_argument("--steps", type=int, help="training steps on the target (default: 3 epochs)")
    p.add_argument("--epochs", type=int, help="training epochs on the target")
    p.add_argument("--learning-rate", type=float, help="learning rate on the target (default "
                                                       "2e-4)")
    p.add_argument("--name", help="the run's name")
    p.add_argument("--runs-dir", help="where to create the run folder (default: the data folder)")
    p.add_argument("--check", action="store_true", help="check and print the plan; train nothing")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped transfer run")
    settings = p.add_argument_group("transfer settings")
    for key, spec in TRANSFER_SCHEMA.items():
        flag = "--" + key.replace("_", "-")
        text = f"{spec.get('title', key)}: {spec.get('help', '')} (default {spec['default']})"
        text = text.replace("%", "%%")
        if spec["type"] == "boolean":
            settings.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction,
                                  default=None, help=text)
        else:
            kind = {"integer": int, "number": float, "string": str}[spec["type"]]
            settings.add_argument(flag, dest=key, type=kind, default=None, help=text,
                                  choices=spec.get("enum"))
    p.set_defaults(func=cmd_transfer)

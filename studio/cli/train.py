"""`peft-studio train RECIPE` / `train --resume RUN`: train in this process, one line per step."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from studio.cli.common import fmt_duration, fmt_float
from studio.errors import UserError


def describe_event(event: dict, total: int | None = None) -> str | None:
    """One human line per event (None for events not worth a line)."""
    name = event.get("event")
    if name == "started":
        extra = f", resumed from step {event['resumed_from']}" if event.get("resumed_from") else ""
        warnings = "".join(f"\nnote: {w}" for w in event.get("warnings") or [])
        return (f"started: {event['total_steps']} steps, {event['trainable_params']:,} of "
                f"{event['total_params']:,} parameters trained on {event.get('device', '?')}"
                f"{', ' + event['precision'] if event.get('precision') else ''}{extra}"
                f"{warnings}")
    if name == "log":
        return (f"step {event['step']}/{total or '?'}  loss {fmt_float(event['loss'])}  "
                f"lr {event['lr']:.2e}  grad {fmt_float(event.get('grad_norm'), '.3f')}  "
                f"tok/s {event['tokens_per_s']:.0f}  mem {event['memory_mb']:.0f} MB  "
                f"ETA {fmt_duration(event.get('eta_s'))}")
    if name == "phase" and event.get("done") == 0:
        return f"{event['phase']} at step {event['step']} ({event.get('total')} batches)…"
    if name == "stage":
        title = event.get("title") or event.get("stage")
        if event.get("state") == "done":
            return f"{title}: {event.get('message', 'done')}"
        total, done = event.get("total"), event.get("done")
        if total is None:
            return f"{title}…"
        if done == total or (total >= 8 and done and done % max(1, total // 4) < 8 and done < total):
            return f"  {title}: {done}/{total}"
        return None
    if name == "eval":
        return f"eval at step {event['step']}: loss {fmt_float(event['eval_loss'])}"
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


def cmd_train(args) -> int:
    from studio.core import runs
    from studio.core.distributed import outside_launch
    from studio.core.recipe import Recipe

    if outside_launch():
        return _train_as_launched_rank(args)
    run_dir = _open_run(args, runs, Recipe)
    try:
        return train_locked(args, run_dir, runs.load_recipe(run_dir))
    finally:
        runs.unlock_run(run_dir)


def _open_run(args, runs, Recipe) -> Path:
    """The run folder this command trains (a new one, or --resume's), locked and checked."""
    if args.resume:
        run_dir = runs.find_run(args.resume)
        runs.lock_run(run_dir)                 # UserError when another process trains it
        runs.check_not_running(run_dir)
        if args.recipe:
            print(f"note: resuming with the run's own recipe ({run_dir / 'recipe.toml'}); "
                  f"{args.recipe} is not used", file=sys.stderr)
        return run_dir
    if not args.recipe:
        raise UserError("no recipe given", fix="peft-studio train RECIPE.toml "
                        "(make one with `peft-studio recipe new OUT.toml`)")
    recipe = Recipe.load(args.recipe)
    apply_overrides(recipe, args)
    recipe.validate()
    run_dir = runs.create_run(recipe, base=Path(args.runs_dir) if args.runs_dir else None)
    runs.lock_run(run_dir)
    return run_dir


def _train_as_launched_rank(args) -> int:
    """Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1): rank 0 makes (or finds) the run
    and reports; every rank trains it as the rank the launcher made it."""
    from studio.core import distributed, runs
    from studio.core.recipe import Recipe
    from studio.core.training import Control, run_training

    dist = distributed.setup(1, None, bool(args.resume))
    try:
        run_dir = None
        if dist.main:
            try:
                run_dir = _open_run(args, runs, Recipe)
            except BaseException:
                dist.share(None)                 # the other ranks stop with rank 0
                raise
        run_dir = dist.share(str(run_dir) if run_dir else None)
        if run_dir is None:
            print("rank 0 could not start the run (see its output)", file=sys.stderr)
            return 2
        run_dir = Path(run_dir)
        if dist.main:
            try:
                return train_locked(args, run_dir, runs.load_recipe(run_dir))
            finally:
                runs.unlock_run(run_dir)
        run_training(runs.load_recipe(run_dir), run_dir, lambda event: None, Control(),
                     resume=bool(args.resume))
        return 0
    finally:
        dist.close()


def train_locked(args, run_dir: Path, recipe, body=None) -> int:
    """Train `run_dir` in this process, printing a line per event; body(emit, control) replaces
    the plain training loop (a transfer's stages come first)."""
    from studio.core import events, runs
    from studio.core.training import Control, run_training
    from studio.fileio import disk_full_as_user_error

    print(f"run: {run_dir}", flush=True)
    if recipe.training.log_to == "tensorboard":
        from studio.core.metric_log import TENSORBOARD_DIR

        print(f"tensorboard: tensorboard --logdir {run_dir / TENSORBOARD_DIR}", flush=True)
    with disk_full_as_user_error(run_dir):
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
        if body is not None:
            body(emit, control)
        else:
            run_training(recipe, run_dir, emit, control, resume=bool(args.resume))
    except runs.RunFinished:
        raise                                   # refused before training: the run stays finished
    except UserError as err:
        log.record_failure(events.failed(str(err), "", user_error=True))
        raise
    except BaseException as err:
        from studio.worker.child import describe_failure

        cause, tail = describe_failure(err)
        log.record_failure(events.failed(cause, tail))
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


OVERRIDES = ("log_to", "sharding", "precision")   # [training] choices a command line may change


def add_override_options(parser) -> None:
    """Options that change a recipe's [training] settings for this run (specs from
    TRAINING_SCHEMA, so choices, default and help stay one copy)."""
    from studio.core.recipe import TRAINING_SCHEMA

    for key in OVERRIDES:
        spec = TRAINING_SCHEMA[key]
        parser.add_argument("--" + key.replace("_", "-"), choices=spec["enum"], default=None,
                            help=f"{spec['help']} (default: the recipe's value)".replace("%", "%%"))


def apply_overrides(recipe, args) -> None:
    for key in OVERRIDES:
        if getattr(args, key, None):
            setattr(recipe.training, key, getattr(args, key))


def register(sub) -> None:
    p = sub.add_parser("train", help="train from a recipe in this process")
    p.add_argument("recipe", nargs="?", help="recipe file (.toml or .json)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    p.add_argument("--runs-dir", help="where to create the run folder (default: the data folder)")
    add_override_options(p)
    p.set_defaults(func=cmd_train)

"""Experiment logging: a run's curves also written to TensorBoard (or W&B / MLflow when installed).

    with for_run(recipe, run_dir, emit) as emit:     # emit now also logs scalars
        run_training_loop(..., emit)

Off by default (`[training] log_to = "none"`). Fed only from the events the training loop already
emits (studio.core.events), so the loop itself knows nothing about loggers:
  log   -> train/loss, train/lr, train/tokens_per_s, train/grad_norm   (at the event's step)
  eval  -> eval/loss
TensorBoard files go to RUN_DIR/tensorboard/ (`tensorboard --logdir RUN_DIR/tensorboard`); a resumed
run drops the points after its checkpoint's step (purge_step) so the curve has no doubled tail.
W&B and MLflow are imported only when chosen; missing, they are a UserError that says what to
install. No Qt, no network of our own (W&B / MLflow follow their own settings, e.g. WANDB_MODE,
MLFLOW_TRACKING_URI; MLflow defaults to a file store in the run folder).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable

LOGGERS = ("none", "tensorboard", "wandb", "mlflow")
TENSORBOARD_DIR = "tensorboard"

# scalar name -> field of the `log` event
LOG_SCALARS = {"train/loss": "loss", "train/lr": "lr", "train/tokens_per_s": "tokens_per_s",
               "train/grad_norm": "grad_norm"}
EVAL_SCALARS = {"eval/loss": "eval_loss"}

_INSTALL = {   # what to install for each logger: (import name, pip package)
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}


def check_available(name: str, source=None) -> None:
    """UserError (field training.log_to, with the pip command) when the chosen logger's package
    is not installed. 'none' is always available."""
    from studio.errors import UserError

    if name not in LOGGERS:
        raise UserError(f"unknown logger '{name}'", path=source, field="training.log_to",
                        fix=f"use one of: {', '.join(LOGGERS)}")
    if name == "none":
        return
    module, package = _INSTALL[name]
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"logging to {name} was chosen, but the '{package}' package is not installed in this "
            f"Python ({sys.executable})", path=source, field="training.log_to",
            fix=f"install it (`{sys.executable} -m pip install {package}`"
                + (", or `pip install 'peft-studio[logging]'`" if name == "tensorboard" else "")
                + "), or set log_to = \"none\"")


def _scalars(event: dict) -> dict[str, float]:
    table = LOG_SCALARS if event.get("event") == "log" else (
        EVAL_SCALARS if event.get("event") == "eval" else {})
    out = {}
    for tag, key in table.items():
        value = event.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[tag] = float(value)
    return out


class _TensorBoard:
    def __init__(self, run_dir: Path, recipe, resumed_from: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR),
                                    purge_step=(resumed_from + 1) if resumed_from else None)
        if not resumed_from:
            self.writer.add_text("recipe", "```\n" + recipe.to_toml() + "\n```", 0)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, recipe, resumed_from: int) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="peft-studio", name=run_dir.name, id=run_dir.name,
                              dir=str(run_dir), config=recipe.to_dict(), resume="allow")

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, recipe, resumed_from: int) -> None:
        import os

        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment("peft-studio")
        self.run = mlflow.start_run(run_name=run_dir.name)
        if not resumed_from:
            flat = {f"{section}.{key}": value for section, values in recipe.to_dict().items()
                    if isinstance(values, dict) for key, value in values.items()
                    if not isinstance(value, dict)}
            mlflow.log_params(flat)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


_BACKENDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class MetricLogger:
    """Turns training events into scalars for one backend. The backend is opened at the `started`
    event (so a resume knows its step) and closed by close(); a logging failure after that is
    reported once on stderr and never stops the training."""

    def __init__(self, name: str, recipe, run_dir) -> None:
        self.name, self.recipe, self.run_dir = name, recipe, Path(run_dir)
        self.backend = None
        self.broken: str | None = None

    def __call__(self, event: dict) -> None:
        if self.broken or self.name == "none":
            return
        try:
            if event.get("event") == "started" and self.backend is None:
                self.backend = _BACKENDS[self.name](self.run_dir, self.recipe,
                                                    int(event.get("resumed_from") or 0))
                return
            values = _scalars(event)
            if values and self.backend is not None:
                self.backend.scalars(values, int(event["step"]))
        except Exception as err:  # noqa: BLE001 - a logger must not end a training run
            self.broken = f"{type(err).__name__}: {err}"
            print(f"logging to {self.name} stopped: {self.broken}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception as err:  # noqa: BLE001
                print(f"closing the {self.name} log failed: {err}", file=sys.stderr, flush=True)
            self.backend = None


@contextlib.contextmanager
def for_run(recipe, run_dir, emit: Callable[[dict], None]):
    """`emit` that also feeds the recipe's logger (training.log_to); the logger is checked first
    (UserError when its package is missing) and closed when the block ends, however it ends."""
    name = getattr(recipe.training, "log_to", "none") or "none"
    if name == "none":
        yield emit
        return
    check_available(name, recipe.source)
    logger = MetricLogger(name, recipe, run_dir)

    def both(event: dict) -> None:
        emit(event)
        logger(event)

    try:
        yield both
    finally:
        logger.close()

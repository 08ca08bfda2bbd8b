"""Experiment logging from the same run: TensorBoard scalars written from the training events,
off by default, and a clear message when a chosen tracker is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import small_recipe
from studio.core import runs
from studio.core.training import run_training
from studio.errors import UserError


def _scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_every_step(model_dir, tmp_path, demo_train_path, demo_eval_path):
    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8,
                          n_eval=4, steps=3, log_to="tensorboard", eval_every=2)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    seen = []
    run_training(runs.load_recipe(run_dir), run_dir, seen.append)
    logs = [e for e in seen if e["event"] == "log"]
    evals = [e for e in seen if e["event"] == "eval"]
    assert len(logs) == 3 and len(evals) == 2          # step 2 and the end
    got = _scalars(run_dir / "tensorboard")
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3]
    assert [v for _, v in got["train/loss"]] == pytest.approx([e["loss"] for e in logs], rel=1e-6)
    assert [v for _, v in got["train/lr"]] == pytest.approx([e["lr"] for e in logs], rel=1e-6)
    assert [v for _, v in got["train/tokens_per_s"]] == pytest.approx(
        [e["tokens_per_s"] for e in logs], rel=1e-6)
    assert got["eval/loss"] == [(e["step"], pytest.approx(e["eval_loss"], rel=1e-6)) for e in evals]


def test_logging_is_off_by_default(model_dir, tmp_path, demo_train_path, demo_eval_path):
    from studio.core.recipe import TRAINING_SCHEMA, Recipe

    assert Recipe().training.log_to == "none" == TRAINING_SCHEMA["log_to"]["default"]
    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8,
                          n_eval=4, steps=1)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    run_training(runs.load_recipe(run_dir), run_dir, lambda e: None)
    assert not (run_dir / "tensorboard").exists()


def test_a_missing_tracker_is_a_clear_error(model_dir, tmp_path, demo_train_path, demo_eval_path,
                                            monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a))
    for name in ("wandb", "mlflow"):
        recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, steps=1)
        recipe.training.log_to = name
        with pytest.raises(UserError) as err:
            recipe.validate()
        assert err.value.field == "training.log_to" and name in err.value.message
        assert f"pip install {name}" in err.value.fix and str(err.value.path) == str(recipe.source)
    recipe.training.log_to = "nonsense"
    with pytest.raises(UserError) as err:
        recipe.validate()
    assert err.value.field == "training.log_to"


def test_a_resumed_run_has_one_point_per_step(model_dir, tmp_path, demo_train_path, demo_eval_path):
    """A crash after step 3 was logged (checkpoint at step 2), then a resume: TensorBoard drops the
    crashed session's step 3 and the curve has steps 1..4 once each, step 3 from the resume."""
    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8,
                          n_eval=4, steps=4, log_to="tensorboard", save_every=2)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")

    def crash_at_step_4(event):
        if event["event"] == "log" and event["step"] == 4:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        run_training(runs.load_recipe(run_dir), run_dir, crash_at_step_4)
    assert [s for s, _ in _scalars(run_dir / "tensorboard")["train/loss"]] == [1, 2, 3]
    seen = []
    run_training(runs.load_recipe(run_dir), run_dir, seen.append, resume=True)
    assert seen[0]["resumed_from"] == 2
    got = _scalars(run_dir / "tensorboard")
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4]
    resumed = {e["step"]: e["loss"] for e in seen if e["event"] == "log"}
    assert dict(got["train/loss"])[3] == pytest.approx(resumed[3], rel=1e-6)

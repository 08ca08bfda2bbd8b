"""The training loop's bookkeeping (gradient accumulation, epochs, log windows, checkpoint pruning,
resume across an epoch boundary with dropout) on a tiny randomly initialised Llama that uses the
real SmolLM2 tokenizer and chat template: the same code path as the real model, in milliseconds.
The real-model promises (loss falls, adapter loads, QLoRA) are in test_training.py."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from studio.core import runs
from studio.core.recipe import Recipe
from studio.core.training import run_training


@pytest.fixture(scope="module")
def tiny_model_dir(model_dir, tmp_path_factory):
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out / name)
    config = AutoConfig.from_pretrained(model_dir)
    config.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def tiny_recipe(tiny_model_dir, demo_train_path, tmp_path, n_train=10, **training) -> Recipe:
    lines = demo_train_path.read_text().splitlines()[:n_train]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    recipe = Recipe.default(model_path=tiny_model_dir, data_path=tmp_path / "train.jsonl")
    recipe.name = "tiny"
    recipe.data.eval_fraction, recipe.data.max_length = 0.2, 64
    recipe.method.params.update(r=4, lora_dropout=0.1)
    recipe.training.batch_size, recipe.training.learning_rate = 3, 1e-2
    recipe.training.eval_every, recipe.training.save_every = 0, 0
    for key, value in training.items():
        setattr(recipe.training, key, value)
    recipe.source = recipe.save(tmp_path / "tiny.toml")
    return Recipe.load(recipe.source).validate()


def train(recipe, run_dir=None, base=None, resume=False):
    run_dir = run_dir or runs.create_run(recipe, base=base)
    events = []
    log = runs.RunLog(run_dir)

    def emit(event):
        log.append(event)
        events.append(event)

    metrics = run_training(runs.load_recipe(run_dir), run_dir, emit, resume=resume)
    return run_dir, events, metrics


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_epochs_accumulation_and_log_windows(tiny_model_dir, demo_train_path, tmp_path):
    # 10 examples, 20% held out -> 8 train, batch 3 -> 3 batches/epoch; 3 epochs = 9 batches,
    # 2 per optimizer step -> 5 steps (the last one crosses into a 4th pass by one batch)
    recipe = tiny_recipe(tiny_model_dir, demo_train_path, tmp_path, max_steps=0, epochs=3,
                         grad_accum=2, log_every=2, save_every=2, warmup_steps=1)
    run_dir, events, metrics = train(recipe, base=tmp_path / "runs")
    started = events[0]
    assert (started["train_examples"], started["eval_examples"]) == (8, 2)
    assert started["total_steps"] == 5
    logs = [e for e in events if e["event"] == "log"]
    assert [e["step"] for e in logs] == [2, 4, 5]      # one line per log window, and the last step
    assert [e["epoch"] for e in logs] == pytest.approx([4 / 3, 8 / 3, 10 / 3], abs=1e-4)
    assert [e["progress"] for e in logs] == pytest.approx([0.4, 0.8, 1.0])
    # the rate each step used: warm-up (step 1 at 0), then cosine from the full rate down
    lrs = [e["lr"] for e in logs]
    assert lrs[0] == pytest.approx(1e-2) and lrs[0] > lrs[1] > lrs[2] > 0
    # checkpoints at 2 and 4 (none at the last step: the adapter is written instead)
    assert [s for s, _ in runs.list_checkpoints(run_dir)] == [2, 4]
    assert metrics["step"] == 5 and metrics["eval_loss"] is not None
    assert json.loads((run_dir / "eval.json").read_text())["step"] == 5


def test_resume_across_an_epoch_boundary_is_exact(tiny_model_dir, demo_train_path, tmp_path):
    recipe = tiny_recipe(tiny_model_dir, demo_train_path, tmp_path, max_steps=7, grad_accum=2,
                         save_every=3, warmup_steps=2)
    full_dir, full_events, _ = train(recipe, base=tmp_path / "runs")
    for step in (3, 6):                                           # step 3 sits mid epoch 2
        stopped = tmp_path / f"stopped-{step}"
        stopped.mkdir()
        shutil.copy(full_dir / "recipe.toml", stopped / "recipe.toml")
        shutil.copytree(full_dir / "checkpoints" / f"step-{step}",
                        stopped / "checkpoints" / f"step-{step}")
        _, events, _ = train(recipe, run_dir=stopped, resume=True)
        full = {e["step"]: e for e in full_events if e["event"] == "log"}
        for e in (e for e in events if e["event"] == "log"):
            assert e["loss"] == pytest.approx(full[e["step"]]["loss"], rel=1e-5)
            assert e["lr"] == pytest.approx(full[e["step"]]["lr"], rel=1e-9)
            assert e["epoch"] == pytest.approx(full[e["step"]]["epoch"])
        a, b = _weights(stopped), _weights(full_dir)
        assert max(float((a[k] - b[k]).abs().max()) for k in b) < 1e-6


def test_old_checkpoints_are_pruned(tiny_model_dir, demo_train_path, tmp_path):
    from studio.core.checkpoints import KEEP_CHECKPOINTS

    recipe = tiny_recipe(tiny_model_dir, demo_train_path, tmp_path, max_steps=7, save_every=1)
    run_dir, _, _ = train(recipe, base=tmp_path / "runs")
    kept = [s for s, _ in runs.list_checkpoints(run_dir)]
    assert kept == list(range(7 - KEEP_CHECKPOINTS, 7))
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]


def test_resume_without_checkpoint_is_a_user_error(tiny_model_dir, demo_train_path, tmp_path):
    from studio.errors import UserError

    recipe = tiny_recipe(tiny_model_dir, demo_train_path, tmp_path, max_steps=2)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    with pytest.raises(UserError, match="no checkpoint"):
        train(recipe, run_dir=run_dir, resume=True)

"""studio.core.training on the real SmolLM2-135M-Instruct: LoRA lowers the loss, the adapter is a
plain PEFT adapter that changes the output, resume continues exactly, QLoRA runs on CPU.

Kept lean: 32 training examples of the demo task, 64 tokens, batch 4, a handful of steps.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import small_recipe
from studio.core import runs
from studio.core.events import encode, validate_event
from studio.core.training import Control, run_training

STEPS = 8


def train(recipe, base: Path, resume_dir=None, control=None):
    """Run in this process; returns (run_dir, events, metrics)."""
    run_dir = resume_dir or runs.create_run(recipe, base=base)
    seen = []
    log = runs.RunLog(run_dir)

    def emit(event):
        validate_event(event)
        json.loads(encode(event))            # every event is strict JSON
        log.append(event)
        seen.append(event)

    metrics = run_training(runs.load_recipe(run_dir), run_dir, emit, control,
                           resume=resume_dir is not None)
    return run_dir, seen, metrics


@pytest.fixture(scope="module")
def lora_run(model_dir, demo_train_path, demo_eval_path, tmp_path_factory):
    """One uninterrupted LoRA run with a checkpoint halfway (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("lora")
    recipe = small_recipe(model_dir, tmp, demo_train_path, demo_eval_path,
                          save_every=STEPS // 2)
    run_dir, events, metrics = train(recipe, tmp / "runs")
    return recipe, run_dir, events, metrics


def _adapter_tensors(adapter_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))


def test_lora_steps_lower_the_loss(lora_run, model_dir):
    recipe, run_dir, events, metrics = lora_run
    names = [e["event"] for e in events]
    assert names[0] == "started" and names[-1] == "finished"
    assert names.count("log") == STEPS and names.count("checkpoint") == 1
    started = events[0]
    assert started["total_steps"] == STEPS and started["resumed_from"] == 0
    assert 0 < started["trainable_params"] < started["total_params"] / 100
    logs = [e for e in events if e["event"] == "log"]
    assert [e["step"] for e in logs] == list(range(1, STEPS + 1))
    for e in logs:       # everything the GUI's curves and progress bar need
        assert e["loss"] > 0 and e["lr"] == pytest.approx(1e-3) and e["grad_norm"] > 0
        assert e["tokens_per_s"] > 0 and e["memory_mb"] > 100 and e["eta_s"] >= 0
        assert e["progress"] == pytest.approx(e["step"] / STEPS)
    # between steps the run says what it is doing: saving before the checkpoint, evaluating (with
    # per-batch progress) and saving before the end, then training again after the checkpoint
    phases = [(e["phase"], e["step"]) for e in events if e["event"] == "phase"]
    half = STEPS // 2
    assert phases[:2] == [("saving", half), ("training", half)]
    assert phases[2] == ("evaluating", STEPS) and phases[-1] == ("saving", STEPS)
    last_eval = [e for e in events if e["event"] == "phase" and e["phase"] == "evaluating"][-1]
    assert last_eval["done"] == last_eval["total"] == 2          # 8 eval examples, batches of 4
    assert names.index("checkpoint") == names.index("phase") + 1
    first, last = logs[0]["loss"], sum(e["loss"] for e in logs[-3:]) / 3
    print(f"\ntrain loss: first step {first:.3f}, mean of last 3 steps {last:.3f}")
    assert last < 0.6 * first

    # the held-out loss of the trained adapter is below the base model's
    from studio.core import data
    from studio.core.evaluate import eval_loss
    from studio.core.models import load_model

    base, tokenizer = load_model(model_dir)
    items = [data.tokenize_example(ex, tokenizer, 64)
             for ex in data.load_examples(recipe.data.eval_path)]
    base_loss = eval_loss(base, [items[i:i + 4] for i in range(0, len(items), 4)])
    print(f"eval loss: base {base_loss:.3f}, after {STEPS} steps {metrics['eval_loss']:.3f}")
    assert metrics["eval_loss"] < 0.7 * base_loss
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["eval_loss"] == pytest.approx(metrics["eval_loss"])
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "finished" and status["step"] == STEPS


def test_adapter_loads_with_plain_peft_and_changes_output(lora_run, model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run_dir, events, _ = lora_run
    adapter = run_dir / "adapter"
    assert events[-1]["adapter_path"] == str(adapter)
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Rewrite this date as YYYY-MM-DD: 7 June 1999"}],
        tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        base_logits = base(**ids).logits
        base_answer = tokenizer.decode(base.generate(**ids, max_new_tokens=12, do_sample=False)[0,
                                       ids["input_ids"].shape[1]:], skip_special_tokens=True)
    model = PeftModel.from_pretrained(base, str(adapter))
    model.eval()
    with torch.no_grad():
        tuned_logits = model(**ids).logits
        answer = tokenizer.decode(model.generate(**ids, max_new_tokens=12, do_sample=False)[0,
                                  ids["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"\nbase: {base_answer!r}  adapter: {answer!r}")
    assert (tuned_logits - base_logits).abs().max() > 0.5
    assert answer != base_answer
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", answer.strip())   # the demo task's format, learnt
    assert not re.fullmatch(r"\d{4}-\d{2}-\d{2}", base_answer.strip())


def test_resume_matches_an_uninterrupted_run(lora_run, tmp_path):
    recipe, full_dir, full_events, full_metrics = lora_run
    ckpt = runs.latest_checkpoint(full_dir)
    assert ckpt.name == f"step-{STEPS // 2}"
    # a run that stopped at the checkpoint: same recipe, only the checkpoint
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(full_dir / "recipe.toml", stopped / "recipe.toml")
    shutil.copytree(ckpt, stopped / "checkpoints" / ckpt.name)
    _, events, metrics = train(recipe, tmp_path, resume_dir=stopped)
    assert events[0]["resumed_from"] == STEPS // 2
    logs = [e for e in events if e["event"] == "log"]
    assert [e["step"] for e in logs] == list(range(STEPS // 2 + 1, STEPS + 1))
    full_logs = {e["step"]: e["loss"] for e in full_events if e["event"] == "log"}
    for e in logs:
        assert e["loss"] == pytest.approx(full_logs[e["step"]], rel=1e-4, abs=1e-5)
    # tokens seen carry over the resume (the checkpoint's progress.json holds the count)
    full_tokens = {e["step"]: e["tokens"] for e in full_events if e["event"] == "log"}
    assert [e["tokens"] for e in logs] == [full_tokens[e["step"]] for e in logs]
    assert full_tokens[STEPS // 2 + 1] > full_tokens[STEPS // 2] > 0
    resumed, full = _adapter_tensors(stopped / "adapter"), _adapter_tensors(full_dir / "adapter")
    assert resumed.keys() == full.keys()
    worst = max(float((resumed[k] - full[k]).abs().max()) for k in full)
    print(f"\nmax |resumed - uninterrupted| adapter weight difference: {worst:.2e}")
    assert worst < 1e-5
    assert metrics["eval_loss"] == pytest.approx(full_metrics["eval_loss"], rel=1e-4)


def test_cancel_checkpoints_and_pause_waits(model_dir, demo_train_path, demo_eval_path, tmp_path):
    control = Control()
    seen = []

    def on_event(event):
        seen.append(event)
        if event["event"] == "log" and event["step"] == 1:
            control.pause()
            threading.Timer(0.5, control.cancel).start()

    import threading

    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8,
                          n_eval=4, steps=50)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    metrics = run_training(runs.load_recipe(run_dir), run_dir, on_event, control)
    names = [e["event"] for e in seen]
    assert names == ["started", "log", "paused", "phase", "checkpoint", "cancelled"]
    assert seen[3]["phase"] == "saving" and seen[3]["step"] == 1     # says it is saving first
    assert metrics["cancelled"] and metrics["step"] == 1
    assert seen[-1]["checkpoint"] == str(run_dir / "checkpoints" / "step-1")
    progress = json.loads((run_dir / "checkpoints" / "step-1" / "progress.json").read_text())
    assert progress["step"] == 1 and progress["position"] == {"epoch": 0, "index": 1}


def test_qlora_4bit_runs_on_cpu(model_dir, demo_train_path, demo_eval_path, tmp_path):
    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8,
                          n_eval=4, steps=2, method="qlora", batch_size=2)
    run_dir, events, metrics = train(recipe, tmp_path / "runs")
    started = events[0]
    assert started["quantization"] == "4bit" and started["method"] == "qlora"
    logs = [e for e in events if e["event"] == "log"]
    assert len(logs) == 2 and all(e["loss"] > 0 for e in logs)
    assert metrics["eval_loss"] is not None
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    tensors = _adapter_tensors(run_dir / "adapter")
    assert any("lora_B" in k and float(v.abs().max()) > 0 for k, v in tensors.items())


def test_interval_warnings_say_what_will_not_happen():
    from types import SimpleNamespace

    from studio.core.training import interval_warnings

    t = SimpleNamespace(eval_every=20, save_every=20)
    assert interval_warnings(t, 60, True) == []
    eval_note, save_note = interval_warnings(SimpleNamespace(eval_every=100, save_every=100), 16, True)
    assert "only at the end" in eval_note and "16" in eval_note
    assert "restarts from step 0" in save_note
    assert interval_warnings(SimpleNamespace(eval_every=100, save_every=0), 16, False) == []

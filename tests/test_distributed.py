"""Multi-device training through accelerate on the CPU (gloo), two processes, the real model:
data parallel (DDP) and sharded (FSDP2).

Two ranks with batch B take, at every step, the same two micro-batches that one process takes
with batch B and grad_accum 2: the losses per step and the trained adapter must agree up to float
reduction order. Rank 0 alone writes the run folder; the helper rank leaves only its log. Sharded,
rank 0 still writes the very files one process writes (gathered), and a resume shards them again."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli_program, small_recipe
from studio.core import runs
from studio.core.training import run_training


def _train(recipe, base):
    run_dir = runs.create_run(recipe, base=base)
    seen = []
    metrics = run_training(runs.load_recipe(run_dir), run_dir, seen.append)
    return run_dir, seen, metrics


def test_two_cpu_ranks_train_like_one_process_with_accumulation(model_dir, tmp_path,
                                                                  demo_train_path, demo_eval_path):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    ddp = small_recipe(model_dir, tmp_path / "ddp", demo_train_path, demo_eval_path, n_train=16,
                       n_eval=4, steps=3, devices=2, batch_size=2)
    one = small_recipe(model_dir, tmp_path / "one", demo_train_path, demo_eval_path, n_train=16,
                       n_eval=4, steps=3, devices=1, batch_size=2, grad_accum=2)
    # the data-parallel run as a user starts it: the CLI, in its own process
    proc = subprocess.run(cli_program() + ["train", str(ddp.source), "--runs-dir",
                                           str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_ddp = Path(next(line for line in proc.stdout.splitlines() if line.startswith("run: "))[5:])
    seen_ddp = [json.loads(line) for line in (run_ddp / "events.jsonl").read_text().splitlines()]
    m_ddp = json.loads((run_ddp / "eval.json").read_text())
    run_one, seen_one, m_one = _train(one, tmp_path / "runs")
    started = next(e for e in seen_ddp if e["event"] == "started")
    assert started["devices"] == 2 and started["total_steps"] == 3
    assert sum(e["event"] == "started" for e in seen_ddp) == 1      # rank 0 alone reports
    la = [e["loss"] for e in seen_ddp if e["event"] == "log"]
    lb = [e["loss"] for e in seen_one if e["event"] == "log"]
    assert len(la) == len(lb) == 3
    assert max(abs(a - b) for a, b in zip(la, lb)) < 1e-4, (la, lb)
    assert abs(m_ddp["eval_loss"] - m_one["eval_loss"]) < 1e-4
    wa = load_file(str(run_ddp / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(run_one / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    assert json.loads((run_ddp / "status.json").read_text())["status"] == "finished"
    assert (run_ddp / "rank1.log").is_file()             # the helper rank's output, nothing else
    assert "WORLD_SIZE" not in os.environ


def test_devices_beyond_the_gpus_are_refused(monkeypatch):
    from studio.core.distributed import requested_devices
    from studio.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert requested_devices(0) == 2 and requested_devices(2) == 2
    with pytest.raises(UserError, match="has 2 GPU"):
        requested_devices(4)


def test_a_method_with_callbacks_is_refused_on_several_devices(model_dir, tmp_path,
                                                                demo_train_path, demo_eval_path):
    """LoRA-Dash changes the model mid-run (a callback): data-parallel copies cannot follow, so
    the run is refused up front with the fix, before any rank starts or model loads."""
    from studio.errors import UserError

    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8,
                          n_eval=2, steps=2, devices=2, method="lora_dash")
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    with pytest.raises(UserError, match="training.devices = 1"):
        run_training(runs.load_recipe(run_dir), run_dir, lambda e: None)
    assert "WORLD_SIZE" not in os.environ and not list(run_dir.glob("rank*.log"))


def test_fsdp_ranks_train_checkpoint_and_resume_like_one_process(model_dir, tmp_path, monkeypatch,
                                                                 demo_train_path, demo_eval_path):
    """sharding = "fsdp" on 2 CPU ranks, stopped after step 1 and resumed, against one process
    with grad_accum 2 (same global batches) that runs through: the same loss at every step, the
    same eval loss and adapter, and the sharded run's checkpoint holds the same files and whole
    tensors (trained weights, AdamW moments) as the single-process one. The single process has
    sharding = "fsdp" too: with one device it trains unsharded, with a note."""
    from studio.core.training import Control

    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # the helper rank inherits it: 1 thread each
    (tmp_path / "fsdp").mkdir()
    (tmp_path / "one").mkdir()
    # fp32: equality to 1e-5 compares the sharding, not bf16 rounding (which follows the layout)
    common = dict(n_train=12, n_eval=2, steps=3, batch_size=2, sharding="fsdp", precision="fp32")
    fsdp = small_recipe(model_dir, tmp_path / "fsdp", demo_train_path, demo_eval_path, devices=2,
                        **common)
    one = small_recipe(model_dir, tmp_path / "one", demo_train_path, demo_eval_path, devices=1,
                       grad_accum=2, save_every=1, **common)
    run_fsdp = runs.create_run(fsdp, base=tmp_path / "runs")
    seen, control = [], Control()

    def emit(event):
        seen.append(event)
        if event["event"] == "log" and event["step"] == 1:
            control.cancel()                   # stop after step 1 (a checkpoint is written)

    first = run_training(runs.load_recipe(run_fsdp), run_fsdp, emit, control)
    assert first["cancelled"] and first["step"] == 1
    assert "WORLD_SIZE" not in os.environ and "ACCELERATE_USE_FSDP" not in os.environ
    run_training(runs.load_recipe(run_fsdp), run_fsdp, seen.append, Control(), resume=True)
    run_one, seen_one, m_one = _train(one, tmp_path / "runs")

    starts = [e for e in seen if e["event"] == "started"]
    assert [(e["devices"], e["sharding"], e["resumed_from"]) for e in starts] == \
        [(2, "fsdp", 0), (2, "fsdp", 1)]
    started_one = next(e for e in seen_one if e["event"] == "started")
    assert started_one["devices"] == 1 and any("one device" in w for w in started_one["warnings"])
    la = [e["loss"] for e in seen if e["event"] == "log"]
    lb = [e["loss"] for e in seen_one if e["event"] == "log"]
    assert len(la) == len(lb) == 3
    assert max(abs(a - b) for a, b in zip(la, lb)) < 1e-5, (la, lb)
    m_fsdp = json.loads((run_fsdp / "eval.json").read_text())
    assert abs(m_fsdp["eval_loss"] - m_one["eval_loss"]) < 1e-5
    wa = load_file(str(run_fsdp / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(run_one / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5

    ca, cb = run_fsdp / "checkpoints" / "step-1", run_one / "checkpoints" / "step-1"
    assert sorted(p.relative_to(ca) for p in ca.rglob("*")) == \
        sorted(p.relative_to(cb) for p in cb.rglob("*"))
    ta = load_file(str(ca / "trainable.safetensors"))
    tb = load_file(str(cb / "trainable.safetensors"))
    assert ta.keys() == tb.keys() and all(ta[k].shape == tb[k].shape for k in ta)
    assert max(float((ta[k] - tb[k]).abs().max()) for k in ta) < 1e-6
    oa = torch.load(ca / "optimizer.pt", weights_only=True)
    ob = torch.load(cb / "optimizer.pt", weights_only=True)
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for index, state in oa["state"].items():
        for key, value in state.items():
            assert type(value) is torch.Tensor and value.shape == ob["state"][index][key].shape
            assert float((value - ob["state"][index][key]).abs().max()) < 1e-6, (index, key)
    sa = torch.load(ca / "state.pt", weights_only=True)
    sb = torch.load(cb / "state.pt", weights_only=True)
    assert sa["group_names"] == sb["group_names"] and sa["position"] == sb["position"]
    assert sorted(p.name for p in run_fsdp.iterdir() if p.name.startswith("rank")) == ["rank1.log"]


@pytest.mark.parametrize("change, field, words", [
    ({"model": {"quantization": "4bit"}}, "model.quantization", "quantized"),
    ({"method": "qlora"}, "method.id", "quantized"),
    ({"training": {"optimizer": "adamw_8bit"}}, "training.optimizer", "adamw_8bit"),
])
def test_what_fsdp_cannot_shard_is_refused_before_any_rank_starts(model_dir, tmp_path, change,
                                                                  field, words, demo_train_path,
                                                                  demo_eval_path):
    from studio.errors import UserError

    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=4,
                          n_eval=2, steps=1, devices=2, sharding="fsdp",
                          method=change.get("method", "lora"))
    for section in ("model", "training"):
        for key, value in change.get(section, {}).items():
            setattr(getattr(recipe, section), key, value)
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    with pytest.raises(UserError, match=words) as err:
        run_training(runs.load_recipe(run_dir), run_dir, lambda e: None)
    assert err.value.field == field and "ddp" in err.value.fix
    assert not list(run_dir.glob("rank*.log")) and "WORLD_SIZE" not in os.environ


def test_the_sharding_setting_is_checked_and_one_device_is_never_refused(tmp_path):
    from studio.core.distributed import check_sharding
    from studio.core.recipe import Recipe
    from studio.errors import UserError

    recipe = Recipe()
    recipe.training.sharding = "zero3"
    with pytest.raises(UserError) as err:
        recipe.validate(check_paths=False, check_method=False)
    assert err.value.field == "training.sharding" and "fsdp" in err.value.fix
    recipe.training.sharding = "fsdp"
    recipe.model.quantization = "4bit"
    check_sharding(recipe, "4bit", 1)       # one device: trains unsharded, nothing to refuse
    with pytest.raises(UserError, match="quantized"):
        check_sharding(recipe, "4bit", 2)


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_torchrun_launch_trains_one_run_reported_by_rank_0(model_dir, tmp_path, demo_train_path,
                                                           demo_eval_path, sharding):
    """Headless on a multi-GPU box or a cluster node: `torchrun --nproc_per_node 2 -m studio.cli
    train RECIPE --sharding S` (what `accelerate launch --multi_gpu` runs). Rank 0 makes the one
    run folder and reports; both ranks train it, like one process with grad_accum 2."""
    import sys

    (tmp_path / "a").mkdir()
    recipe = small_recipe(model_dir, tmp_path / "a", demo_train_path, demo_eval_path, n_train=16,
                          n_eval=4, steps=3, batch_size=2)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "studio.cli", "train", str(recipe.source),
                           "--runs-dir", str(tmp_path / "runs"), "--sharding", sharding],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(folders) == 1
    seen = [json.loads(line) for line in (folders[0] / "events.jsonl").read_text().splitlines()]
    started = next(e for e in seen if e["event"] == "started")
    assert (started["devices"], started["sharding"]) == (2, sharding)
    assert json.loads((folders[0] / "status.json").read_text())["status"] == "finished"
    (tmp_path / "b").mkdir()
    one = small_recipe(model_dir, tmp_path / "b", demo_train_path, demo_eval_path, n_train=16,
                       n_eval=4, steps=3, batch_size=2, grad_accum=2)
    _, seen_one, _ = _train(one, tmp_path / "single")
    la = [e["loss"] for e in seen if e["event"] == "log"]
    lb = [e["loss"] for e in seen_one if e["event"] == "log"]
    assert max(abs(a - b) for a, b in zip(la, lb)) < 1e-4 and len(la) == 3

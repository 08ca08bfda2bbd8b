"""Data-parallel training through accelerate on the CPU (gloo), two processes, the real model.

Two ranks with batch B take, at every step, the same two micro-batches that one process takes
with batch B and grad_accum 2: the losses per step and the trained adapter must agree up to float
reduction order. Rank 0 alone writes the run folder; the helper rank leaves only its log."""

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
    the run is refused up front with the fix, and no rank is left behind."""
    from studio.errors import UserError

    recipe = small_recipe(model_dir, tmp_path, demo_train_path, demo_eval_path, n_train=8,
                          n_eval=2, steps=2, devices=2, method="lora_dash")
    run_dir = runs.create_run(recipe, base=tmp_path / "runs")
    with pytest.raises(UserError, match="training.devices = 1"):
        run_training(runs.load_recipe(run_dir), run_dir, lambda e: None)
    assert "WORLD_SIZE" not in os.environ


@pytest.mark.slow
def test_torchrun_launch_trains_one_run_reported_by_rank_0(model_dir, tmp_path, demo_train_path,
                                                           demo_eval_path):
    """Headless on a multi-GPU box or a cluster node: `torchrun --nproc_per_node 2 -m studio.cli
    train RECIPE` (what `accelerate launch --multi_gpu` runs). Rank 0 makes the one run folder
    and reports; both ranks train it, like one process with grad_accum 2."""
    import sys

    (tmp_path / "a").mkdir()
    recipe = small_recipe(model_dir, tmp_path / "a", demo_train_path, demo_eval_path, n_train=16,
                          n_eval=4, steps=3, batch_size=2)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "studio.cli", "train", str(recipe.source),
                           "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(folders) == 1
    seen = [json.loads(line) for line in (folders[0] / "events.jsonl").read_text().splitlines()]
    assert next(e for e in seen if e["event"] == "started")["devices"] == 2
    assert json.loads((folders[0] / "status.json").read_text())["status"] == "finished"
    (tmp_path / "b").mkdir()
    one = small_recipe(model_dir, tmp_path / "b", demo_train_path, demo_eval_path, n_train=16,
                       n_eval=4, steps=3, batch_size=2, grad_accum=2)
    _, seen_one, _ = _train(one, tmp_path / "single")
    la = [e["loss"] for e in seen if e["event"] == "log"]
    lb = [e["loss"] for e in seen_one if e["event"] == "log"]
    assert max(abs(a - b) for a, b in zip(la, lb)) < 1e-4 and len(la) == 3

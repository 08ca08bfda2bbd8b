"""The training-throughput benchmark runs end to end (2 timed steps, tiny random model, CPU).

Checks that it still drives our training loop and the plain peft loop on the same set-up and
reports what it promises; no timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_both_loops_on_a_tiny_model(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    report = bench.main(["--shape", "tiny", "--device", "cpu", "--batch", "2", "--seq", "16",
                         "--steps", "2", "--warmup", "1", "--param", "r=4",
                         "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["ratios"] == report["ratios"]
    ours, base = saved["results"]["ours"], saved["results"]["baseline"]
    assert saved["setup"]["params"]["r"] == 4
    # the same method on the same model: the same adapter size in both loops
    assert ours["trainable_params"] == base["trainable_params"] > 0
    for res in (ours, base):
        assert res["timed_steps"] == 2
        assert res["tokens_per_s"] > 0
        assert math.isfinite(res["loss_first"]) and math.isfinite(res["loss_last"])
        assert len(res["tokens_per_s_runs"]) == 1 and res["peak_mb_runs"]
    assert saved["ratios"]["tokens_per_s"] == ours["tokens_per_s"] / base["tokens_per_s"]


def test_sft_speed_benchmark_runs_all_three_peers_on_a_tiny_model(tmp_path):
    """benchmarks/sft_speed.py: ours, transformers Trainer and TRL SFTTrainer (both fast modes)
    on the same tokenized demo examples; trained tokens are counted from the batches each really
    took. No timing is asserted."""
    import pytest

    pytest.importorskip("trl", reason="TRL is a benchmark extra: pip install -e .[bench]")
    spec = importlib.util.spec_from_file_location(
        "sft_speed", BENCHMARK.parent / "sft_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "sft.json"
    report = bench.main(["--shape", "tiny", "--steps", "2", "--warmup", "1", "--examples", "16",
                         "--eval-examples", "4", "--batch", "2", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["runs"]) == {"ours", "trainer", "trl_padding_free", "trl_packing"}
    for name, (res,) in saved["runs"].items():
        assert res["timed_steps"] == 2 and res["trained_tokens"] > 0, name
        assert res["trained_tokens_per_s"] > 0 and math.isfinite(res["eval_loss"]), name
    # ours, the Trainer and TRL padding-free take the same examples per step (batch 2): the
    # same number of trained tokens per step on average within the data's spread
    per_step = {n: saved["runs"][n][0]["trained_tokens"] for n in ("ours", "trainer")}
    assert 0.5 < per_step["ours"] / per_step["trainer"] < 2.0
    assert set(report["summary"]["ratios"]) == {"trainer", "trl_padding_free", "trl_packing"}
    # each its own precision policy, named in the report: ours the studio's auto
    from studio.core.training_parts import compute_dtype

    assert saved["runs"]["ours"][0]["precision"] == compute_dtype("cpu", "auto")
    assert saved["runs"]["trainer"][0]["precision"] == "fp32"          # Trainer's CPU default


def test_sft_speed_evaluates_every_adapter_on_the_fp32_base(tmp_path):
    """Ours holds the frozen base in bf16 while training; before the shared eval its base goes
    back to the exact fp32 weights (the adapter untouched), as every other variant's is."""
    import torch
    from peft import LoraConfig, get_peft_model

    from studio.core.training_parts import hold_frozen_in_bf16

    spec = importlib.util.spec_from_file_location("sft_speed", BENCHMARK.parent / "sft_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--shape", "tiny"])
    original = bench.build_model(args, for_ours=True)
    model = get_peft_model(bench.build_model(args, for_ours=True),
                           LoraConfig(r=4, target_modules="all-linear"))
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert hold_frozen_in_bf16(model) > 0
    model = bench.fp32_for_eval(model, args)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name, p in model.named_parameters():
        if name in lora:
            assert torch.equal(p, lora[name]), name
    base = model.get_base_model().state_dict()
    for name, tensor in original.state_dict().items():
        key = next((k for k in base if k.replace(".base_layer", "") == name), None)
        assert key is not None and torch.equal(base[key], tensor), name

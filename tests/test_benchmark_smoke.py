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

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

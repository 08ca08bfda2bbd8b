"""How long does one sentence -> PEFT adapter take? (issue 4: target < 1 s on CPU, default model)

    python benchmarks/generate_latency.py [--hypernetwork DIR] [--repeats 10] [--json OUT]

Reports, as medians over `--repeats` different task sentences:
  cold    import + load the hypernetwork + load the sentence encoder + first generation
          (what a fresh `peft-studio generate` process pays)
  warm    one generation with encoder and hypernetwork already loaded (what the GUI pays after
          its first use): encode, emit, write the adapter folder
and, for scale, the baseline the generated adapter replaces: the same LoRA shape trained with
plain transformers + peft for 1 step and for 100 steps (extrapolated from the measured step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "Decide whether a sentence about sports is plausible.",
    "Multiply two single-digit numbers.",
    "Give the plural form of an English noun.",
    "Say whether a political claim is true or false.",
    "Sort a list of words alphabetically.",
    "Decide whether a text is a dark joke or not.",
    "Name the chemical element with a given atomic number.",
    "Check if a sequence of brackets is balanced.",
    "Answer yes-or-no trivia questions.",
    "Convert a quantity between metric prefixes.",
]


def lora_step_seconds(model_dir: Path, spec, steps: int = 3) -> float:
    """Plain transformers + peft: seconds per LoRA training step (batch 4 x 64 tokens)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(model, spec.lora_config())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, 1000, (4, 64))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hypernetwork", default=None, help="default: the shipped T2L")
    ap.add_argument("--model", default=None, help="base model folder (default: installed default)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-baseline", action="store_true", help="skip the LoRA training baseline")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    from studio.hyper import api
    from studio.paths import default_model_dir

    model_dir = Path(args.model) if args.model else default_model_dir()
    hn = api.load_hypernetwork(args.hypernetwork)
    t_load = time.perf_counter()
    api.warm_up()
    t_enc = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="gen-latency-"))
    first = api.generate(hn, out / "first", description=SENTENCES[0], base_model=model_dir)
    t_first = time.perf_counter()
    warm = [api.generate(hn, out / f"a{i}", description=SENTENCES[i % len(SENTENCES)],
                         base_model=model_dir) for i in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in warm) for k in ("encode_ms", "emit_ms", "write_ms")}
    result = {
        "hypernetwork": str(hn.folder), "kind": hn.kind, "head": hn.info()["head"],
        "hypernetwork_mb": hn.info()["size_mb"], "adapter_mb": warm[0]["size_mb"],
        "cold_total_s": round(t_first - t0, 3),
        "cold_parts_s": {"import_and_load_hypernetwork": round(t_load - t0, 3),
                         "load_encoder": round(t_enc - t_load, 3),
                         "first_generation": round(first["seconds"], 3)},
        "warm_ms_median": round(statistics.median(r["seconds"] for r in warm) * 1e3, 1),
        "warm_ms_max": round(max(r["seconds"] for r in warm) * 1e3, 1),
        "warm_parts_ms_median": {k: round(v, 1) for k, v in med.items()},
        "repeats": args.repeats, "threads": __import__("torch").get_num_threads(),
    }
    if not args.no_baseline:
        step = lora_step_seconds(model_dir, hn.spec)
        result["baseline_lora_step_s"] = round(step, 3)
        result["baseline_100_steps_s"] = round(step * 100, 1)
        result["speedup_vs_100_steps"] = round(step * 100 / (result["warm_ms_median"] / 1e3), 1)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

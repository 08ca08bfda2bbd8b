"""Does torch.compile pay for a LoRA step on this CPU? bf16 autocast, frozen bf16, packed rows of
varying length (dynamic shapes), SmolLM2-135M; compile time and steady step time vs eager."""
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
torch.set_num_threads(1)
from peft import LoraConfig, get_peft_model  # noqa: E402

from benchmarks.bench_common import default_model_path  # noqa: E402
from studio.core.models import load_model  # noqa: E402
from studio.core.packing import pack, packed_loss  # noqa: E402
from studio.core.training_parts import hold_frozen_in_bf16  # noqa: E402

# usage: python benchmarks/compile_probe.py eager|compile [MODEL_DIR]
mode = sys.argv[1] if len(sys.argv) > 1 else "eager"
path = sys.argv[2] if len(sys.argv) > 2 else str(default_model_path())
model, tok = load_model(path)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
hold_frozen_in_bf16(model)
model.config.use_cache = False
rng = random.Random(0)


def batch():
    items = []
    for _ in range(4):
        n = rng.choice([60, 107, 150, 317])
        ids = [rng.randrange(1000, 40000) for _ in range(n)]
        items.append({"input_ids": ids, "labels": [-100] * (n - 5) + ids[-5:]})
    return pack(items)


fwd = torch.compile(model, dynamic=True) if mode == "compile" else model
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
times = []
t0 = time.perf_counter()
for step in range(12):
    s = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = packed_loss(fwd, batch(), reduction="sum")
    loss.backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - s)
print(mode, "first step", round(times[0], 1), "s; steps 3-12 mean", round(sum(times[2:]) / 10, 2),
      "s; total", round(time.perf_counter() - t0, 1))

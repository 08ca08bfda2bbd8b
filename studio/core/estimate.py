"""How long a run will take and how much memory it needs, before it starts.

From what this machine measured: the newest finished run on the same model (its tokens/s from
eval.json and the memory of its last logged step). With no such run, the estimate says so instead
of inventing a speed. Tokens per step come from the data's measured mean length when known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measurement:
    run: str                 # the run it comes from
    tokens_per_s: float      # real (not padded) tokens per second of that run
    memory_mb: float | None  # its last logged memory (peak on GPU, resident on CPU)
    method: str


def last_measurement(model_name: str, base: Path | None = None) -> Measurement | None:
    """The newest finished run on a model whose folder is named `model_name`."""
    from studio.core.runs import list_runs, read_events

    for run in list_runs(base):
        if not run.status.startswith("finished") or run.model != model_name:
            continue
        try:
            metrics = json.loads((Path(run.path) / "eval.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rate = metrics.get("tokens_per_s") if isinstance(metrics, dict) else None
        if not isinstance(rate, (int, float)) or rate <= 0:
            continue
        logs = [e for e in read_events(run.path, tail_bytes=64 * 1024) if e.get("event") == "log"]
        memory = logs[-1].get("memory_mb") if logs else None
        return Measurement(run.name, float(rate),
                           float(memory) if isinstance(memory, (int, float)) else None, run.method)
    return None


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_text(steps: int, tokens_per_step: float, measured: Measurement | None,
                  length_known: bool) -> str:
    """One line for the Train page."""
    if steps <= 0:
        return ""
    if measured is None:
        return (f"{steps} steps of about {tokens_per_step:,.0f} tokens. No run on this model has "
                "finished on this machine yet, so there is no speed to estimate from: the first "
                "logged steps will show the ETA.")
    seconds = steps * tokens_per_step / measured.tokens_per_s
    memory = f"; memory about {measured.memory_mb / 1024:.1f} GB" if measured.memory_mb else ""
    guess = "" if length_known else " (token length guessed as half of max_length: load the data to measure it)"
    return (f"Estimate: about {human(seconds)} for {steps} steps of ~{tokens_per_step:,.0f} tokens{guess}, "
            f"at the {measured.tokens_per_s:,.0f} tokens/s run “{measured.run}” ({measured.method}) "
            f"measured on this model{memory}.")


# ---- memory: is there room, and gradient checkpointing when there is not -----------------------

MEMORY_HEADROOM = 0.85          # of what is free: the rest is the OS's, the GUI's, the allocator's


def available_memory_mb(device: str) -> float | None:
    """Free memory where the model will live (the GPU's free memory, else the machine's
    available RAM); None when it cannot be read (then no decision is made from it)."""
    try:
        if str(device).startswith("cuda"):
            import torch

            free, _total = torch.cuda.mem_get_info(torch.device(device))
            return free / 2**20
        import psutil

        return psutil.virtual_memory().available / 2**20
    except Exception:   # noqa: BLE001 - unknown: the check is skipped, not guessed
        return None


def checkpointing_choice(info, quantization, dtype: str, batch_tokens: int, device: str,
                         free_mb: float | None = None) -> tuple[bool, str]:
    """(turn gradient checkpointing on?, why) for a run whose largest batch holds `batch_tokens`
    tokens: on when the estimate without it does not fit what is free on `device` and the one
    with it does fit better. Checkpointing keeps one layer's activations instead of every layer's
    (recomputed in backward: about a third slower), so it is chosen only when memory is short."""
    from studio.core.models import estimate_memory

    free = available_memory_mb(device) if free_mb is None else free_mb
    if free is None or batch_tokens <= 0:
        return False, ""
    est = estimate_memory(info, quantization, dtype=dtype, tokens_per_step=batch_tokens)
    if est["total_mb"] <= free * MEMORY_HEADROOM:
        return False, ""
    layers = max(1, int(info.num_layers or 1))
    fixed = est["weights_mb"] + est["gradients_mb"] + est["optimizer_mb"]
    # kept: each layer's input (1 of ~18 tensors per layer) + one layer recomputed + the logits
    logits_mb = (info.vocab_size or 0) * 8 * batch_tokens / 2**20
    layer_acts = max(est["activations_mb"] - logits_mb, 0.0)
    with_ckpt = fixed + logits_mb + layer_acts * (1 / 18 + 1 / layers)
    note = (f"memory: about {est['total_mb']:,.0f} MB needed for batches of up to {batch_tokens:,} "
            f"tokens but {free:,.0f} MB is free on {device}: gradient checkpointing turned on "
            f"(about {with_ckpt:,.0f} MB; steps about a third slower). Set "
            f"training.auto_checkpointing = false to decide yourself.")
    if with_ckpt > free * MEMORY_HEADROOM:
        note += (" It may still not fit: lower training.batch_size or data.max_length, or load "
                 "the model in 4bit.")
    return True, note

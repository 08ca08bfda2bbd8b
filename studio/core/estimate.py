"""How long a run will take and how much memory it needs, before it starts.

Time, from what this machine measured: the newest finished run on the same model (its tokens/s
from eval.json and the memory of its last logged step); with none, the newest run on another
model, its speed scaled by the ratio of the two models' parameter counts (a step's work grows
with the parameters each token passes through), and said to be scaled. With no finished run at
all, the estimate says so instead of inventing a speed. Tokens per step come from the data's
measured mean length when known.

Memory, from a model of the run (models.estimate_memory) for the largest batch, against what is
free on the device: whether it fits, or whether gradient checkpointing will turn itself on.
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
    model: str = ""              # the model folder's name it ran on
    params: int | None = None    # that model's parameter count (its started event)


def last_measurement(model_name: str, base: Path | None = None,
                     any_model: bool = False) -> Measurement | None:
    """The newest finished run on a model whose folder is named `model_name`; with
    `any_model`, when there is none, the newest finished run on any model whose parameter count
    is known (for a scaled estimate)."""
    from studio.core.runs import list_runs, read_events

    other = None
    for run in list_runs(base):
        same = run.model == model_name
        if not run.status.startswith("finished") or not (same or (any_model and other is None)):
            continue
        try:
            metrics = json.loads((Path(run.path) / "eval.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rate = metrics.get("tokens_per_s") if isinstance(metrics, dict) else None
        if not isinstance(rate, (int, float)) or rate <= 0:
            continue
        events = read_events(run.path, tail_bytes=64 * 1024)
        logs = [e for e in events if e.get("event") == "log"]
        memory = logs[-1].get("memory_mb") if logs else None
        started = ([e for e in read_events(run.path, head_bytes=64 * 1024)
                    if e.get("event") == "started"] if not same else [])
        params = started[-1].get("total_params") if started else None
        found = Measurement(run.name, float(rate),
                            float(memory) if isinstance(memory, (int, float)) else None, run.method,
                            run.model, int(params) if isinstance(params, int) and params > 0 else None)
        if same:
            return found
        if found.params:
            other = found
    return other


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_text(steps: int, tokens_per_step: float, measured: Measurement | None,
                  length_known: bool, model_name: str = "", params: int | None = None) -> str:
    """One line for the Train page. `measured` on another model than `model_name` is scaled
    by the parameter counts (`params`: the chosen model's)."""
    if steps <= 0:
        return ""
    scaled = bool(measured and model_name and measured.model != model_name)
    if measured is None or (scaled and not (params and measured.params)):
        return (f"{steps} steps of about {tokens_per_step:,.0f} tokens. No run has finished on "
                "this machine yet, so there is no speed to estimate from: the first logged steps "
                "will show the ETA.")
    guess = "" if length_known else " (token length guessed as half of max_length: load the data to measure it)"
    if scaled:
        ratio = measured.params / params
        rate = measured.tokens_per_s * ratio
        return (f"Estimate: roughly {human(steps * tokens_per_step / rate)} for {steps} steps of "
                f"~{tokens_per_step:,.0f} tokens{guess}: scaled from the {measured.tokens_per_s:,.0f} "
                f"tokens/s of run “{measured.run}” on {measured.model} ({_count(measured.params)} "
                f"parameters, this model {_count(params)}). A finished run on this model makes it "
                f"exact.")
    seconds = steps * tokens_per_step / measured.tokens_per_s
    memory = f"; memory about {measured.memory_mb / 1024:.1f} GB" if measured.memory_mb else ""
    return (f"Estimate: about {human(seconds)} for {steps} steps of ~{tokens_per_step:,.0f} tokens{guess}, "
            f"at the {measured.tokens_per_s:,.0f} tokens/s run “{measured.run}” ({measured.method}) "
            f"measured on this model{memory}.")


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def memory_text(info, quantization, dtype: str, batch_tokens: int, device: str,
                checkpointing: bool = False, auto: bool = True,
                free_mb: float | None = None) -> str:
    """One line: the modelled memory for the largest batch against what is free on `device`,
    and what the run will do about it (checkpointing_choice, as training decides)."""
    from studio.core.models import estimate_memory

    if info is None or batch_tokens <= 0:
        return ""
    est = estimate_memory(info, quantization, dtype=dtype, tokens_per_step=batch_tokens)
    free = available_memory_mb(device) if free_mb is None else free_mb
    need = f"Memory (model): about {est['total_mb'] / 1024:.1f} GB for batches of up to {batch_tokens:,} tokens"
    if free is None or free <= 0:
        return need + f"; what is free on {device} is checked when the run starts."
    room = f"{free / 1024:.1f} GB free on {device}"
    if checkpointing:
        return f"{need} before gradient checkpointing (on); {room}."
    if est["total_mb"] <= free * MEMORY_HEADROOM:
        return f"{need}; {room}: it fits."
    on, note = checkpointing_choice(info, quantization, dtype, batch_tokens, device, free)
    if auto and on:
        return f"{need}; only {room}: gradient checkpointing will turn on by itself (slower, less memory)."
    return (f"{need}; only {room}: it may not fit. Turn on gradient checkpointing, or lower the "
            f"batch size or max length.")


# ---- memory: is there room, and gradient checkpointing when there is not -----------------------

MEMORY_HEADROOM = 0.85          # of what is free: the rest is the OS's, the GUI's, the allocator's


def quick_device() -> str:
    """The device a run would train on, without importing torch (seconds, too slow for the GUI
    thread): what torch says when it is loaded already, else "cuda" when the NVIDIA driver lists
    a GPU, else "cpu"."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    gpus = Path("/proc/driver/nvidia/gpus")
    return "cuda" if gpus.is_dir() and any(gpus.iterdir()) else "cpu"


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

"""The pieces the training loop is built from: pause/cancel flags, device and memory, seeding,
data preparation and batching, optimizer and step count. (studio.core.training re-exports them.)
"""

from __future__ import annotations

import math
import os
import random
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache

from studio.errors import UserError

IGNORE = -100


class Control:
    """Thread-safe pause/cancel flags: set from another thread, read by the loop between steps."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._cancelled = False

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def wait_while_paused(self, timeout: float | None = None) -> None:
        """Block while paused (until resumed or cancelled)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or self._cancelled, timeout)


@dataclass
class TrainData:
    train: list[dict]
    eval: list[dict]
    dropped: int
    batches_per_epoch: int
    warnings: list[str] = field(default_factory=list)     # about the data, shown at start


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def memory_mb(device: str) -> float:
    """Peak CUDA memory allocated on GPU; the process's resident memory on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _has_trained_token(item: dict) -> bool:
    return any(label != IGNORE for label in item["labels"][1:])


def prepare_data(recipe, tokenizer) -> TrainData:
    """Load, split and tokenise; drops examples left with nothing to learn after truncation."""
    from studio.core import data

    examples = data.load_examples(recipe.resolve_path(recipe.data.path), recipe.data.format)
    if recipe.data.eval_path:
        train_ex = examples
        eval_ex = data.load_examples(recipe.resolve_path(recipe.data.eval_path), recipe.data.format)
    elif recipe.data.eval_fraction > 0:
        train_ex, eval_ex = data.split_examples(examples, recipe.data.eval_fraction,
                                                recipe.training.seed)
    else:
        train_ex, eval_ex = examples, []
    max_len = recipe.data.max_length
    train = [data.tokenize_example(ex, tokenizer, max_len) for ex in train_ex]
    if getattr(recipe.training, "train_on", "answers") == "all":    # the loss on every token
        train = [{**item, "labels": list(item["input_ids"])} for item in train]
    kept = [item for item in train if _has_trained_token(item)]
    evals = [item for item in (data.tokenize_example(ex, tokenizer, max_len) for ex in eval_ex)
             if _has_trained_token(item)]
    if not kept:
        raise UserError("no training example has any trained (assistant) tokens within "
                        f"max_length={max_len}", path=recipe.source, field="data.max_length",
                        fix="raise max_length, or check that the data has assistant replies")
    per_epoch = math.ceil(len(kept) / recipe.training.batch_size)
    return TrainData(kept, evals, len(train) - len(kept), per_epoch,
                     data.answer_warnings(train_ex, recipe.resolve_path(recipe.data.path)))


def micro_batches(items, batch_size: int, seed: int, epoch: int, index: int,
                  group_by_length: bool = False):
    """Endless (epoch, index, batch) stream in the recipe's shuffled order, from a position
    (batches of similar lengths with `group_by_length`: data.iter_batches)."""
    from studio.core.data import iter_batches

    while True:
        for offset, batch in enumerate(iter_batches(items, batch_size, seed, epoch, start=index,
                                                    group_by_length=group_by_length)):
            yield epoch, index + offset, batch
        epoch, index = epoch + 1, 0


class Batches:
    """Batches collated on demand and moved to `device` (sized, iterable, indexable), so a big
    dataset is never held as tensors all at once."""

    def __init__(self, chunks: list[list[dict]], pad_id, device="cpu"):
        from studio.core.data import collate

        self._chunks = chunks
        self._collate, self._pad, self._device = collate, pad_id, device

    def __len__(self):
        return len(self._chunks)

    def __getitem__(self, i):
        batch = self._collate(self._chunks[i], self._pad)
        return {k: v.to(self._device, non_blocking=True) for k, v in batch.items()}

    def __iter__(self):
        return (self[i] for i in range(len(self)))


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (avx512_bf16 or AMX): there bf16 steps are
    faster than fp32; elsewhere bf16 is emulated and slower, so auto stays fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def compute_dtype(device: str, precision: str = "auto") -> str:
    """"bf16", "fp16" or "fp32": what a step computes in. auto: bf16 on a GPU that has it, fp16
    on an older GPU, bf16 on a CPU that multiplies bf16 natively (cpu_has_bf16), else fp32."""
    if precision in ("bf16", "fp16", "fp32"):
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.startswith("mps"):
        return "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def frozen_dtype(training, device: str, quantization: str | None, model_dtype: str) -> str:
    """The dtype the frozen base weights are held in while training: bfloat16 when the run
    computes in bf16 and `training.frozen_bf16` is on (no fp32 copy to cast every step, half the
    memory), else what they were loaded as. Quantized weights stay as they are."""
    if (getattr(training, "frozen_bf16", False) and not quantization
            and model_dtype in ("float32", "auto")
            and compute_dtype(device, training.precision) == "bf16"):
        return "bfloat16"
    return model_dtype


def hold_frozen(model, training, device: str, quantization: str | None, model_dtype: str) -> str:
    """Put the frozen base weights in frozen_dtype (bf16 when the run computes in bf16 and
    `training.frozen_bf16` is on); the dtype they are held in."""
    held = frozen_dtype(training, device, quantization, model_dtype)
    if held == "bfloat16":
        hold_frozen_in_bf16(model)
    return held


def hold_frozen_in_bf16(model) -> int:
    """Cast every frozen fp32 parameter to bf16 in place (trained ones stay fp32, tied weights
    are cast once); the number of parameters cast."""
    import torch

    cast = 0
    for _, p in model.named_parameters():
        if not p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.to(torch.bfloat16)
            cast += p.numel()
    return cast


def autocast_for(device: str, precision: str = "auto"):
    """The autocast context for a step (compute_dtype); nothing for fp32."""
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    dtype = compute_dtype(device, precision)
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(kind, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


def grad_scaler_for(device: str, precision: str = "auto"):
    """A gradient scaler for fp16 steps (fp16 gradients underflow without one); None otherwise."""
    import torch

    if compute_dtype(device, precision) != "fp16":
        return None
    return torch.amp.GradScaler("cuda" if device.startswith("cuda") else "cpu")


def default_param_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def make_optimizer(groups, recipe, device):
    """The recipe's optimizer over the plugin's (or the default) parameter groups."""
    import torch

    t = recipe.training
    for group in groups:
        group.pop("fused", None)
        group.pop("foreach", None)
    name = getattr(t, "optimizer", "adamw")
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.AdamW8bit if name == "adamw_8bit" else bnb.optim.PagedAdamW8bit
        return cls(groups, lr=t.learning_rate, weight_decay=t.weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=t.learning_rate, weight_decay=t.weight_decay,
                         relative_step=False, scale_parameter=False, warmup_init=False)
    fused = device.startswith("cuda") and all(    # not over FSDP shards (DTensors): foreach
        p.is_cuda and p.is_floating_point() and not hasattr(p, "device_mesh")
        for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=t.learning_rate, weight_decay=t.weight_decay,
                             **({"fused": True} if fused else {}))


def add_neftune(model, alpha: float):
    """NEFTune (Jain et al. 2023): while training, add uniform noise of size alpha/sqrt(L*d) to the
    input embeddings (L tokens, d hidden size). Returns the hook handle (None when alpha is 0)."""
    if not alpha:
        return None
    import torch

    def hook(module, args, output):
        if not module.training:
            return output
        length, dim = output.shape[-2], output.shape[-1]
        scale = alpha / (length * dim) ** 0.5
        return output + torch.zeros_like(output).uniform_(-scale, scale)

    return model.get_input_embeddings().register_forward_hook(hook)


def total_steps_for(recipe, batches_per_epoch: int) -> int:
    t = recipe.training
    if t.max_steps > 0:
        return t.max_steps
    # one optimizer step takes grad_accum batches and the batch stream runs on across epochs
    return max(1, math.ceil(t.epochs * batches_per_epoch / t.grad_accum))

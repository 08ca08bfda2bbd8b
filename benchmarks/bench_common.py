"""Shared pieces of the benchmarks: model shapes built from config dicts (no hub access), synthetic
token data, and the meters (peak memory, synchronised step timer with an optional profiler)."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import threading
import time
from pathlib import Path

# Random-init shapes, built from these config dicts (no hub access). qwen2-0.5b is Qwen2-0.5B's
# published config, smollm2-135m the shipped model's (for machines without its weights); "tiny" is
# for smoke tests.
SHAPES = {
    "smollm2-135m": dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
        hidden_act="silu", tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=2),
    "qwen2-0.5b": dict(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False,
        attention_dropout=0.0, bos_token_id=151643, eos_token_id=151643),
    "tiny": dict(
        model_type="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
        hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False,
        attention_dropout=0.0, bos_token_id=0, eos_token_id=0),
}


def add_model_args(parser) -> None:
    """--model / --shape (one of them), the same in every benchmark."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="local HF model folder (default: the shipped SmolLM2-135M)")
    src.add_argument("--shape", choices=sorted(SHAPES), help="random-init model of this shape")


def default_model_path() -> Path:
    from studio import paths

    return paths.default_model_dir()


# ---- model and data ----------------------------------------------------------------------------

def build_model(args, for_ours: bool):
    """The same weights for both variants: a local folder, or a seeded random init of a shape."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, args.dtype)
    if args.shape:
        cfg = dict(SHAPES[args.shape])
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        torch.manual_seed(args.seed)
        torch.cuda.manual_seed_all(args.seed) if args.device.startswith("cuda") else None
        with torch.device(args.device):   # initialised where it runs (fast on GPU)
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
    if for_ours:   # the studio's own loader, as run_training uses it
        from studio.core.models import load_model

        model, _tok = load_model(args.model, None, args.dtype, args.device)
        return model
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    return model.to(args.device)


def synthetic_ids(vocab: int, n: int, seq: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seq), generator=gen)


def vocab_size(args) -> int:
    if args.shape:
        return SHAPES[args.shape]["vocab_size"]
    cfg = json.loads((Path(args.model) / "config.json").read_text())
    return int(cfg.get("vocab_size") or cfg["text_config"]["vocab_size"])


# ---- measuring -----------------------------------------------------------------------------------

def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Memory:
    """Peak CUDA allocation, or peak sampled RSS above the starting RSS on CPU (see module doc)."""

    def __init__(self, device: str):
        self.device = device
        self._stop = threading.Event()
        self._thread = None
        self.start_mb = self.peak_mb = 0.0

    def __enter__(self):
        import torch

        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass
            self.start_mb = self.peak_mb = _rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _rss_mb())
            self._stop.wait(0.002)

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, _rss_mb())
        return False

    @property
    def used_mb(self) -> float:
        return self.peak_mb - self.start_mb


class StepTimer:
    """Wall time from the end of step `warmup` to the end of step `total` (device synchronised)."""

    def __init__(self, device: str, warmup: int, total: int, profile: bool = False):
        self.device, self.warmup, self.total = device, warmup, total
        self.t0 = self.t1 = None
        self.profiler, self.profile_table = None, ""
        if profile:
            import torch.profiler as tp

            kinds = [tp.ProfilerActivity.CPU] + (
                [tp.ProfilerActivity.CUDA] if device.startswith("cuda") else [])
            self.profiler = tp.profile(activities=kinds)

    def on_step_end(self, step, model=None, optimizer=None):
        if step == self.warmup:
            _sync(self.device)
            if self.profiler:
                self.profiler.__enter__()
            self.t0 = time.perf_counter()
        elif step == self.total:
            _sync(self.device)
            self.t1 = time.perf_counter()
            if self.profiler:
                self.profiler.__exit__(None, None, None)
                self.profile_table = self.profiler.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60)

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

"""Training throughput: our training loop vs a plain transformers+peft loop, in one process.

    python benchmarks/train_throughput.py                       # shipped SmolLM2-135M, CPU-sized
    python benchmarks/train_throughput.py --shape qwen2-0.5b --device cuda --batch 8 --seq 1024

Both variants get the same model (same weights: the same folder, or the same seeded random init),
the same synthetic token batches (batch x seq, every position trained), the same method and
hyperparameters, the same step count and the same precision policy; the first --warmup steps of
each are run but not timed. Printed per variant: tokens/s over the timed steps and peak memory;
then the ratios ours/baseline.

"ours" drives studio.core.training's own step loop (_Loop: collation, autocast, loss scaling,
clipping, fused AdamW on CUDA, scheduler, per-step logging, plugin callbacks), set up the way
run_training sets it up (plugin.apply, param groups, optimizer, scheduler), with the studio's
default recipe settings (log_every=1, cosine schedule, max_grad_norm=1). Checkpointing and
evaluation are off (no eval data, save_every=0); the adapter save at the end is not timed.
"baseline" is get_peft_model + torch AdamW + a DataLoader + a hand-written loop (forward,
backward, clip_grad_norm_, step, zero_grad) with no per-step host synchronisation.

Memory: on CUDA, torch.cuda.max_memory_allocated() over the whole variant (weights + adapter +
optimizer state + activations), measured from a reset after the previous variant was freed.
On CPU there is no allocator counter, so it is the process's resident set size (RSS) sampled every
2 ms by a thread, peak minus the RSS when the variant started (after gc and malloc_trim). That
includes allocator caching and Python objects, and a variant run second can reuse pages the first
freed, so treat CPU memory ratios as rough; --order swaps who goes first.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


def _autocast(device: str):
    from studio.core.training import _autocast as ours

    return ours(device)   # the same precision policy for both: bf16 autocast on CUDA when able


# ---- the two variants --------------------------------------------------------------------------

def run_ours(args, ids, params) -> dict:
    import transformers

    from studio import plugins
    from studio.core import training as tr
    from studio.core.recipe import Recipe

    total = args.warmup + args.steps
    recipe = Recipe()
    recipe.method.id, recipe.method.params = args.method, dict(params)
    t = recipe.training
    t.max_steps, t.batch_size, t.grad_accum, t.seed = total, args.batch, 1, args.seed
    t.learning_rate, t.eval_every, t.save_every = args.lr, 0, 0
    t.log_every, t.gradient_checkpointing = args.log_every, args.grad_ckpt
    plugin = plugins.get_plugin(args.method)
    params = recipe.method_params()
    items = [{"input_ids": row, "labels": row} for row in ids.tolist()]
    data = tr._Data(items, [], 0, math.ceil(len(items) / t.batch_size))
    events: list[dict] = []
    timer = StepTimer(args.device, args.warmup, total, args.profile)
    with Memory(args.device) as mem, tempfile.TemporaryDirectory() as run_dir:
        tr.seed_everything(args.seed)
        model = build_model(args, for_ours=True)
        if t.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        batches = tr.Batches([items[i:i + t.batch_size] for i in range(0, len(items), t.batch_size)],
                             0)
        ctx = {"total_steps": total, "train_batches": batches, "tokenizer": None,
               "device": args.device, "run_dir": run_dir, "seed": t.seed,
               "gradient_checkpointing": t.gradient_checkpointing, "quantization": "",
               "learning_rate": t.learning_rate}
        model = plugin.apply(model, params, ctx)
        model.train()
        callbacks = plugin.callbacks(model, params, ctx) + [timer]
        groups = (plugin.optimizer_param_groups(model, params, t.learning_rate)
                  or tr._default_param_groups(model, t.weight_decay))
        optimizer = tr._make_optimizer(groups, recipe, args.device)
        scheduler = transformers.get_scheduler(t.lr_scheduler, optimizer,
                                               num_warmup_steps=t.warmup_steps,
                                               num_training_steps=total)
        loop = tr._Loop(recipe, Path(run_dir), events.append, tr.Control(), model, plugin,
                        optimizer, scheduler, callbacks, data, 0, args.device, total)
        loop.run(0, 0, 0)
        trainable, _ = plugins.count_parameters(model)
        del model, optimizer, scheduler, loop, callbacks, groups
    losses = [e["loss"] for e in events if e.get("event") == "log"]
    return _result("ours", args, timer, mem, trainable, losses)


def run_baseline(args, ids, params) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from studio import plugins

    total = args.warmup + args.steps
    timer = StepTimer(args.device, args.warmup, total, args.profile)
    losses = []
    with Memory(args.device) as mem:
        torch.manual_seed(args.seed)
        model = build_model(args, for_ours=False)
        if args.grad_ckpt:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        if args.method == "lora":
            target = params["target_modules"]
            config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=params["r"],
                                lora_alpha=params["lora_alpha"],
                                lora_dropout=params["lora_dropout"],
                                target_modules=target if target == "all-linear"
                                else [s.strip() for s in target.split(",")],
                                bias=params["bias"], use_rslora=params["use_rslora"])
            model = get_peft_model(model, config)
        else:   # the plugin's own peft config (its apply() is get_peft_model for peft methods)
            model = plugins.get_plugin(args.method).apply(model, params, {"device": args.device})
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(ids), batch_size=args.batch, shuffle=True,
            drop_last=True, generator=torch.Generator().manual_seed(args.seed))
        step = 0
        for (batch,) in loader:
            batch = batch.to(args.device, non_blocking=True)
            with _autocast(args.device):
                out = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            timer.on_step_end(step)
            if step in (1, total):
                losses.append(float(out.loss.detach()))   # outside the timed window (first and last)
            del out
            if step == total:
                break
        n_trainable = sum(p.numel() for p in trainable)
        del model, optimizer, trainable, loader
    return _result("baseline", args, timer, mem, n_trainable, losses)


def _result(name, args, timer, mem, trainable, losses) -> dict:
    tokens = args.steps * args.batch * args.seq
    if timer.profile_table:
        print(f"---- {name}: torch.profiler over the timed steps (timings below are slowed by it)")
        print(timer.profile_table, flush=True)
    return {"variant": name, "tokens_per_s": tokens / timer.seconds,
            "seconds_per_step": timer.seconds / args.steps, "timed_steps": args.steps,
            "peak_mb": round(mem.used_mb, 1), "memory_kind": _memory_kind(args.device),
            "trainable_params": int(trainable),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}


def _memory_kind(device: str) -> str:
    return ("cuda max_memory_allocated" if device.startswith("cuda")
            else "peak sampled RSS above start")


# ---- main ------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="local HF model folder (default: the shipped SmolLM2-135M)")
    src.add_argument("--shape", choices=sorted(SHAPES), help="random-init model of this shape")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weight dtype of the frozen model (the studio's default is float32; on "
                        "CUDA both variants autocast to bf16 anyway)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--method", default="lora", help="method plugin id (default lora)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. --param r=16 --param target_modules=q_proj,v_proj")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--log-every", type=int, default=1, help="ours: log interval (studio default 1)")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in both")
    p.add_argument("--repeats", type=int, default=1,
                   help="run each variant this many times, alternating which goes first")
    p.add_argument("--order", default="ours,baseline", choices=["ours,baseline", "baseline,ours"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--profile", action="store_true",
                   help="print a torch.profiler table of each variant's timed steps")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    args = p.parse_args(argv)
    if not args.shape and not args.model:
        args.model = str(default_model_path())
    if min(args.batch, args.seq, args.steps) < 1 or args.warmup < 0:
        p.error("--batch, --seq and --steps must be >= 1 and --warmup >= 0")
    return args


def method_params(args) -> dict:
    from studio import plugins

    plugin = plugins.get_plugin(args.method)
    values = {}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--param {item!r}: use KEY=VALUE")
        kind = plugin.parameters.get(key, {}).get("type", "string")
        try:
            values[key] = {"integer": int, "number": float, "string": str,
                           "boolean": lambda s: s.lower() in ("1", "true", "yes")}[kind](raw)
        except ValueError:
            raise SystemExit(f"--param {item!r}: {key} must be of type {kind}") from None
    return plugin.validate(values)


def main(argv=None) -> dict:
    import peft
    import torch
    import transformers

    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    params = method_params(args)
    import studio.core.models  # noqa: F401 - imported before any memory window opens
    import studio.core.training  # noqa: F401
    n_rows = (args.warmup + args.steps) * args.batch
    ids = synthetic_ids(vocab_size(args), n_rows, args.seq, args.seed)
    runners = {"ours": run_ours, "baseline": run_baseline}
    order = args.order.split(",")
    runs = {"ours": [], "baseline": []}
    for r in range(args.repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            res = runners[name](args, ids, params)
            runs[name].append(res)
            print(f"  {name:9s} run {r + 1}: {res['tokens_per_s']:10.1f} tok/s "
                  f"{res['peak_mb']:9.1f} MB  loss {res['loss_first']:.3f} -> "
                  f"{res['loss_last']:.3f}", flush=True)
    best = {name: {**max(rs, key=lambda x: x["tokens_per_s"]),
                   "tokens_per_s_median": statistics.median(x["tokens_per_s"] for x in rs),
                   "peak_mb": max(x["peak_mb"] for x in rs)} for name, rs in runs.items()}
    ratios = {"tokens_per_s": best["ours"]["tokens_per_s_median"]
              / best["baseline"]["tokens_per_s_median"],
              "peak_mb": best["ours"]["peak_mb"] / best["baseline"]["peak_mb"]
              if best["baseline"]["peak_mb"] > 0 else None}
    env = {"device": args.device, "device_name": torch.cuda.get_device_name(args.device)
           if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
           "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__}
    setup = {"model": args.shape or args.model, "dtype": args.dtype, "batch": args.batch,
             "seq": args.seq, "steps": args.steps, "warmup": args.warmup, "method": args.method,
             "params": params, "grad_ckpt": args.grad_ckpt, "repeats": args.repeats}
    report = {"env": env, "setup": setup, "results": best, "runs": runs, "ratios": ratios}
    print(f"\n{setup['model']} | {args.method} | batch {args.batch} x seq {args.seq} | "
          f"{args.steps} timed steps (+{args.warmup} warmup) | {env['device_name']} | "
          f"dtype {args.dtype}")
    print(f"{'variant':10s} {'tokens/s':>12s} {'s/step':>9s} {'peak MB':>10s}  memory measured as")
    for name in ("ours", "baseline"):
        b = best[name]
        per_step = args.batch * args.seq / b["tokens_per_s_median"]
        print(f"{name:10s} {b['tokens_per_s_median']:12.1f} "
              f"{per_step:9.4f} {b['peak_mb']:10.1f}  {b['memory_kind']}")
    mem_ratio = f"{ratios['peak_mb']:.3f}" if ratios["peak_mb"] is not None else "n/a"
    print(f"ratio ours/baseline: tokens/s {ratios['tokens_per_s']:.3f}, peak memory {mem_ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()

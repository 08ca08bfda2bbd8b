"""Training throughput: our training loop vs a plain transformers+peft loop, in one process.

    python benchmarks/train_throughput.py                       # shipped SmolLM2-135M, CPU-sized
    python benchmarks/train_throughput.py --shape qwen2-0.5b --device cuda --batch 8 --seq 1024

Both variants get the same model (same weights: the same folder, or the same seeded random init),
the same synthetic token batches (batch x seq, every position trained), the same method and
hyperparameters, the same step count and the same precision policy; the first --warmup steps of
each are run but not timed. Printed per variant: tokens/s over the timed steps and peak memory;
then the ratios ours/baseline.

"ours" drives studio.core.training's own step loop (StepLoop: collation, autocast, loss scaling,
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
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.bench_common import (Memory, StepTimer, add_model_args, build_model,  # noqa: E402
                                     default_model_path, synthetic_ids, vocab_size)


def _autocast(device: str):
    from studio.core.training import autocast_for as ours

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
    data = tr.TrainData(items, [], 0, math.ceil(len(items) / t.batch_size))
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
                  or tr.default_param_groups(model, t.weight_decay))
        optimizer = tr.make_optimizer(groups, recipe, args.device)
        scheduler = transformers.get_scheduler(t.lr_scheduler, optimizer,
                                               num_warmup_steps=t.warmup_steps,
                                               num_training_steps=total)
        loop = tr.StepLoop(recipe, Path(run_dir), events.append, tr.Control(), model, plugin,
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
    add_model_args(p)
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


def summarize(report: dict) -> dict:
    """Per variant: median tokens/s over the repeats and the smallest peak memory (the first
    variant in a process also pays one-time allocations, e.g. the cuBLAS workspace); ratios."""
    results = {}
    for name, rs in report["runs"].items():
        tps = statistics.median(x["tokens_per_s"] for x in rs)
        tokens_per_step = report["setup"]["batch"] * report["setup"]["seq"]
        results[name] = {
            "tokens_per_s": tps, "tokens_per_s_runs": [x["tokens_per_s"] for x in rs],
            "seconds_per_step": tokens_per_step / tps,
            "peak_mb": min(x["peak_mb"] for x in rs), "peak_mb_runs": [x["peak_mb"] for x in rs],
            "memory_kind": rs[0]["memory_kind"], "trainable_params": rs[0]["trainable_params"],
            "timed_steps": rs[0]["timed_steps"],
            "loss_first": rs[0]["loss_first"], "loss_last": rs[0]["loss_last"]}
    ours, base = results["ours"], results["baseline"]
    ratios = {"tokens_per_s": ours["tokens_per_s"] / base["tokens_per_s"],
              "peak_mb": ours["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else None}
    return {**report, "results": results, "ratios": ratios}


def print_report(report: dict) -> None:
    setup, env, ratios = report["setup"], report["env"], report["ratios"]
    print(f"\n{setup['model']} | {setup['method']} | batch {setup['batch']} x seq {setup['seq']} "
          f"| {setup['steps']} timed steps (+{setup['warmup']} warmup) x {setup['repeats']} "
          f"repeats | {env['device_name']} | dtype {setup['dtype']}")
    print(f"{'variant':10s} {'tokens/s':>12s} {'s/step':>9s} {'peak MB':>10s}  memory measured as")
    for name in ("ours", "baseline"):
        r = report["results"][name]
        print(f"{name:10s} {r['tokens_per_s']:12.1f} {r['seconds_per_step']:9.4f} "
              f"{r['peak_mb']:10.1f}  {r['memory_kind']}")
    mem = f"{ratios['peak_mb']:.3f}" if ratios["peak_mb"] is not None else "n/a"
    print(f"ratio ours/baseline: tokens/s {ratios['tokens_per_s']:.3f}, peak memory {mem}")


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
    import studio.core.models  # imported before any memory window opens
    if args.model:
        studio.core.models.check_model_folder(args.model)   # UserError naming what is wrong
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
    env = {"device": args.device, "device_name": torch.cuda.get_device_name(args.device)
           if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
           "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__}
    setup = {"model": args.shape or args.model, "dtype": args.dtype, "batch": args.batch,
             "seq": args.seq, "steps": args.steps, "warmup": args.warmup, "method": args.method,
             "params": params, "grad_ckpt": args.grad_ckpt, "repeats": args.repeats,
             "log_every": args.log_every}
    report = summarize({"env": env, "setup": setup, "runs": runs})
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


if __name__ == "__main__":
    from studio.errors import UserError

    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

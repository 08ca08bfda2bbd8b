"""Fine-tuning speed on real instruction data: our loop vs transformers Trainer vs TRL SFTTrainer.

    python benchmarks/sft_speed.py                                   # demo data, SmolLM2-135M, CPU
    python benchmarks/sft_speed.py --data bigbench:/tmp/bb --examples 512 --steps 30 --repeats 2
    python benchmarks/sft_speed.py --shape qwen2-0.5b --device cuda --batch 8 --max-length 1024

What is compared, in one process, each variant on the same model weights, the same tokenized
examples (prompt + answer through the chat template, only answer tokens trained), LoRA r16 on
all linear layers, the same learning rate / schedule / batch size / number of optimizer steps and
each trainer's own precision policy (`--precision auto`, the default; the report gives each one's):
ours computes in bf16 with bf16 frozen weights where the device multiplies bf16 natively (a recent
GPU, a CPU with avx512_bf16/AMX), the Trainer in its default (fp32; bf16 autocast on a GPU that has
it), TRL in bf16 where the device has it (its default is bf16; its fastest setting). `--precision
fp32|bf16` gives every variant that one instead:

  ours      studio.core.training's StepLoop with the recipe's defaults (padding-free batches,
            logits only on trained tokens: studio/core/packing.py); `--no-packing` for padded
  trainer   transformers Trainer + peft with its defaults (each batch padded to its longest
            example: DataCollatorForSeq2Seq)
  trl       TRL SFTTrainer on the same pre-tokenized examples (completion mask = our labels),
            in both of its fast modes: padding_free=True, and packing=True (BFD); both shown

Ours, the Trainer and TRL padding-free take the same examples at every step (the Trainers read
the dataset in our loop's shuffled order instead of their own sampler's): the same trained tokens,
so their loss curves and final eval losses are directly comparable. TRL's packing mode fills rows
of --max-length with many examples (more examples per step): compare it by trained tokens/s.

Data (say which in the report): `demo` = resources/demo/dates_train.jsonl (short, similar
lengths); `bigbench:DIR` = examples of the repo's Text-to-LoRA training tasks
(resources/hypernetworks/library_split.json) from unpacked BIG-bench files: varied lengths and
answer sizes, the realistic case; or any studio data file (.jsonl / .csv).

Measured per variant: trained tokens/s over the timed steps (tokens whose loss is trained, counted
from the batches each trainer really consumed), all tokens/s (real, not padded), peak memory
(CUDA allocator, or sampled RSS above the start on CPU: rough), the final eval loss on held-out
examples (the same function for all: studio.core.evaluate.eval_loss on padded batches, in fp32
on the fp32 base weights with the trained adapter, whatever a variant trained in). Ratios:
ours / trainer and ours / best TRL mode. `--repeats N` alternates the order; medians are shown.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

from benchmarks.bench_common import (SHAPES, Memory, add_model_args, build_model,  # noqa: E402
                                     default_model_path)

VARIANTS = ("ours", "trainer", "trl_padding_free", "trl_packing")
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


# ---- data ----------------------------------------------------------------------------------------

def load_examples(spec: str, n: int, seed: int):
    """Studio Examples (chat messages) from `demo`, `bigbench:DIR` or a data file."""
    from studio.core.data import load_examples as load_file
    from studio.paths import resources_dir

    if spec == "demo":
        return load_file(resources_dir() / "demo" / "dates_train.jsonl")[:n]
    if spec.startswith("bigbench:"):
        from studio.core.bigbench import load_task, task_to_examples

        root = Path(spec.split(":", 1)[1])
        root = root / "bigbench_tasks" if (root / "bigbench_tasks").is_dir() else root
        split = json.loads((resources_dir() / "hypernetworks" / "library_split.json").read_text())
        keys = [k for k in split["train"] if (root / k / "task.json").is_file()]
        per_task = max(1, -(-n // max(1, len(keys))))
        out = []
        for key in keys:
            out += task_to_examples(load_task(root / key), per_task, seed=seed)
        random.Random(seed).shuffle(out)
        return out[:n]
    return load_file(spec)[:n]


def tokenized(examples, tokenizer, max_length: int, vocab: int) -> list[dict]:
    from studio.core.data import tokenize_example

    items = []
    for ex in examples:
        item = tokenize_example(ex, tokenizer, max_length)
        if vocab < len(tokenizer):          # a random-shape model with a smaller vocabulary
            item = {k: [t % vocab if t >= 0 else t for t in v] for k, v in item.items()}
        if any(y != -100 for y in item["labels"][1:]):
            items.append(item)
    return items


def trained(items) -> int:
    return sum(sum(1 for y in i["labels"][1:] if y != -100) for i in items)


def real_tokens(items) -> int:
    return sum(len(i["input_ids"]) for i in items)


# ---- the variants ---------------------------------------------------------------------------------

class Clock:
    """perf_counter at the end of each optimizer step (device synchronised)."""

    def __init__(self, device):
        self.device, self.ends = device, []

    def tick(self):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def seconds(self, warmup, total):
        return self.ends[total - 1] - self.ends[warmup - 1]


def _model(args):
    return build_model(args, for_ours=True)


def run_ours(args, items, consumed) -> tuple[object, list[float], Clock]:
    import transformers

    from studio import plugins
    from studio.core import training as tr
    from studio.core.recipe import Recipe

    total = args.warmup + args.steps
    recipe = Recipe()
    recipe.method.id, recipe.method.params = "lora", dict(LORA)
    t = recipe.training
    t.max_steps, t.batch_size, t.grad_accum, t.seed = total, args.batch, 1, args.seed
    t.learning_rate, t.eval_every, t.save_every, t.warmup_steps = args.lr, 0, 0, 0
    t.lr_scheduler, t.precision, t.packing = "cosine", precision_of(args, "ours"), not args.no_packing
    plugin = plugins.get_plugin("lora")
    clock = Clock(args.device)

    class Tick:
        def on_step_end(self, step, model=None, optimizer=None):
            clock.tick()

    t.group_by_length, t.frozen_bf16 = not args.no_grouping, not args.no_frozen_bf16
    grouped = t.group_by_length and args.no_packing        # as StepLoop: padded batches only
    for _epoch, _index, batch in _take(tr.micro_batches(items, t.batch_size, t.seed, 0, 0,
                                                        group_by_length=grouped), total):
        consumed.append(batch)
    data = tr.TrainData(items, [], 0, -(-len(items) // t.batch_size))
    events: list[dict] = []
    with tempfile.TemporaryDirectory() as run_dir:
        tr.seed_everything(args.seed)
        model = _model(args)
        model.config.use_cache = False
        ctx = {"total_steps": total, "train_batches": None, "tokenizer": None,
               "device": args.device, "run_dir": run_dir, "seed": t.seed,
               "gradient_checkpointing": False, "quantization": "", "learning_rate": t.learning_rate}
        model = plugin.apply(model, recipe.method_params(), ctx)
        tr.hold_frozen(model, t, args.device, None, args.dtype)       # as run_training does
        model.train()
        groups = tr.default_param_groups(model, t.weight_decay)
        optimizer = tr.make_optimizer(groups, recipe, args.device)
        scheduler = transformers.get_scheduler(t.lr_scheduler, optimizer, num_warmup_steps=0,
                                               num_training_steps=total)
        loop = tr.StepLoop(recipe, Path(run_dir), events.append, tr.Control(), model, plugin,
                           optimizer, scheduler, [Tick()], data, 0, args.device, total)
        loop.run(0, 0, 0)
    losses = [e["loss"] for e in events if e.get("event") == "log"]
    return model, losses, clock


def _take(gen, n):
    for _ in range(n):
        yield next(gen)


def _hf_args(args, tmp, name, **extra):
    return dict(output_dir=tmp, per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
                learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
                logging_steps=1, save_strategy="no", report_to=[], seed=args.seed,
                use_cpu=args.device == "cpu", bf16=precision_of(args, name) == "bf16",
                dataloader_num_workers=0, disable_tqdm=True, **extra)


def precision_of(args, name: str) -> str:
    """What variant `name` computes in: `--precision` when fixed, else its own policy (ours: the
    studio's auto; Trainer: its default, fp32, bf16 autocast on a GPU that has it; TRL: bf16
    where the device multiplies it natively, its default and fastest setting)."""
    import torch

    from studio.core.training_parts import compute_dtype

    if args.precision != "auto":
        return args.precision
    native = compute_dtype(args.device, "auto")
    if name == "ours" or name.startswith("trl"):
        return "bf16" if native == "bf16" else "fp32"
    return "bf16" if args.device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"


def fp32_for_eval(model, args):
    """The trained model with its frozen base back in fp32 (ours holds it in bf16 while training):
    every variant's adapter is evaluated on the same fp32 base weights."""
    import torch

    if all(p.dtype == torch.float32 for p in model.parameters()):
        return model
    fresh = build_model(args, for_ours=True).state_dict()
    model.float()
    with torch.no_grad():
        for name, tensor in model.get_base_model().state_dict(keep_vars=True).items():
            source = fresh.get(name.replace(".base_layer", ""))
            if "lora_" not in name and source is not None and source.shape == tensor.shape:
                tensor.copy_(source)
    return model


def _peft(model):
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=LORA["r"],
                                            lora_alpha=LORA["lora_alpha"], lora_dropout=0.0,
                                            target_modules="all-linear"))


def _callback(clock):
    from transformers import TrainerCallback

    class Tick(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()

    return Tick()


def _quiet(trainer):
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)     # no per-step dict printing in the report


def _sequential(cls):
    """`cls` taking the dataset in its stored order (the order our loop uses), so every variant
    trains on the same examples at each step: same trained tokens, comparable loss curves. The
    speed of a trainer does not depend on its sampler."""
    import torch

    class Sequential(cls):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    return Sequential


def _counting(collator, consumed):
    """Wrap a collator: record the examples of every batch the trainer really takes."""

    def collate(features):
        consumed.append([{"input_ids": list(f["input_ids"]),
                          "labels": list(f.get("labels") or [t if m else -100 for t, m in
                                                             zip(f["input_ids"], f["completion_mask"])])}
                         for f in features])
        return collator(features)

    return collate


def our_order(args, items) -> list[dict]:
    """The examples in the order our loop takes them (its seeded shuffle, epoch after epoch)."""
    from studio.core.training_parts import micro_batches

    stream = micro_batches(items, args.batch, args.seed, 0, 0)
    return [x for _e, _i, batch in _take(stream, args.warmup + args.steps) for x in batch]


def run_trainer(args, items, consumed, tokenizer):
    import datasets
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    clock = Clock(args.device)
    torch.manual_seed(args.seed)
    model = _peft(_model(args))
    ds = datasets.Dataset.from_list([{"input_ids": i["input_ids"], "labels": i["labels"],
                                      "attention_mask": [1] * len(i["input_ids"])}
                                     for i in our_order(args, items)])
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _sequential(Trainer)(model=model, args=TrainingArguments(**_hf_args(args, tmp, "trainer")),
                          train_dataset=ds, data_collator=_counting(collator, consumed),
                          callbacks=[_callback(clock)])
        _quiet(trainer)
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return model, losses, clock


def run_trl(args, items, consumed, tokenizer, mode):
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    clock = Clock(args.device)
    torch.manual_seed(args.seed)
    model = _peft(_model(args))
    ds = datasets.Dataset.from_list([{"input_ids": i["input_ids"],
                                      "completion_mask": [int(y != -100) for y in i["labels"]]}
                                     for i in (our_order(args, items) if mode == "padding_free" else items)])
    extra = {"padding_free": True} if mode == "padding_free" else {"packing": True}
    with tempfile.TemporaryDirectory() as tmp:
        # the examples are already cut at --max-length (padding_free refuses a max_length)
        config = SFTConfig(**_hf_args(args, tmp, f"trl_{mode}", max_length=None if mode == "padding_free"
                                      else args.max_length, completion_only_loss=True, **extra))
        trainer = (_sequential(SFTTrainer) if mode == "padding_free" else SFTTrainer)(model=model, args=config, train_dataset=ds,
                             processing_class=tokenizer, callbacks=[_callback(clock)])
        trainer.data_collator = _counting(trainer.data_collator, consumed)
        _quiet(trainer)
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return model, losses, clock


# ---- one repeat -------------------------------------------------------------------------------

def measure(name, args, items, eval_items, tokenizer) -> dict:
    import gc

    from studio.core.data import collate
    from studio.core.evaluate import eval_loss

    consumed: list[list[dict]] = []
    with Memory(args.device) as mem:
        if name == "ours":
            model, losses, clock = run_ours(args, items, consumed)
        elif name == "trainer":
            model, losses, clock = run_trainer(args, items, consumed, tokenizer)
        else:
            model, losses, clock = run_trl(args, items, consumed, tokenizer, name[4:])
    pad = tokenizer.pad_token_id or 0
    batches = [collate(eval_items[i:i + args.batch], pad) for i in range(0, len(eval_items), args.batch)]
    final_eval = eval_loss(fp32_for_eval(model, args).to(args.device), batches)
    total = args.warmup + args.steps
    timed = consumed[args.warmup:total]
    seconds = clock.seconds(args.warmup, total)
    result = {"variant": name, "seconds": seconds, "timed_steps": len(timed),
              "trained_tokens": trained([x for b in timed for x in b]),
              "tokens": real_tokens([x for b in timed for x in b]),
              "peak_mb": mem.used_mb, "loss_first": losses[0] if losses else None,
              "loss_last": losses[-1] if losses else None, "eval_loss": final_eval,
              "steps_logged": len(losses), "precision": precision_of(args, name)}
    result["trained_tokens_per_s"] = result["trained_tokens"] / seconds
    result["tokens_per_s"] = result["tokens"] / seconds
    del model
    gc.collect()
    return result


def summarize(runs: dict[str, list[dict]]) -> dict:
    med = {}
    for name, results in runs.items():
        med[name] = {k: statistics.median(r[k] for r in results)
                     for k in ("trained_tokens_per_s", "tokens_per_s", "peak_mb", "eval_loss",
                               "trained_tokens")}
        med[name]["runs"] = [round(r["trained_tokens_per_s"], 1) for r in results]
        med[name]["precision"] = results[0].get("precision", "")
    ratios = {}
    if "ours" in med:
        for other in med:
            if other != "ours":
                ratios[other] = {
                    "trained_tokens_per_s": med["ours"]["trained_tokens_per_s"] / med[other]["trained_tokens_per_s"],
                    "peak_mb": (med["ours"]["peak_mb"] / med[other]["peak_mb"]) if med[other]["peak_mb"] > 0 else None,
                    "eval_loss": med["ours"]["eval_loss"] / med[other]["eval_loss"]}
    trl = [n for n in med if n.startswith("trl")]
    best_trl = max(trl, key=lambda n: med[n]["trained_tokens_per_s"]) if trl else None
    return {"median": med, "ratios": ratios, "best_trl": best_trl}


def print_report(report: dict) -> None:
    s, setup = report["summary"], report["setup"]
    print(f"\ndata: {setup['data']} ({setup['examples']} examples, token lengths median "
          f"{setup['length_median']}, p95 {setup['length_p95']}, max {setup['length_max']}; "
          f"trained tokens per example median {setup['trained_median']})")
    print(f"model: {setup['model']}, LoRA r16 all-linear, batch {setup['batch']}, "
          f"{setup['steps']} timed steps after {setup['warmup']}, precision {setup['precision']}, "
          f"device {setup['device']}, threads {setup['threads']}, repeats {setup['repeats']}")
    print(f"{'variant':18} {'precision':>9} {'trained tok/s':>14} {'tok/s':>9} {'peak MB':>9} "
          f"{'eval loss':>10}  runs")
    for name, m in s["median"].items():
        print(f"{name:18} {m.get('precision', ''):>9} {m['trained_tokens_per_s']:14,.1f} "
              f"{m['tokens_per_s']:9,.1f} {m['peak_mb']:9,.0f} {m['eval_loss']:10.4f}  {m['runs']}")
    for other, r in s["ratios"].items():
        mem = f"{r['peak_mb']:.2f}x" if r["peak_mb"] else "n/a"
        print(f"ours / {other:16} trained tok/s {r['trained_tokens_per_s']:.2f}x   peak memory {mem}"
              f"   eval loss {r['eval_loss']:.3f}x")
    if s["best_trl"]:
        print(f"fastest TRL mode here: {s['best_trl']}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--data", default="demo", help="demo | bigbench:DIR | a .jsonl/.csv data file")
    p.add_argument("--examples", type=int, default=256, help="training examples (then cycled)")
    p.add_argument("--eval-examples", type=int, default=32)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=12, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-packing", action="store_true", help="ours with padded batches")
    p.add_argument("--no-frozen-bf16", action="store_true",
                   help="ours in bf16 autocast over fp32 frozen weights (training.frozen_bf16 off)")
    p.add_argument("--no-grouping", action="store_true",
                   help="ours' padded batches without length grouping (training.group_by_length)")
    p.add_argument("--repeats", type=int, default=1, help="each variant N times, order rotated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON here")
    args = p.parse_args(argv)
    if not args.model and not args.shape:
        args.model = str(default_model_path())
    return args


def main(argv=None) -> dict:
    import torch
    from transformers import AutoTokenizer

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok_dir = args.model or str(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = SHAPES[args.shape]["vocab_size"] if args.shape else len(tokenizer)
    examples = load_examples(args.data, args.examples + args.eval_examples, args.seed)
    all_items = tokenized(examples, tokenizer, args.max_length, vocab)
    eval_items, items = all_items[:args.eval_examples], all_items[args.eval_examples:]
    need = args.batch * (args.warmup + args.steps)
    while len(items) < need:                      # cycle a small file (each pass reshuffled by the loops)
        items = items + items[: need - len(items)]
    lengths = sorted(len(i["input_ids"]) for i in items)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            res = measure(name, args, items, eval_items, tokenizer)
            runs[name].append(res)
            print(f"[{rep + 1}/{args.repeats}] {name}: {res['trained_tokens_per_s']:,.1f} trained tok/s, "
                  f"{res['tokens_per_s']:,.1f} tok/s, peak {res['peak_mb']:,.0f} MB, "
                  f"eval loss {res['eval_loss']:.4f}", flush=True)
    report = {
        "setup": {"data": args.data, "examples": len(items), "model": args.shape or args.model,
                  "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                  "precision": args.precision, "device": args.device,
                  "threads": torch.get_num_threads(), "repeats": args.repeats,
                  "packing": not args.no_packing, "grouping": not args.no_grouping,
                  "frozen_bf16": not args.no_frozen_bf16,
                  "max_length": args.max_length,
                  "length_median": statistics.median(lengths),
                  "length_p95": lengths[int(0.95 * (len(lengths) - 1))], "length_max": lengths[-1],
                  "trained_median": statistics.median(trained([i]) for i in items)},
        "runs": runs,
    }
    report["summary"] = summarize(runs)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()

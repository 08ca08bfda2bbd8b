"""The honest evaluation of generated LoRAs: held-out tasks, held-out descriptions, every baseline.

    python benchmarks/hyper_eval.py --library LIB --t2l T2L_DIR [--dnd DND_DIR] [--limit 30]
                                    [--work DIR] [--parallel N] [--out docs/text_to_lora_eval_report.md]

LIB is a library built by `peft-studio hyper build-library` (studio/hyper/library.py): its
"held_out" tasks were never seen by hypernetwork training, but each has its own LoRA (the oracle).
For each held-out task, on examples that no LoRA was trained on (the library keeps the first
`eval_examples` of each task apart and trains on the next `train_examples`; the rest are unused),
it scores with studio.core.bigbench (multiple choice by log-likelihood, generative by exact match):

  base                 the base model
  base + description   the task description (a held-out one) in front of every prompt
  multi-task LoRA      one LoRA trained on all training tasks' examples (same rank/modules), with
                       as many optimizer steps as the whole library used (tasks x steps per task)
  nearest library LoRA the training task whose descriptions are closest (sentence embedding)
  Text-to-LoRA         generated from the held-out description (--t2l; and --t2l-second, a second
                       network, e.g. another training mode, scored side by side)
  DnD                  generated from 8 unlabelled example inputs of the task
  oracle LoRA          the held-out task's own LoRA (trained on its examples)
  controls             Text-to-LoRA from another held-out task's description (shuffled) and from a
                       random bag of words drawn from all descriptions (random)

Per task: score and 95% bootstrap CI over examples. Average: mean over tasks with a stratified
bootstrap CI; paired differences (same examples) with their CIs decide what the table shows.
Writes a markdown report (and --json with every per-example result).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hyper_eval_report import CONDITIONS  # noqa: E402 - the report owns the table rows
from hyper_eval_report import write_report  # noqa: E402
from studio.errors import UserError  # noqa: E402



# ---------------------------------------------------------------- data
def eval_task(entry, bigbench: Path | None, limit: int):
    """The held-out task with only examples no LoRA was trained on, and the unlabelled prompts
    (from the oracle's training pool) DnD may read."""
    from studio.core.bigbench import format_input, load_task

    info = entry.info if isinstance(getattr(entry, "info", None), dict) else json.loads(
        (entry.folder / "description.json").read_text(encoding="utf-8"))
    source = Path(info.get("source", ""))
    if not source.is_file() and bigbench is not None:
        source = bigbench / info.get("key", entry.name) / "task.json"
    if not source.is_file():
        raise UserError(f"the task file of '{entry.name}' is not found ({source}).",
                        path=entry.folder / "description.json",
                        fix="Pass --bigbench with the BIG-bench folder the library was built from.")
    task = load_task(source)
    if info.get("shuffled"):         # the build shuffled the examples before its eval/train split
        order = list(task.examples)
        random.Random(int(info.get("seed", 0))).shuffle(order)
        task = replace(task, examples=order)
    n_eval, n_train = int(info.get("eval_examples", 16)), int(info.get("train_examples", 200))
    unseen = task.examples[:n_eval] + task.examples[n_eval + n_train:]
    pool = task.examples[n_eval:n_eval + n_train]
    prompts = [format_input(task, ex, random.Random(i), with_prefixes=False)
               for i, ex in enumerate(pool[:8])]
    return replace(task, examples=unseen[:limit]), prompts


def majority_share(task) -> float:
    """Share of the most common correct answer: what always giving one answer would score."""
    from collections import Counter

    from studio.core.bigbench import answer_text

    answers = Counter(answer_text(ex) for ex in task.examples)
    return max(answers.values()) / max(1, len(task.examples))


def answers(task) -> list[str]:
    """The correct answer of each scored example (balanced accuracy needs them per class)."""
    from studio.core.bigbench import answer_text

    return [answer_text(ex) for ex in task.examples]


def descriptions(entry) -> tuple[str, str]:
    """(description used, which set it comes from)."""
    if entry.eval_descriptions:
        return entry.eval_descriptions[0], "held-out paraphrase"
    return entry.train_descriptions[0], "task description (task never trained on)"


def random_description(all_texts: list[str], rng: random.Random, n_words: int = 12) -> str:
    words = [w for t in all_texts for w in t.split()]
    return " ".join(rng.choice(words) for _ in range(n_words))


# ---------------------------------------------------------------- adapters
def train_multitask(base, tokenizer, lib, steps: int, out: Path, lr: float = 1e-3,
                    batch_size: int = 4, max_length: int = 128, seed: int = 0, log=print):
    """One LoRA (the library's rank and modules) on every training task's examples."""
    import torch
    from peft import get_peft_model

    from studio.core.data import collate, tokenize_example

    info_path = out / "info.json"
    if (out / "adapter" / "adapter_config.json").is_file() and info_path.is_file():
        old = json.loads(info_path.read_text(encoding="utf-8"))
        if old.get("tasks") == [e.name for e in lib.entries] and old.get("steps") == steps \
                and old.get("library") == str(lib.folder.resolve()):
            log(f"multi-task LoRA: reusing {out / 'adapter'}")
            return base
    examples = [ex for e in lib.entries for ex in e.examples()]
    tok = [tokenize_example(ex, tokenizer, max_length) for ex in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = get_peft_model(base, lib.spec.lora_config())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / max(1, steps // 10))
        loss = model(**collate(rng.sample(tok, min(batch_size, len(tok))), pad)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0 or step == steps:
            log(f"multi-task LoRA: step {step}/{steps} loss {sum(losses[-10:]) / len(losses[-10:]):.4f}")
    model.eval()
    model.save_pretrained(str(out / "adapter"))
    (out / "info.json").write_text(json.dumps({
        "steps": steps, "lr": lr, "batch_size": batch_size, "examples": len(tok),
        "tasks": [e.name for e in lib.entries], "library": str(lib.folder.resolve()),
        "first_loss": losses[0],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": time.perf_counter() - start}, indent=1), encoding="utf-8")
    return model.unload()


def nearest_entry(lib, text: str):
    """The training task whose (mean) description embedding is closest to `text`."""
    import torch

    from studio.hyper.encoder import default_encoder

    enc = default_encoder()
    query = enc.embed([text])[0]
    best, best_sim = None, -2.0
    for e in lib.entries:
        emb = enc.embed(e.train_descriptions).mean(0)
        sim = float(torch.nn.functional.cosine_similarity(query, emb, dim=0))
        if sim > best_sim:
            best, best_sim = e, sim
    return best, best_sim


def adapter_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).glob("adapter_model.*")) / 2**20


def input_sensitivity(adapter_dirs: list, spec) -> dict | None:
    """How different the LoRAs a generator made for different tasks are: mean and min pairwise
    cosine of their weight updates (B A over all layers), and the mean relative distance from
    their average. Cosines near 1 mean the generator ignores its input (one LoRA for all)."""
    import torch

    from studio.hyper.targets import read_adapter

    if len(adapter_dirs) < 2:
        return None
    flats = []
    for folder in adapter_dirs:
        lora = read_adapter(folder, spec)
        flats.append(torch.cat([(b @ a).reshape(-1) for a, b in (lora[k] for k in spec.keys)]))
    d = torch.stack(flats)
    n = torch.nn.functional.normalize(d, dim=1)
    cos = (n @ n.T)[~torch.eye(len(flats), dtype=torch.bool)]
    rel = ((d - d.mean(0, keepdim=True)).norm(dim=1) / d.norm(dim=1).clamp_min(1e-12)).mean()
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "spread": float(rel),
            "n": len(flats)}


# ---------------------------------------------------------------- scoring
def score(base, tokenizer, task, adapter: Path | None, description: str | None = None):
    """(per-example scores, result dict, base model back) for one condition."""
    from peft import PeftModel

    from studio.core.task_eval import evaluate, with_description

    if description is not None:
        task = with_description(task, description)
    model = PeftModel.from_pretrained(base, str(adapter)) if adapter else base
    res = evaluate(model, tokenizer, task, limit=None)
    back = model.unload() if adapter else base
    return [r["score"] for r in res["results"]], res, back


# ---------------------------------------------------------------- main
def run(args) -> dict:
    from studio.core.models import load_model
    from studio.hyper import api
    from studio.hyper.library import load_library
    from studio.paths import default_model_dir

    lib = load_library(args.library)
    held = lib.held_out_entries
    if args.tasks:
        held = [e for e in held if e.name in args.tasks.split(",")]
    if not held:
        raise UserError("the library has no held-out tasks to evaluate on.", path=args.library,
                        fix="Build it with --held-out N (peft-studio hyper build-library).")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_path = args.model or lib.spec.base_model or str(default_model_dir())
    base, tokenizer = load_model(model_path)
    log = print
    bigbench = Path(args.bigbench) if args.bigbench else None
    tasks = {e.name: eval_task(e, bigbench, args.limit) for e in held}
    descs = {e.name: descriptions(e) for e in held}
    every = lib.held_out_entries    # controls come from the whole held-out list, so a run split
    all_texts = [d for e in lib.entries + every for d in e.train_descriptions + e.eval_descriptions]
    names = [e.name for e in every]  # by --tasks gets the same ones as a single run
    shuffled = {n: descriptions(every[(i + 1) % len(every)])[0] if len(every) > 1
                else lib.entries[0].train_descriptions[0] for i, n in enumerate(names)}

    mt_steps = args.mt_steps or sum(int(e.info.get("steps", 0) or 0) for e in lib.entries) or 200
    if args.conditions and "multitask" not in args.conditions.split(","):
        args.skip_multitask = True
    if not args.skip_multitask:
        first = lib.entries[0].info      # same batch size, lr and length as the library's LoRAs
        base = train_multitask(base, tokenizer, lib, mt_steps, work / "multitask", log=log,
                               lr=float(first.get("lr", 1e-3)),
                               batch_size=int(first.get("batch_size", 4)),
                               max_length=int(first.get("max_length", 128)))
    t2l = api.load_hypernetwork(args.t2l) if args.t2l else None
    dnd = api.load_hypernetwork(args.dnd) if args.dnd else None
    t2l_second = api.load_hypernetwork(args.t2l_second) if args.t2l_second else None
    api.warm_up()
    gen_stats: dict[str, list] = {"t2l": [], "t2l_second": [], "dnd": []}
    rows: dict[str, dict] = {}
    for entry in held:
        name, task_prompts = entry.name, tasks[entry.name]
        task, prompts = task_prompts
        desc, desc_kind = descs[name]
        adapters: dict[str, tuple[Path | None, str | None]] = {
            "base": (None, None), "base_desc": (None, desc), "oracle": (entry.adapter_dir, None)}
        if not args.skip_multitask:
            adapters["multitask"] = (work / "multitask" / "adapter", None)
        near, sim = nearest_entry(lib, desc)
        adapters["nearest"] = (near.adapter_dir, None)
        if t2l is not None:
            for cond, text in (("t2l", desc), ("t2l_shuffled", shuffled[name]),
                               ("t2l_random", random_description(
                                   all_texts, random.Random(f"{args.seed}-{name}")))):
                res = api.generate(t2l, work / "generated" / f"{cond}-{name}", description=text,
                                   base_model=model_path)
                adapters[cond] = (Path(res["adapter_dir"]), None)
                if cond == "t2l":
                    gen_stats["t2l"].append(res)
        if t2l_second is not None:
            res = api.generate(t2l_second, work / "generated" / f"t2l_second-{name}", description=desc,
                               base_model=model_path)
            adapters["t2l_second"] = (Path(res["adapter_dir"]), None)
            gen_stats["t2l_second"].append(res)
        if dnd is not None:
            res = api.generate(dnd, work / "generated" / f"dnd-{name}", prompts=prompts,
                               base_model=model_path)
            adapters["dnd"] = (Path(res["adapter_dir"]), None)
            gen_stats["dnd"].append(res)
        row = {"task": name, "n": len(task.examples), "majority": majority_share(task),
               "answers": answers(task),
               "description": desc,
               "description_kind": desc_kind, "nearest": near.name, "nearest_similarity": sim,
               "shuffled_description": shuffled[name], "metric": None, "conditions": {}}
        wanted = set(args.conditions.split(",")) if args.conditions else None
        for cond, (adapter, text) in adapters.items():
            if wanted is not None and cond not in wanted:
                continue
            scores, res, base = score(base, tokenizer, task, adapter, text)
            row["metric"] = res["metric"]
            row["conditions"][cond] = {"score": res["score"], "ci95": res["ci95"], "scores": scores,
                                       "adapter": str(adapter) if adapter else None,
                                       "adapter_mb": adapter_mb(adapter) if adapter else 0.0,
                                       "chance": res.get("chance")}
            if res["metric"] == "exact_match":     # partial credit: is the answer getting closer?
                row["conditions"][cond]["rouge_l"] = res["rouge_l"]
                row["conditions"][cond]["rouge_scores"] = [r["rouge_l"] for r in res["results"]]
                row["conditions"][cond]["predictions"] = [r["prediction"] for r in res["results"][:5]]
            log(f"{name:32s} {cond:14s} {res['score']:.3f}  CI {res['ci95'][0]:.3f}-{res['ci95'][1]:.3f}")
        rows[name] = row
        if getattr(args, "json", None):   # an interrupted evaluation keeps the tasks it finished
            partial = Path(args.json).with_suffix(".partial.json")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"rows": rows, "gen": gen_stats}, indent=1), encoding="utf-8")
    sensitivity = {}
    for cond in ("t2l", "t2l_second", "dnd", "oracle"):
        dirs = [r["conditions"][cond]["adapter"] for r in rows.values() if cond in r["conditions"]]
        sensitivity[cond] = input_sensitivity(dirs, lib.spec)
    mt_info = work / "multitask" / "info.json"
    return {"rows": rows, "gen": gen_stats, "sensitivity": sensitivity,
            "mt_steps": None if args.skip_multitask else mt_steps,
            "mt_info": json.loads(mt_info.read_text()) if mt_info.is_file() and not args.skip_multitask
            else None, "model": model_path,
            "library": str(args.library), "t2l": args.t2l, "dnd": args.dnd, "limit": args.limit,
            "train_tasks": [e.name for e in lib.entries],
            "t2l_info": t2l.info() if t2l else None, "t2l_second": args.t2l_second,
            "t2l_second_info": t2l_second.info() if t2l_second else None, "dnd_info": dnd.info() if dnd else None}


# ---------------------------------------------------------------- parallel runs
def task_cost(entry, bigbench, limit) -> float:
    """Rough scoring cost of a task: examples x prompt length x (choices, or generated tokens)."""
    task, _ = eval_task(entry, bigbench, limit)
    n = max(1, len(task.examples))
    length = sum(len(ex.input) for ex in task.examples) / n
    per = (1 + 0.3 * sum(len(ex.target_scores) for ex in task.examples) / n
           if task.is_multiple_choice else 6.0)
    return n * (length + 40) * per


def split_tasks(costs: dict[str, float], parts: int) -> list[list[str]]:
    """Longest first, each to the least loaded part."""
    bins: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(parts)]
    for name in sorted(costs, key=costs.get, reverse=True):
        i = min(range(parts), key=lambda j: bins[j][0])
        bins[i] = (bins[i][0] + costs[name], bins[i][1] + [name])
    return [names for _, names in bins if names]


def child_args(args, tasks: list[str], json_path: Path) -> list[str]:
    out = ["--library", str(args.library), "--limit", str(args.limit), "--seed", str(args.seed),
           "--work", str(args.work), "--tasks", ",".join(tasks), "--json", str(json_path),
           "--out", str(json_path.with_suffix(".md")), "--parallel", "1", "--skip-multitask"]
    for flag, value in (("--t2l", args.t2l), ("--t2l-second", args.t2l_second), ("--dnd", args.dnd),
                        ("--model", args.model), ("--bigbench", args.bigbench),
                        ("--mt-steps", args.mt_steps or None)):
        if value:
            out += [flag, str(value)]
    conditions = args.conditions.split(",") if args.conditions else [c for c, _ in CONDITIONS]
    if not args.skip_multitask and "multitask" in conditions:
        out.remove("--skip-multitask")      # the parent trained it: children find it cached
    if args.conditions:
        out += ["--conditions", args.conditions]
    return out


def run_parallel(args) -> dict:
    """Train the multi-task LoRA once, then score the held-out tasks in `args.parallel` processes,
    each on its own CPU core(s) with its own threads, and merge their results."""
    import os
    import subprocess

    from studio.core.models import load_model
    from studio.hyper.library import load_library
    from studio.paths import default_model_dir

    lib = load_library(args.library)
    held = [e for e in lib.held_out_entries if not args.tasks or e.name in args.tasks.split(",")]
    if not held:
        raise UserError("the library has no held-out tasks to evaluate on.", path=args.library,
                        fix="Build it with --held-out N (peft-studio hyper build-library).")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    wanted = args.conditions.split(",") if args.conditions else [c for c, _ in CONDITIONS]
    if not args.skip_multitask and "multitask" in wanted:
        model_path = args.model or lib.spec.base_model or str(default_model_dir())
        base, tokenizer = load_model(model_path)
        first = lib.entries[0].info
        train_multitask(base, tokenizer, lib, args.mt_steps or sum(
            int(e.info.get("steps", 0) or 0) for e in lib.entries) or 200, work / "multitask",
            lr=float(first.get("lr", 1e-3)), batch_size=int(first.get("batch_size", 4)),
            max_length=int(first.get("max_length", 128)))
        del base
    bigbench = Path(args.bigbench) if args.bigbench else None
    groups = split_tasks({e.name: task_cost(e, bigbench, args.limit) for e in held}, args.parallel)
    cores = sorted(os.sched_getaffinity(0))
    per = max(1, len(cores) // len(groups))
    procs = []
    for i, names in enumerate(groups):
        mine = set(cores[i * per:(i + 1) * per]) or set(cores)
        env = dict(os.environ, OMP_NUM_THREADS=str(len(mine)), PYTHONUNBUFFERED="1")
        part = work / f"part-{i}.json"
        print(f"process {i}: cores {sorted(mine)}: {', '.join(names)}", flush=True)
        procs.append((part, subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *child_args(args, names, part)],
            env=env, preexec_fn=lambda m=mine: os.sched_setaffinity(0, m))))
    failed = [str(part) for part, p in procs if p.wait() != 0]
    if failed:
        raise UserError(f"{len(failed)} scoring process(es) failed; finished tasks are kept in "
                        f"{', '.join(f.replace('.json', '.partial.json') for f in failed)}.",
                        path=work, fix="Read the output above, fix, and rerun (adapters are cached).")
    return merge_results([json.loads(part.read_text(encoding="utf-8")) for part, _ in procs],
                         order=[e.name for e in held], lib=lib, skip_multitask=args.skip_multitask)


def merge_results(parts: list[dict], order: list[str], lib=None, skip_multitask=False) -> dict:
    """One result from runs over disjoint task sets (same networks and settings)."""
    merged = dict(parts[0])
    rows = {name: row for part in parts for name, row in part["rows"].items()}
    merged["rows"] = {name: rows[name] for name in order if name in rows}
    merged["gen"] = {k: [g for part in parts for g in part["gen"].get(k, [])]
                     for k in parts[0]["gen"]}
    if not skip_multitask:
        merged["mt_steps"] = next((p["mt_steps"] for p in parts if p.get("mt_steps")), None)
        merged["mt_info"] = next((p["mt_info"] for p in parts if p.get("mt_info")), None)
    if lib is not None:
        merged["sensitivity"] = {}
        for cond in ("t2l", "t2l_second", "dnd", "oracle"):
            dirs = [r["conditions"][cond]["adapter"] for r in merged["rows"].values()
                    if cond in r["conditions"]]
            merged["sensitivity"][cond] = input_sensitivity(dirs, lib.spec)
    return merged


def main(argv=None) -> int:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", required=True, help="library built by peft-studio hyper build-library")
    ap.add_argument("--t2l", help="Text-to-LoRA hypernetwork folder")
    ap.add_argument("--t2l-second", help="a second Text-to-LoRA folder scored beside --t2l "
                    "(e.g. one trained in the other mode)")
    ap.add_argument("--dnd", help="DnD hypernetwork folder")
    ap.add_argument("--model", help="base model folder (default: the library's)")
    ap.add_argument("--bigbench", help="BIG-bench folder, if the task files moved since the build")
    ap.add_argument("--tasks", default="", help="only these held-out tasks (comma list)")
    ap.add_argument("--limit", type=int, default=30, help="examples per task (default 30)")
    ap.add_argument("--mt-steps", type=int, default=0, help="multi-task LoRA steps (default: "
                    "the library's total: training tasks x steps per task)")
    ap.add_argument("--skip-multitask", action="store_true")
    ap.add_argument("--conditions", default="", help="only these conditions (comma list of: "
                    + ", ".join(c for c, _ in CONDITIONS) + ")")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=1, help="score the tasks in N processes, each "
                    "pinned to its share of the CPU cores (on a 2-core machine: 2)")
    ap.add_argument("--work", default="benchmarks/results/hyper_eval_work")
    ap.add_argument("--out", default="docs/text_to_lora_eval_report.md")
    ap.add_argument("--json", default="benchmarks/results/hyper_eval.json")
    args = ap.parse_args(argv)
    try:
        result = run_parallel(args) if args.parallel > 1 else run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = "python benchmarks/hyper_eval.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    Path(args.json).with_suffix(".partial.json").unlink(missing_ok=True)
    write_report(result, Path(args.out))
    print(f"report: {args.out}\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

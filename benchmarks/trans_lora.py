"""Does a transferred adapter carry the skill? Trans-LoRA measured on BIG-bench tasks.

For each task (first --test examples = unseen test set, the next --seeds = the source run's
evaluation split = the transfer's real seed prompts, the rest up to --train = training data):

  source        LoRA trained by the studio on the source model (SmolLM2-135M) on the real data
  direct        LoRA trained on the target model (Gemma3-270M) on the same real data (upper bound)
  transfer      `transfer` of the source run to the target (discriminator filter on)
  no filter     the same, from the same pool of written prompts, filter off (first N usable)

and scores, on the same unseen examples: target base, target + transfer, target + transfer
without the filter, target + direct, source base, source + adapter; paired differences with 95%
bootstrap CIs, and how often the target agrees with the source adapter (the teacher) before and
after the transfer. Every step is saved in --work and skipped when done (resumable):

    python benchmarks/trans_lora.py --bigbench DIR --source MODEL --target MODEL \
        --tasks linguistic_mappings/sentence_negation_json,arithmetic/2_digit_addition \
        --work /tmp/trans_lora --out benchmarks/results/trans_lora.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.core import runs  # noqa: E402
from studio.core.stats import bootstrap_ci  # noqa: E402
from studio.fileio import write_json_atomic  # noqa: E402

CONDITIONS = ("target base", "target + transfer", "target + transfer, no filter",
              "target + direct LoRA (real data)", "source base", "source + adapter (teacher)")


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def write_examples(path: Path, examples) -> None:
    path.write_text("".join(json.dumps({"messages": ex.messages}) + "\n" for ex in examples),
                    encoding="utf-8")


def train_run(recipe, base: Path, key: str, state: dict, save) -> Path:
    from studio.core.training import run_training

    if key in state:
        return Path(state[key])
    run_dir = runs.create_run(recipe, base=base)
    log_file = runs.RunLog(run_dir)
    start = time.time()
    run_training(runs.load_recipe(run_dir), run_dir, log_file.append)
    state[key] = str(run_dir)
    state[key + " seconds"] = round(time.time() - start, 1)
    save()
    return run_dir


def transfer_run(source_run: Path, target: str, base: Path, key: str, state: dict, save,
                 settings: dict, epochs: int, pool_from: Path | None = None) -> Path:
    from studio.transfer import plan as plans
    from studio.transfer.pipeline import run_transfer

    if key in state:
        return Path(state[key])
    plan = plans.check_transfer(source_run, target, settings=settings)
    run_dir = plans.create_transfer_run(plan, name=key.replace(" ", "-"),
                                        training={"epochs": epochs, "max_steps": 0},
                                        runs_base=base)
    if pool_from is not None:           # the same written prompts as the other arm
        work = run_dir / plans.WORK_DIR
        work.mkdir(exist_ok=True)
        for name in ("seeds.jsonl", "candidates.jsonl"):
            shutil.copy2(pool_from / plans.WORK_DIR / name, work / name)
        other = json.loads((pool_from / plans.WORK_DIR / "state.json").read_text())
        write_json_atomic(work / "state.json", {"stages": {k: other["stages"][k]
                                                          for k in ("seeds", "generate")}})
    log_file = runs.RunLog(run_dir)
    start = time.time()
    run_transfer(run_dir, log_file.append)
    state[key] = str(run_dir)
    state[key + " seconds"] = round(time.time() - start, 1)
    save()
    return run_dir


def score(model_dir: str, adapter: str | None, task, n_test: int, max_new_tokens: int) -> dict:
    import torch

    from studio.core.bigbench import evaluate_task
    from studio.core.chat import load_for_chat

    model, tokenizer = load_for_chat(model_dir, adapter)
    start = time.time()
    result = evaluate_task(model, tokenizer, task, max_examples=n_test, offset=0, chat=True,
                           max_new_tokens=max_new_tokens, seed=0)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"score": result["score"], "ci95": result["ci95"], "seconds": time.time() - start,
            "per_example": [r["score"] for r in result["results"]],
            "predictions": [r["prediction"] for r in result["results"]]}


def paired(a: list[float], b: list[float]) -> dict:
    diffs = [x - y for x, y in zip(a, b)]
    lo, hi = bootstrap_ci(diffs, n=2000, seed=0)
    mean = sum(diffs) / len(diffs)
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "no difference shown"
    return {"mean": mean, "ci95": [lo, hi], "verdict": verdict}


def agreement(a: list[str], b: list[str]) -> dict:
    same = [float(" ".join(x.split()).lower() == " ".join(y.split()).lower()) for x, y in zip(a, b)]
    lo, hi = bootstrap_ci(same, n=2000, seed=0)
    return {"rate": sum(same) / len(same), "ci95": [lo, hi], "per_example": same}


def run_task(task_path: Path, args, work: Path) -> dict:
    from studio.core.bigbench import load_task, task_to_examples
    from studio.core.recipe import Recipe

    task = load_task(task_path)
    key = task.name.replace("/", "__")
    folder = work / key
    folder.mkdir(parents=True, exist_ok=True)
    state_file = folder / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}

    def save():
        write_json_atomic(state_file, state)

    n_test, n_seeds = args.test, args.seeds
    train = task_to_examples(task, n=args.train, offset=n_test + n_seeds)
    seeds = task_to_examples(task, n=n_seeds, offset=n_test)
    write_examples(folder / "train.jsonl", train)
    write_examples(folder / "seeds.jsonl", seeds)
    log(f"{task.name}: {len(train)} train, {len(seeds)} seeds, {n_test} test")

    def recipe_for(model: str, name: str):
        recipe = Recipe.default(model_path=model)
        recipe.name = name
        recipe.data.path = str(folder / "train.jsonl")
        recipe.data.eval_path = str(folder / "seeds.jsonl")
        recipe.training.max_steps, recipe.training.epochs = 0, args.epochs
        recipe.training.eval_every, recipe.training.save_every = 0, 0
        return recipe

    base = folder / "runs"
    source_run = train_run(recipe_for(args.source, f"{key}-source"), base, "source run", state, save)
    log("source run", source_run)
    direct_run = train_run(recipe_for(args.target, f"{key}-direct"), base, "direct run", state, save)
    log("direct run", direct_run)
    settings = {"prompts": args.prompts, "seed_count": n_seeds, "candidates": args.candidates}
    # the filtered arm is rerun (its key deleted from state.json) from the other arm's written
    # prompts when those exist: only the filter, the answers and the training are done again
    pool = Path(state["transfer no filter"]) if "transfer no filter" in state else None
    filtered = transfer_run(source_run, args.target, base, "transfer", state, save, settings,
                            args.epochs, pool_from=pool)
    log("transfer", filtered)
    unfiltered = transfer_run(source_run, args.target, base, "transfer no filter", state, save,
                              dict(settings, filter=False), args.epochs, pool_from=filtered)
    log("transfer, no filter", unfiltered)

    models = {
        "target base": (args.target, None),
        "target + transfer": (args.target, str(filtered / "adapter")),
        "target + transfer, no filter": (args.target, str(unfiltered / "adapter")),
        "target + direct LoRA (real data)": (args.target, str(direct_run / "adapter")),
        "source base": (args.source, None),
        "source + adapter (teacher)": (args.source, str(source_run / "adapter")),
    }
    scores = state.setdefault("scores", {})
    for name in CONDITIONS:
        if name not in scores:
            model_dir, adapter = models[name]
            scores[name] = score(model_dir, adapter, task, n_test, args.max_new_tokens)
            save()
        log(f"  {name}: {scores[name]['score']:.3f} {scores[name]['ci95']}")
    per = {name: scores[name]["per_example"] for name in CONDITIONS}
    comparisons = {
        "transfer - target base": paired(per["target + transfer"], per["target base"]),
        "transfer - no filter": paired(per["target + transfer"], per["target + transfer, no filter"]),
        "transfer - direct LoRA": paired(per["target + transfer"],
                                         per["target + direct LoRA (real data)"]),
        "transfer - teacher": paired(per["target + transfer"], per["source + adapter (teacher)"]),
        "no filter - target base": paired(per["target + transfer, no filter"], per["target base"]),
    }
    teacher = scores["source + adapter (teacher)"]["predictions"]
    agree = {name: agreement(scores[name]["predictions"], teacher)
             for name in ("target base", "target + transfer", "target + transfer, no filter",
                          "target + direct LoRA (real data)")}
    agree["transfer - base"] = paired(agree["target + transfer"]["per_example"],
                                      agree["target base"]["per_example"])
    stages = {}
    for arm, run_dir in (("transfer", filtered), ("no filter", unfiltered)):
        st = json.loads((run_dir / "transfer" / "state.json").read_text())["stages"]
        stages[arm] = {k: {"message": v["message"], "seconds": v["seconds"]} for k, v in st.items()}
    return {"task": task.name, "metric": "multiple_choice_grade" if task.is_multiple_choice
            else "exact_match", "n_test": n_test, "n_train": len(train), "n_seeds": len(seeds),
            "scores": {k: {"score": v["score"], "ci95": v["ci95"]} for k, v in scores.items()},
            "comparisons": comparisons,
            "agreement_with_teacher": {k: ({kk: vv for kk, vv in v.items() if kk != "per_example"})
                                       for k, v in agree.items()},
            "stages": stages,
            "seconds": {k: v for k, v in state.items() if k.endswith("seconds")}}


def _ci(ci) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def report(results: dict) -> str:
    """The results as the markdown tables of docs/TRANS_LORA.md."""
    lines = ["| task (metric, n) | target base | target + transfer | transfer, no filter | "
             "target + direct LoRA | source base | source + adapter (teacher) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results["tasks"].items():
        sc = r["scores"]
        cells = [f"{sc[c]['score']:.2f} [{sc[c]['ci95'][0]:.2f}, {sc[c]['ci95'][1]:.2f}]"
                 for c in CONDITIONS]
        lines.append(f"| {name} ({r['metric']}, {r['n_test']}) | " + " | ".join(cells) + " |")
    lines += ["", "| task | transfer − target base | transfer − no filter | transfer − direct LoRA | "
              "transfer − teacher | agrees with teacher: base → transfer |", "|---|---|---|---|---|---|"]
    for name, r in results["tasks"].items():
        c, a = r["comparisons"], r["agreement_with_teacher"]
        cells = [f"{c[k]['mean']:+.2f} {_ci(c[k]['ci95'])}" for k in
                 ("transfer - target base", "transfer - no filter", "transfer - direct LoRA",
                  "transfer - teacher")]
        cells.append(f"{a['target base']['rate']:.2f} → {a['target + transfer']['rate']:.2f} "
                     f"(no filter {a['target + transfer, no filter']['rate']:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| task | filter stage (transfer run) | seconds: source run / direct / transfer "
              "/ no filter |", "|---|---|---|"]
    for name, r in results["tasks"].items():
        sec = r["seconds"]
        times = " / ".join(f"{sec.get(k + ' seconds', 0):.0f}" for k in
                           ("source run", "direct run", "transfer", "transfer no filter"))
        lines.append(f"| {name} | {r['stages']['transfer']['filter']['message']} | {times} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bigbench", required=True, help="folder of BIG-bench task folders")
    parser.add_argument("--tasks", required=True, help="comma list of task folders under it")
    parser.add_argument("--source", required=True, help="source model folder")
    parser.add_argument("--target", required=True, help="target model folder")
    parser.add_argument("--work", required=True, help="working folder (resumable)")
    parser.add_argument("--out", required=True, help="results JSON")
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--train", type=int, default=168)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--candidates", type=float, default=2.0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"tasks": {}}
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("work", "out")}
    for name in args.tasks.split(","):
        result = run_task(Path(args.bigbench) / name.strip(), args, work)
        results["tasks"][result["task"]] = result
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, results)
        log(json.dumps(result["comparisons"], indent=1))
    out.with_suffix(".md").write_text(report(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

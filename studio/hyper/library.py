"""A library of task LoRAs: the training data of the hypernetworks.

Layout of a library folder:
    library.json                     {"base_model", "spec", "tasks": [names]}
    <task>/description.json          task name, description, train/eval description sets,
                                     source, training settings, losses
    <task>/examples.jsonl            the chat-format training examples (studio.core.data format)
    <task>/adapter/                  the final LoRA (standard PEFT folder)
    <task>/checkpoints/step-N/       intermediate LoRAs (DnD trains on these)

Every task LoRA starts from the same random A (one init seed for the whole library), so raw
A/B targets of different tasks are comparable. Description "paraphrases" are template
rewrites of the BIG-bench description (and its task_prefix); two templates are held out for
evaluation. They are not model-written paraphrases: edit description.json to add real ones.

    python -m studio.hyper.library --bigbench DIR --out LIB --tasks a,b --steps 40
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from studio.core.bigbench import BigBenchTask, answer_text, format_input, load_task, task_to_examples
from studio.errors import UserError
from studio.hyper.targets import LoraSpec, spec_from_model

TEMPLATES = [
    "{d}.",
    "Task: {d}.",
    "Instruction: {d}.",
    "Your job: {dl}.",
    "I need a model that can do this: {dl}.",
    "Help me with the following kind of problem: {dl}.",
    "{d}. Keywords: {kw}.",
    "Make the assistant good at this: {dl}.",
]
N_EVAL_DESCRIPTIONS = 2


def description_variants(task: BigBenchTask) -> list[str]:
    """Template rewrites of the task description (deduplicated, order kept)."""
    d = task.description.strip().rstrip(".").strip()
    if not d:
        raise UserError("the task has no description.", path=task.path, field="description",
                        fix="Add a one-sentence description of the task.")
    dl = d[0].lower() + d[1:] if d[:2] != d[:2].upper() else d
    kw = ", ".join(task.keywords[:4]) or task.name.replace("_", " ")
    out = [t.format(d=d, dl=dl, kw=kw) for t in TEMPLATES]
    prefix = " ".join(task.task_prefix.split())
    if 20 <= len(prefix) <= 400:
        out.append(prefix)
    return list(dict.fromkeys(out))


def split_descriptions(variants: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, eval): the eval set holds N_EVAL_DESCRIPTIONS variants never used in training."""
    order = list(variants[1:])
    random.Random(seed).shuffle(order)
    held = order[:N_EVAL_DESCRIPTIONS]
    return [v for v in variants if v not in held], held


def pick_tasks(bigbench_dir: str | Path, n: int, seed: int = 0, min_examples: int = 40,
               max_chars: int = 500, max_answer_chars: int = 80) -> list[Path]:
    """Task files fit for a small-model library: a description, enough short examples."""
    root = Path(bigbench_dir)
    good = []
    for path in sorted(root.rglob("task.json")):
        try:
            task = load_task(path)
        except UserError:
            continue
        if len(task.description) < 20 or len(task.examples) < min_examples:
            continue
        sizes = [len(format_input(task, ex, None, with_prefixes=False)) for ex in task.examples[:50]]
        answers = [len(answer_text(ex)) for ex in task.examples[:50]]
        if statistics.median(sizes) <= max_chars and max(answers) <= max_answer_chars:
            good.append(path)
    random.Random(seed).shuffle(good)
    return sorted(good[:n])


@dataclass
class LibraryEntry:
    name: str
    folder: Path
    description: str
    train_descriptions: list[str]
    eval_descriptions: list[str]

    @property
    def adapter_dir(self) -> Path:
        return self.folder / "adapter"

    def checkpoints(self) -> list[Path]:
        """Weight files of the intermediate checkpoints and the final adapter, oldest first."""
        steps = sorted(self.folder.glob("checkpoints/step-*/adapter_model.safetensors"),
                       key=lambda p: int(p.parent.name.split("-")[1]))
        return steps + [self.adapter_dir / "adapter_model.safetensors"]

    def examples(self):
        from studio.core.data import load_examples

        return load_examples(self.folder / "examples.jsonl", fmt="chat")

    def prompts(self) -> list[str]:
        return [next(m["content"] for m in ex.messages if m["role"] == "user")
                for ex in self.examples()]


def load_library(folder: str | Path) -> tuple[LoraSpec, list[LibraryEntry]]:
    folder = Path(folder)
    index = folder / "library.json"
    if not index.is_file():
        raise UserError("not a LoRA library (no library.json).", path=folder,
                        fix="Build one with `python -m studio.hyper.library`.")
    data = json.loads(index.read_text(encoding="utf-8"))
    entries = []
    for name in data.get("tasks", []):
        desc_path = folder / name / "description.json"
        if not desc_path.is_file() or not (folder / name / "adapter").is_dir():
            continue        # unfinished task (interrupted build)
        info = json.loads(desc_path.read_text(encoding="utf-8"))
        entries.append(LibraryEntry(name, folder / name, info["description"],
                                    info["train_descriptions"], info["eval_descriptions"]))
    if not entries:
        raise UserError("the library holds no finished task LoRAs.", path=folder,
                        fix="Build (or resume building) the library first.")
    return LoraSpec.from_dict(data["spec"]), entries


def _batches(tokenized, batch_size, seed):
    epoch = 0
    while True:
        order = list(range(len(tokenized)))
        random.Random(seed * 7919 + epoch).shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [tokenized[j] for j in order[i:i + batch_size]]
        epoch += 1


def _mean_loss(model, tokenized, pad_id, batch_size) -> float:
    import torch

    from studio.core.data import collate

    losses = []
    with torch.no_grad():
        for i in range(0, len(tokenized), batch_size):
            batch = collate(tokenized[i:i + batch_size], pad_id)
            losses.append(float(model(**batch).loss))
    return sum(losses) / max(1, len(losses))


def train_task_lora(model, tokenizer, spec: LoraSpec, task: BigBenchTask, out_dir: str | Path,
                    steps: int = 40, lr: float = 1e-3, batch_size: int = 4, max_length: int = 128,
                    n_train: int = 200, n_eval: int = 16, checkpoint_every: int = 0,
                    init_seed: int = 1234, seed: int = 0, log=print):
    """Train one task LoRA on `model` (a plain base model) and save it; returns (base, info)."""
    import torch
    from peft import get_peft_model

    from studio.core.data import collate, tokenize_example

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    held = task_to_examples(task, n_eval, seed=seed)
    train = task_to_examples(task, n_train, seed=seed, offset=n_eval)
    if len(train) < batch_size:
        raise UserError(f"only {len(train)} training examples.", path=task.path, field="examples",
                        fix="Pick a task with more examples.")
    with open(out_dir / "examples.jsonl", "w", encoding="utf-8") as fh:
        for ex in train:
            fh.write(json.dumps({"messages": ex.messages}) + "\n")
    tok_train = [tokenize_example(ex, tokenizer, max_length) for ex in train]
    tok_eval = [tokenize_example(ex, tokenizer, max_length) for ex in held]
    torch.manual_seed(init_seed)                      # same A init for every task LoRA
    model = get_peft_model(model, spec.lora_config())
    eval_before = _mean_loss(model, tok_eval, pad_id, batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses, start = [], time.perf_counter()
    batches = _batches(tok_train, batch_size, seed)
    for step in range(1, steps + 1):
        for group in opt.param_groups:                # short linear warm-up, then constant
            group["lr"] = lr * min(1.0, step / max(1, steps // 10))
        loss = model(**collate(next(batches), pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if checkpoint_every and step % checkpoint_every == 0 and step < steps:
            model.save_pretrained(str(out_dir / "checkpoints" / f"step-{step}"))
        log(f"{task.name}: step {step}/{steps} loss {losses[-1]:.4f}")
    model.eval()
    eval_after = _mean_loss(model, tok_eval, pad_id, batch_size)
    model.save_pretrained(str(out_dir / "adapter"))
    train_desc, eval_desc = split_descriptions(description_variants(task), seed)
    info = {"task": task.name, "description": task.description,
            "train_descriptions": train_desc, "eval_descriptions": eval_desc,
            "source": str(task.path) if task.path else "", "steps": steps, "lr": lr,
            "batch_size": batch_size, "train_examples": len(train), "eval_examples": len(held),
            "first_loss": losses[0], "final_loss": sum(losses[-5:]) / len(losses[-5:]),
            "eval_loss_before": eval_before, "eval_loss_after": eval_after,
            "seconds": time.perf_counter() - start}
    (out_dir / "description.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return model.unload(), info


def build_library(model_path: str | Path, task_paths: list[str | Path], out_dir: str | Path,
                  steps: int = 40, r: int = 4, alpha: float = 8.0,
                  modules=("q_proj", "v_proj"), overwrite: bool = False, log=print,
                  **train_kwargs) -> dict:
    """Train one LoRA per task (resumable: finished tasks are skipped) and index them."""
    from studio.core.models import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(model_path)
    spec = spec_from_model(model, modules=modules, r=r, alpha=alpha,
                           base_model=str(Path(model_path).resolve()))
    index_path = out_dir / "library.json"
    index = {"base_model": spec.base_model, "spec": spec.to_dict(), "tasks": []}
    if index_path.is_file() and not overwrite:
        old = json.loads(index_path.read_text(encoding="utf-8"))
        if not LoraSpec.from_dict(old["spec"]).same_shapes(spec) or old["spec"]["r"] != r:
            raise UserError("the library was built with other LoRA settings.", path=index_path,
                            fix="Use a new output folder or pass overwrite.")
        index["tasks"] = old["tasks"]
    infos = {}
    for path in task_paths:
        task = load_task(path)
        folder = out_dir / task.name
        if (folder / "description.json").is_file() and not overwrite:
            log(f"{task.name}: already built, skipped")
            continue
        model, infos[task.name] = train_task_lora(model, tokenizer, spec, task, folder,
                                                  steps=steps, log=log, **train_kwargs)
        if task.name not in index["tasks"]:
            index["tasks"].append(task.name)
        index_path.write_text(json.dumps(index, indent=1), encoding="utf-8")
    index_path.write_text(json.dumps(index, indent=1), encoding="utf-8")
    return {"library": str(out_dir), "built": infos, "tasks": index["tasks"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build a library of BIG-bench task LoRAs.")
    ap.add_argument("--bigbench", required=True, help="folder holding BIG-bench task.json files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="base model folder (default: the shipped one)")
    ap.add_argument("--tasks", default="", help="comma-separated task folder names")
    ap.add_argument("--n-tasks", type=int, default=0, help="or pick this many tasks")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--r", type=int, default=4)
    ap.add_argument("--checkpoint-every", type=int, default=0)
    args = ap.parse_args(argv)
    from studio.paths import default_model_dir

    root = Path(args.bigbench)
    paths = [root / t / "task.json" for t in args.tasks.split(",") if t] or \
        pick_tasks(root, args.n_tasks or 8)
    result = build_library(args.model or default_model_dir(), paths, args.out, steps=args.steps,
                           r=args.r, alpha=2.0 * args.r, checkpoint_every=args.checkpoint_every)
    print(json.dumps({k: v for k, v in result.items() if k != "built"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

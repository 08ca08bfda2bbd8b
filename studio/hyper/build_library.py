"""Build a library of task LoRAs from BIG-bench task files (the hypernetworks' training data).

    peft-studio hyper build-library --bigbench DIR --tasks 12 --held-out 4 --out LIB

Reproducible: the tasks come from a fixed curated list (resources/hypernetworks/
task_descriptions.json; `--tasks N` takes its first N training tasks, or name tasks with a comma
list), examples and LoRA inits use fixed seeds. Every task LoRA starts from the same random A (one
init seed for the whole library), so raw A/B targets of different tasks are comparable.
Descriptions per task: hand-written paraphrases (train and eval sets kept apart) plus the
BIG-bench description and template rewrites of it (train only). Held-out tasks get a LoRA too
(the "oracle" for evaluation) and are listed in library.json under "held_out"; hypernetwork
training never sees them. Layout: studio/hyper/library.py. Resumable: finished tasks are skipped.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from studio.core.bigbench import BigBenchTask, answer_text, format_input, load_task, task_to_examples
from studio.errors import UserError
from studio.fileio import safe_child, write_json_atomic
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


def curated() -> dict:
    """The shipped curated task list and hand-written descriptions."""
    from studio.paths import resources_dir

    path = resources_dir() / "hypernetworks" / "task_descriptions.json"
    return json.loads(path.read_text(encoding="utf-8"))


def description_variants(task: BigBenchTask, key: str | None = None) -> list[str]:
    """The BIG-bench description, template rewrites of it and the task prefix (deduplicated).
    A subtask ('multiemo/products_sentence_en') gets its name in words appended: subtasks of a
    family often share one description, which alone cannot tell them apart."""
    d = task.description.strip().rstrip(".").strip()
    if not d:
        raise UserError("the task has no description.", path=task.path, field="description",
                        fix="Add a one-sentence description of the task.")
    if key and "/" in key.strip("/"):
        words = " ".join(key.strip("/").split("/", 1)[1].replace("/", " ").replace("_", " ").split())
        if words.lower() not in d.lower():
            d = f"{d} ({words})"
    dl = d[0].lower() + d[1:] if d[:2] != d[:2].upper() else d
    kw = ", ".join(task.keywords[:4]) or task.name.replace("_", " ")
    out = [t.format(d=d, dl=dl, kw=kw) for t in TEMPLATES]
    prefix = " ".join(task.task_prefix.split())
    if 20 <= len(prefix) <= 400:
        out.append(prefix)
    return list(dict.fromkeys(out))


def task_descriptions(task: BigBenchTask, key: str | None, seed: int = 0
                      ) -> tuple[list[str], list[str]]:
    """(train, eval) descriptions. Hand-written ones when the curated list has the task (its eval
    set is held apart); else template rewrites with N_EVAL_DESCRIPTIONS of them held out."""
    written = curated()["descriptions"].get(key or "", {}) if key else {}
    variants = description_variants(task, key)
    if written.get("eval"):
        train = list(dict.fromkeys(written.get("train", []) + variants))
        return [d for d in train if d not in written["eval"]], list(written["eval"])
    order = list(variants[1:])
    random.Random(seed).shuffle(order)
    held = order[:N_EVAL_DESCRIPTIONS]
    return [v for v in variants if v not in held], held


def family(key: str) -> str:
    """'arithmetic' for 'arithmetic/2_digit_addition': tasks of one family share a file layout,
    a description and often their examples' style, so a split keeps each family on one side."""
    return key.strip("/").split("/")[0]


# Families whose subtasks carry one description for different functions (the sentence cannot
# tell them apart) or are near-copies of each other: capped harder so they do not dominate.
FAMILY_CAPS = {"list_functions": 2, "multiemo": 4, "bbq_lite_json": 4, "mult_data_wrangling": 30,
               "natural_instructions": 60}
DEFAULT_FAMILY_CAP = 5


def pick_tasks(bigbench_dir: str | Path, n: int, seed: int = 0, min_examples: int = 24,
               max_chars: int = 1500, max_answer_chars: int = 200,
               exclude_families: set[str] = frozenset()) -> list[Path]:
    """Up to `n` task files fit for a small-model library (a description, enough short examples),
    diverse: at most FAMILY_CAPS (default DEFAULT_FAMILY_CAP) tasks of a family, families in `exclude_families`
    never. Seeded; the result is sorted."""
    root = Path(bigbench_dir)
    by_family: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("task.json")):
        key = str(path.parent.relative_to(root))
        if family(key) in exclude_families:
            continue
        try:
            task = load_task(path)
        except UserError:
            continue
        if len(task.description) < 20 or len(task.examples) < min_examples:
            continue
        sizes = [len(format_input(task, ex, None, with_prefixes=False)) for ex in task.examples[:50]]
        answers = [len(answer_text(ex)) for ex in task.examples[:50]]
        if statistics.median(sizes) <= max_chars and max(answers) <= max_answer_chars:
            by_family.setdefault(family(key), []).append(path)
    rng = random.Random(seed)
    rounds: list[list[Path]] = []              # round k holds each family's k-th pick
    for fam in sorted(by_family):
        paths = by_family[fam]
        rng.shuffle(paths)
        for k, path in enumerate(paths[: FAMILY_CAPS.get(fam, DEFAULT_FAMILY_CAP)]):
            while len(rounds) <= k:
                rounds.append([])
            rounds[k].append(path)
    picked = []
    for group in rounds:                       # first one task of every family, then a second...
        rng.shuffle(group)
        picked += group
    return sorted(picked[:n])


def _batches(tokenized, batch_size, seed):
    epoch = 0
    while True:
        order = list(range(len(tokenized)))
        random.Random(seed * 7919 + epoch).shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [tokenized[j] for j in order[i:i + batch_size]]
        epoch += 1


def _mean_loss(model, tokenized, batch_size, precision="fp32") -> float:
    """Mean loss over the trained tokens of `tokenized` (packed batches: no padding)."""
    import torch

    from studio.core.packing import pack, packed_loss

    total, count = 0.0, 0
    with torch.no_grad(), _autocast(model, precision):
        for i in range(0, len(tokenized), batch_size):
            packed = pack(tokenized[i:i + batch_size])
            total += float(packed_loss(model, packed, reduction="sum"))
            count += int(packed["targets"].numel())
    return total / max(1, count)


def _autocast(model, precision):
    from studio.core.training_parts import autocast_for

    return autocast_for(str(next(model.parameters()).device), precision)


def train_task_lora(model, tokenizer, spec: LoraSpec, task: BigBenchTask, out_dir: str | Path,
                    steps: int = 40, lr: float = 1e-3, batch_size: int = 4, max_length: int = 128,
                    n_train: int = 200, n_eval: int = 16, checkpoint_every: int = 0,
                    init_seed: int = 1234, seed: int = 0, key: str | None = None,
                    shuffle: bool = True, precision: str = "fp32", log=print):
    """Train one task LoRA on `model` (a plain base model) and save it; returns (base, info).

    Batches are packed (no padding; logits only where answer tokens are trained:
    studio/core/packing.py); `precision="bf16"` trains under bf16 autocast (the LoRA weights
    stay fp32), about 1.4x faster again on a CPU with bf16 instructions."""
    import torch
    from peft import get_peft_model

    from studio.core.data import tokenize_example
    from studio.core.packing import pack, packed_loss

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if shuffle:     # some task files are sorted by label (politifact: 100 false, then true)
        import dataclasses

        order = list(task.examples)
        random.Random(seed).shuffle(order)
        task = dataclasses.replace(task, examples=order)
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
    eval_before = _mean_loss(model, tok_eval, batch_size, precision)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses, start = [], time.perf_counter()
    batches = _batches(tok_train, batch_size, seed)
    for step in range(1, steps + 1):
        for group in opt.param_groups:                # short linear warm-up, then constant
            group["lr"] = lr * min(1.0, step / max(1, steps // 10))
        with _autocast(model, precision):
            loss = packed_loss(model, pack(next(batches)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if checkpoint_every and step % checkpoint_every == 0 and step < steps:
            model.save_pretrained(str(out_dir / "checkpoints" / f"step-{step}"))
        log(f"{task.name}: step {step}/{steps} loss {losses[-1]:.4f}")
    model.eval()
    eval_after = _mean_loss(model, tok_eval, batch_size, precision)
    model.save_pretrained(str(out_dir / "adapter"))
    train_desc, eval_desc = task_descriptions(task, key, seed)
    info = {"task": task.name, "key": key or task.name, "description": task.description,
            "train_descriptions": train_desc, "eval_descriptions": eval_desc,
            "source": str(task.path) if task.path else "", "steps": steps, "lr": lr,
            "batch_size": batch_size, "max_length": max_length, "init_seed": init_seed,
            "precision": precision,
            "seed": seed, "shuffled": shuffle, "train_examples": len(train), "eval_examples": len(held),
            "first_loss": losses[0], "final_loss": sum(losses[-5:]) / len(losses[-5:]),
            "eval_loss_before": eval_before, "eval_loss_after": eval_after,
            "seconds": time.perf_counter() - started, "train_seconds": time.perf_counter() - start}
    write_json_atomic(out_dir / "description.json", info, indent=1)   # last: marks the task built
    return model.unload(), info


def resolve_tasks(bigbench_dir: str | Path, tasks: str | int, held_out: str | int = 4,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """(training task keys, held-out task keys), keys being paths under `bigbench_dir`.

    `tasks`: a number (the first N of the curated list, topped up with seeded picks when it runs
    out) or a comma-separated list of task folders; `held_out` likewise (curated held-out list)."""
    root = Path(bigbench_dir)
    if not root.is_dir():
        raise UserError("the BIG-bench folder does not exist.", path=root,
                        fix="Unpack the task files: tar xzf bigbench_tasks.tgz -C DIR.")
    cur = curated()

    if isinstance(tasks, str) and tasks.endswith(".json"):     # a written split
        split = read_split(tasks)
        tasks, held_out = ",".join(split["train"]), ",".join(split["held_out"])

    def keys(value, default_list):
        if isinstance(value, str) and not value.strip().isdigit():
            return [k.strip().strip("/") for k in value.split(",") if k.strip()]
        return list(default_list[: int(value)])

    base = root / "bigbench_tasks" if (root / "bigbench_tasks").is_dir() else root
    train, held = keys(tasks, cur["train_tasks"]), keys(held_out, cur["held_out_tasks"])
    held_families = {family(k) for k in held}
    if not (isinstance(tasks, str) and not tasks.strip().isdigit()):
        train = [k for k in train if family(k) not in held_families]   # families stay on one side
    want = int(tasks) if str(tasks).strip().isdigit() else len(train)
    if len(train) < want:               # more than the curated list: family-capped picks
        extra = [str(p.parent.relative_to(base))
                 for p in pick_tasks(base, want * 2, seed, exclude_families=held_families)]
        counts: dict[str, int] = {}
        for k in train:
            counts[family(k)] = counts.get(family(k), 0) + 1
        for k in extra:
            if len(train) >= want:
                break
            cap = FAMILY_CAPS.get(family(k), DEFAULT_FAMILY_CAP)
            if k not in train and counts.get(family(k), 0) < cap:
                train.append(k)
                counts[family(k)] = counts.get(family(k), 0) + 1
    for k in train + held:
        if not (base / k / "task.json").is_file():
            raise UserError(f"task '{k}' not found.", path=base / k,
                            fix="Check --bigbench points at the unpacked task files.")
    overlap = sorted({family(k) for k in train} & held_families)
    if overlap:
        raise UserError(f"task families both trained on and held out: {overlap}.", field="held_out",
                        fix="Keep every task of a held-out family out of the training list.")
    return [str(base / k) for k in train], [str(base / k) for k in held]


def read_split(path: str | Path) -> dict:
    """A split file: {"train": [task keys], "held_out": [task keys], ...}."""
    from studio.fileio import read_json_object

    data = read_json_object(Path(path), what="split file",
                            fix="Write it with `peft-studio hyper split`, or list tasks by name.")
    for group in ("train", "held_out"):
        if not isinstance(data.get(group), list) or not all(isinstance(k, str) for k in data[group]):
            raise UserError(f"'{group}' must be a list of task folders.", path=path, field=group,
                            fix="e.g. \"train\": [\"hyperbaton\", \"logical_deduction/three_objects\"]")
    return data


def write_split(bigbench_dir: str | Path, out: str | Path, tasks: int, held_out: str | int,
                seed: int = 0) -> dict:
    """Choose a family-aware split (resolve_tasks) and write it as JSON (the repo keeps one:
    resources/hypernetworks/library_split.json)."""
    train, held = resolve_tasks(bigbench_dir, tasks, held_out, seed)
    train_keys, held_keys = [_key(p) for p in train], [_key(p) for p in held]
    data = {"about": "Task split of the Text-to-LoRA library: whole task families (the part "
                     "before '/') are on one side. Made by `peft-studio hyper split`.",
            "seed": seed, "train": train_keys, "held_out": held_keys,
            "train_families": sorted({family(k) for k in train_keys}),
            "held_out_families": sorted({family(k) for k in held_keys})}
    write_json_atomic(Path(out), data, indent=1)
    return data


def build_library(model_path: str | Path, task_paths: list[str | Path], out_dir: str | Path,
                  held_out_paths: list[str | Path] = (), steps: int = 24, r: int = 4,
                  alpha: float = 8.0, modules=("q_proj", "v_proj"), overwrite: bool = False,
                  log=print, command: str = "", shard: tuple[int, int] = (0, 1),
                  **train_kwargs) -> dict:
    """Train one LoRA per task (resumable: finished tasks are skipped) and index them.

    `shard=(k, n)`: build only every n-th task from the k-th, so n processes (one per core)
    build one library together; each adds its tasks to library.json under a file lock, in the
    order of the whole task list."""
    from studio.core.models import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(model_path)
    spec = spec_from_model(model, modules=modules, r=r, alpha=alpha,
                           base_model=str(Path(model_path).resolve()))
    index_path = out_dir / "library.json"
    recipe = {"steps": steps, "r": r, "alpha": alpha, "modules": list(modules), **train_kwargs}
    index = {"base_model": spec.base_model, "spec": spec.to_dict(), "tasks": [], "held_out": [],
             "shared_init": True, "recipe": recipe, "command": command}
    if index_path.is_file() and not overwrite:
        old = json.loads(index_path.read_text(encoding="utf-8"))
        if not LoraSpec.from_dict(old["spec"]).same_shapes(spec) or old["spec"]["r"] != r:
            raise UserError("the library was built with other LoRA settings.", path=index_path,
                            fix="Use a new output folder or pass overwrite.")
        index["tasks"], index["held_out"] = old.get("tasks", []), old.get("held_out", [])
    infos, seconds = {}, []
    # held-out tasks first: their LoRAs are the evaluation's oracles, needed whatever the size
    jobs = [(p, "held_out") for p in held_out_paths] + [(p, "tasks") for p in task_paths]
    order = {entry_name(_key(p)): i for i, (p, _g) in enumerate(jobs)}
    k, of = shard
    if not 0 <= k < of:
        raise UserError(f"shard {k}/{of} does not exist.", field="shard",
                        fix="use K/N with 0 <= K < N, e.g. 0/2 and 1/2 for two processes")
    for n, (path, group) in enumerate(jobs, 1):
        if (n - 1) % of != k:
            continue
        task = load_task(path)
        key = _key(path)
        name = entry_name(key)
        folder = safe_child(out_dir, name, field="name", source=task.path)
        if (folder / "description.json").is_file() and not overwrite:
            log(f"[{n}/{len(jobs)}] {name}: already built, skipped")
        else:
            log(f"[{n}/{len(jobs)}] {name} ({group})")
            model, infos[name] = train_task_lora(model, tokenizer, spec, task, folder,
                                                 steps=steps, key=key, log=log, **train_kwargs)
            seconds.append(infos[name]["seconds"])
            log(f"[{n}/{len(jobs)}] {name}: {seconds[-1]:.1f} s (mean {statistics.fmean(seconds):.1f} s "
                f"per task over {len(seconds)} built now)")
        index = _add_to_index(index_path, index, name, group, order)
    return {"library": str(out_dir), "built": infos, "tasks": index["tasks"],
            "held_out": index["held_out"]}


def _add_to_index(index_path: Path, index: dict, name: str, group: str, order: dict) -> dict:
    """Add a built task to library.json, merged with what other shards wrote meanwhile (under a
    file lock), entries kept in the task list's order."""
    import fcntl

    with open(index_path.with_name(".library.lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if index_path.is_file():
            current = json.loads(index_path.read_text(encoding="utf-8"))
            for g in ("tasks", "held_out"):
                index[g] = list(dict.fromkeys(index[g] + current.get(g, [])))
        if name not in index[group]:
            index[group].append(name)
        for g in ("tasks", "held_out"):
            index[g].sort(key=lambda entry: order.get(entry, len(order)))
        write_json_atomic(index_path, index, indent=1)
    return index


def entry_name(key: str) -> str:
    """The library folder of a task: its key with '/' as '__' (subtask names repeat across
    families: logical_deduction/three_objects, tracking_shuffled_objects/three_objects)."""
    return key.strip("/").replace("/", "__")


def _key(path) -> str:
    """'arithmetic/1_digit_multiplication' from .../bigbench_tasks/arithmetic/1_digit_multiplication"""
    path = Path(path)
    path = path.parent if path.name == "task.json" else path
    parts = path.parts
    if "bigbench_tasks" in parts:
        return "/".join(parts[parts.index("bigbench_tasks") + 1:])
    return path.name

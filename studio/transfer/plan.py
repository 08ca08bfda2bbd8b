"""What a transfer moves, where to, with which settings; every check that can fail is made here,
before any model is loaded (the CLI's `transfer --check`, the dialog's Start button).

    TRANSFER_SCHEMA                         the transfer's settings (one source: CLI, dialog, file)
    resolve_source(adapter, source_model)   -> Source (a run folder or a PEFT adapter folder)
    read_seeds(source, seeds_file, count)   -> [{"prompt", "answer"}], where they came from
    check_transfer(...)                     -> plan dict (paths resolved), or UserError
    create_transfer_run(plan, ...)          -> a run folder (recipe on the target + transfer.json)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from studio import schema
from studio.core import estimate
from studio.errors import UserError

PLAN_FILE = "transfer.json"
WORK_DIR = "transfer"

TRANSFER_SCHEMA: dict[str, dict] = {
    "prompts": {"type": "integer", "default": 200, "minimum": 8, "maximum": 20000,
                "title": "Synthetic prompts",
                "help": "How many synthetic task prompts the new adapter learns from (the "
                        "teacher answers each one). More = closer to the source adapter, slower."},
    "seed_count": {"type": "integer", "default": 32, "minimum": 1, "maximum": 5000,
                   "title": "Real prompts used",
                   "help": "At most this many real task prompts are shown to the generator as "
                           "examples and to the discriminator as 'real'."},
    "filter": {"type": "boolean", "default": True, "title": "Discriminator filter",
               "help": "Keep only the synthetic prompts that a classifier cannot tell from the "
                       "real ones (needs at least 4 real prompts); off = keep them in the "
                       "order written."},
    "candidates": {"type": "number", "default": 2.0, "minimum": 1.0, "maximum": 10.0,
                   "step": 0.5, "advanced": True, "title": "Candidates per prompt",
                   "help": "Prompts written per prompt kept, so the filter has room to choose."},
    "real_quantile": {"type": "number", "default": 0.1, "minimum": 0.0, "maximum": 0.9,
                      "step": 0.05, "advanced": True, "title": "Drop below real prompts' quantile",
                      "help": "A written prompt is dropped when the discriminator finds it less "
                              "real than this share of the real prompts (scored held out): 0.1 = "
                              "less real than 90% of them; 0 = less real than every real one. Of "
                              "the rest, the most real-looking are kept first."},
    "shots": {"type": "integer", "default": 4, "minimum": 1, "maximum": 16, "advanced": True,
              "title": "Examples per request",
              "help": "Real prompts shown to the generator for each new prompt (a different "
                      "random few each time)."},
    "temperature": {"type": "number", "default": 0.9, "minimum": 0.1, "maximum": 2.0,
                    "step": 0.1, "advanced": True, "title": "Generator temperature",
                    "help": "Sampling temperature for writing prompts: higher = more varied, "
                            "less on task."},
    "generator": {"type": "string", "default": "target", "enum": ["target", "source"],
                  "advanced": True, "title": "Prompts written by",
                  "help": "The base model that writes the synthetic prompts: the target (the "
                          "paper's choice: prompts the new model understands) or the source."},
    "prompt_tokens": {"type": "integer", "default": 0, "minimum": 0, "maximum": 4096,
                      "advanced": True, "title": "Longest prompt (tokens)",
                      "help": "0 = 1.5 x the longest real prompt (at least 32)."},
    "answer_tokens": {"type": "integer", "default": 0, "minimum": 0, "maximum": 4096,
                      "advanced": True, "title": "Longest answer (tokens)",
                      "help": "0 = 1.5 x the longest real answer (at least 16; 128 without "
                              "real answers)."},
    "seed": {"type": "integer", "default": 0, "minimum": 0, "maximum": 2**31 - 1,
             "advanced": True, "title": "Random seed",
             "help": "Which seeds, shots and samples: the same seed writes the same prompts."},
}

SEEDS_MINIMUM_FOR_FILTER = 4


@dataclass
class Source:
    adapter_dir: Path
    model_dir: Path
    method: str                 # plugin id that reads the adapter
    run_dir: Path | None        # when the adapter is a run's
    adapter_config: dict


def settings_from(values: dict | None) -> dict:
    """The transfer's settings: defaults filled in, each value checked (UserError names it)."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(TRANSFER_SCHEMA))
    if unknown:
        raise UserError(f"unknown transfer setting '{unknown[0]}'", field=unknown[0],
                        fix=f"use one of: {', '.join(TRANSFER_SCHEMA)}")
    return {key: schema.coerce_value(spec, values.get(key, spec["default"]), field=key)
            for key, spec in TRANSFER_SCHEMA.items()}


def _adapter_config(folder: Path) -> dict:
    path = folder / "adapter_config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("not an adapter folder (no adapter_config.json).", path=folder,
                        fix="Choose a run folder, or the folder a run or `peft-studio export` "
                            "wrote with adapter_config.json in it.") from None
    except (OSError, ValueError) as err:
        raise UserError(f"adapter_config.json cannot be read ({err}).", path=path,
                        fix="Export the adapter again.") from None
    if not isinstance(data, dict):
        raise UserError("adapter_config.json is not a JSON object.", path=path,
                        fix="Export the adapter again.")
    return data


def resolve_source(adapter: str | Path, source_model: str | Path | None = None) -> Source:
    """The adapter to transfer: a run folder (its adapter/, its model, its data for seeds) or an
    adapter folder (its base from adapter_config.json, or `source_model`)."""
    from studio.core.models import check_model_folder

    path = Path(adapter).expanduser()
    run_dir = None
    method = ""
    model = Path(source_model).expanduser() if source_model else None
    if not path.exists():
        from studio.core import runs

        try:
            path = runs.find_run(adapter)          # a run's folder name under the data folder
        except UserError:
            raise UserError("no such adapter or run.", path=path,
                            fix="Give a run folder (see `peft-studio runs`) or an adapter "
                                "folder.") from None
    if (path / "recipe.toml").is_file() and not (path / "adapter_config.json").is_file():
        from studio.core import runs

        run_dir = path
        recipe = runs.load_recipe(run_dir)
        method = recipe.method.id
        if model is None:
            model = recipe.resolve_path(recipe.model.path)
        path = run_dir / "adapter"
        if not (path / "adapter_config.json").is_file():
            best = run_dir / "best-adapter"
            if (best / "adapter_config.json").is_file():
                path = best
            else:
                raise UserError("this run has no finished adapter yet.", path=run_dir,
                                fix="Finish (or resume) the run first, then transfer it.")
    config = _adapter_config(path)
    if run_dir is None:
        parent = path.parent
        if (parent / "recipe.toml").is_file():  # RUN/adapter given directly
            from studio.core import runs

            run_dir = parent
            recipe = runs.load_recipe(run_dir)
            method = recipe.method.id
            if model is None:
                model = recipe.resolve_path(recipe.model.path)
    if model is None:
        base = str(config.get("base_model_name_or_path") or "")
        if base and Path(base).expanduser().is_dir():
            model = Path(base).expanduser()
        else:
            raise UserError(f"the adapter's base model ({base or 'not recorded'}) is not a "
                            "folder on this machine.", path=path,
                            fix="Name the model it was trained on: --from MODEL_FOLDER (in the "
                                "dialog: Source model).")
    try:
        check_model_folder(model)
    except UserError as err:
        raise UserError(f"source model {model}: {err.message}", path=err.path or model,
                        fix=err.fix) from None
    if not method:
        method = str(config.get("peft_type") or "lora").lower()
    return Source(adapter_dir=path.resolve(), model_dir=Path(model).resolve(), method=method,
                  run_dir=run_dir.resolve() if run_dir else None, adapter_config=config)


def _prompt_and_answer(example) -> dict | None:
    from studio.core.evaluate import split_for_generation

    split = split_for_generation(example)
    if split is None:
        return None
    before, answer = split
    users = [m["content"] for m in before if m.get("role") == "user"]
    if not users or not str(users[-1]).strip():
        return None
    return {"prompt": str(users[-1]).strip(), "answer": str(answer).strip()}


def run_eval_examples(run_dir: Path) -> tuple[list, str]:
    """The examples a run held out for evaluation (its eval file, else its eval split: the same
    split the run made), and a description; ([], why) when there are none."""
    from studio.core import runs
    from studio.core.data import load_examples, split_examples

    recipe = runs.load_recipe(run_dir)
    try:
        if recipe.data.eval_path:
            path = recipe.resolve_path(recipe.data.eval_path)
            return load_examples(path), f"the run's evaluation file {path.name}"
        path = recipe.resolve_path(recipe.data.path)
        train, held = split_examples(load_examples(path), recipe.data.eval_fraction,
                                     recipe.training.seed)
    except UserError as err:
        return [], f"the run's data cannot be read ({err.message})"
    if held:
        return held, f"the run's evaluation split of {path.name} ({len(held)} examples)"
    return [], f"the run held no examples out of {path.name} (eval_fraction 0)"


def read_seeds(source: Source | None, seeds_file: str | Path | None, count: int,
               seed: int = 0) -> tuple[list[dict], str]:
    """Up to `count` real task prompts (with their answers): from `seeds_file` when given, else
    from the source run's held-out examples. ([], why not) when there are none."""
    from studio.core.data import load_examples

    if seeds_file:
        path = Path(seeds_file).expanduser()
        examples, where = load_examples(path), f"{path.name}"
    elif source is not None and source.run_dir is not None:
        examples, where = run_eval_examples(source.run_dir)
    else:
        return [], "no seeds file given and the adapter is not a run's"
    pairs = [p for p in (_prompt_and_answer(ex) for ex in examples) if p]
    if not pairs:
        if seeds_file:
            raise UserError("no example in the file has a user prompt and an answer.",
                            path=seeds_file, fix="Give chat or alpaca examples (a prompt and its "
                                                 "answer each).")
        return [], f"{where} has no examples with a prompt and an answer"
    seen, unique = set(), []
    for pair in pairs:
        if pair["prompt"] not in seen:
            seen.add(pair["prompt"])
            unique.append(pair)
    random.Random(seed).shuffle(unique)
    return unique[:count], where


def _same_model(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        ca = json.loads((a / "config.json").read_text(encoding="utf-8"))
        cb = json.loads((b / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    drop = ("_name_or_path", "_model_name_or_path", "transformers_version")
    ca = {k: v for k, v in ca.items() if k not in drop}
    cb = {k: v for k, v in cb.items() if k not in drop}

    def sizes(folder: Path) -> list[int]:
        return sorted(p.stat().st_size for p in folder.glob("*.safetensors"))

    return ca == cb and sizes(a) == sizes(b) and bool(sizes(a))


def check_memory(target_info, source_info, device: str, batch_tokens: int = 2048) -> dict:
    """Will the largest stage fit? Stages load one model at a time: training the target, or the
    source answering. UserError before any work when the estimate exceeds what is free."""
    from studio.core.models import estimate_memory

    train = estimate_memory(target_info, tokens_per_step=batch_tokens)["total_mb"]
    teach = estimate_memory(source_info, trainable_fraction=0.0, tokens_per_step=64)["weights_mb"]
    need = max(train, teach * 1.3)
    free = estimate.available_memory_mb(device)
    if free is not None and need > free * estimate.MEMORY_HEADROOM:
        raise UserError(f"the transfer needs about {need:,.0f} MB ({target_info.path.name} "
                        f"training) but {free:,.0f} MB is free on {device}.",
                        path=target_info.path,
                        fix="Close other programs, choose a smaller target model, or load it in "
                            "4bit in a normal run first.")
    return {"need_mb": round(need), "free_mb": round(free) if free is not None else None}


def check_transfer(adapter, target, *, source_model=None, seeds_file=None, task: str = "",
                   settings: dict | None = None, device: str | None = None) -> dict:
    """Everything that can be known before loading a model. Returns the plan (a JSON-able dict);
    UserError for: same model, a target that is not a causal LM, no seeds and no task
    description, not enough memory."""
    from studio.core.models import check_model_folder
    from studio.core.training_parts import pick_device

    settings = settings_from(settings)
    source = resolve_source(adapter, source_model)
    target_dir = Path(target).expanduser()
    try:
        target_info = check_model_folder(target_dir)
    except UserError as err:
        raise UserError(f"target model: {err.message}", path=err.path or target_dir,
                        field="target", fix=err.fix) from None
    if _same_model(source.model_dir, target_info.path):
        raise UserError("the target is the model this adapter was trained on: there is nothing "
                        "to transfer.", path=target_info.path, field="target",
                        fix="Use the adapter as it is (Chat, Export), or choose another model.")
    source_info = check_model_folder(source.model_dir)
    seeds, seeds_from = read_seeds(source, seeds_file, settings["seed_count"], settings["seed"])
    task = (task or "").strip()
    if not seeds and not task:
        raise UserError(f"there is nothing to show the generator what the task is: {seeds_from}.",
                        field="seeds",
                        fix="Give a few real examples (--seeds FILE: chat or alpaca) or describe "
                            "the task in a sentence (--task \"...\").")
    notes = []
    if settings["filter"] and len(seeds) < SEEDS_MINIMUM_FOR_FILTER:
        notes.append(f"the discriminator filter needs at least {SEEDS_MINIMUM_FOR_FILTER} real "
                     f"prompts ({len(seeds)} here): every written prompt is kept")
    device = device or pick_device()
    memory = check_memory(target_info, source_info, device)
    return {"source": {"adapter": str(source.adapter_dir), "model": str(source.model_dir),
                       "method": source.method,
                       "run": str(source.run_dir) if source.run_dir else None},
            "target": str(target_info.path.resolve()),
            "seeds": seeds, "seeds_from": seeds_from if seeds else "the task description",
            "task": task, "settings": settings, "notes": notes, "memory": memory,
            "same_tokenizer": _same_tokenizer(source.model_dir, target_info.path)}


def _same_tokenizer(a: Path, b: Path) -> bool:
    try:
        return (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    except OSError:
        return False


def student_recipe(plan: dict, name: str, method: str = "lora", params: dict | None = None,
                   training: dict | None = None):
    """The recipe of the new adapter's training run on the target model. A LoRA source gives its
    rank and alpha to a LoRA student (target modules: every linear layer of the target, since
    layer names differ between families)."""
    from studio.core.recipe import Recipe

    recipe = Recipe.default(model_path=plan["target"], method=method)
    recipe.name = name
    recipe.data.eval_path = ""
    values = dict(recipe.method.params)
    source_cfg = _adapter_config(Path(plan["source"]["adapter"]))
    if method == "lora" and str(source_cfg.get("peft_type", "")).upper() == "LORA":
        for key in ("r", "lora_alpha"):
            if isinstance(source_cfg.get(key), (int, float)) and key in values:
                values[key] = source_cfg[key]
    values.update(params or {})
    recipe.method.params = values
    recipe.training.epochs, recipe.training.max_steps = 3, 0
    recipe.training.eval_every, recipe.training.save_every = 50, 50
    recipe.data.eval_fraction = 0.1
    for key, value in (training or {}).items():
        if not hasattr(recipe.training, key):
            raise UserError(f"unknown training setting '{key}'", field=f"training.{key}",
                            fix="see `peft-studio recipe new` for the [training] settings")
        setattr(recipe.training, key, value)
    return recipe


def create_transfer_run(plan: dict, name: str = "", method: str = "lora",
                        params: dict | None = None, training: dict | None = None,
                        runs_base: Path | None = None) -> Path:
    """A run folder for the transfer (start it with studio.worker.launcher.Job, or train it in
    this process with pipeline.run_transfer). The recipe trains on RUN/transfer/teacher.jsonl,
    which the stages write."""
    from studio.core import runs
    from studio.fileio import write_json_atomic

    label = name.strip() or (f"transfer-{Path(plan['source']['adapter']).parent.name[:24]}"
                             f"-to-{Path(plan['target']).name}")
    recipe = student_recipe(plan, label, method, params, training)
    recipe.validate(check_paths=False)
    run_dir = runs.create_run(recipe, base=runs_base)
    recipe.data.path = str(run_dir / WORK_DIR / "teacher.jsonl")
    recipe.source = None
    recipe.save(run_dir / "recipe.toml")
    write_json_atomic(run_dir / PLAN_FILE, plan)
    return run_dir

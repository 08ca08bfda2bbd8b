"""A library of task LoRAs: what the hypernetworks are trained on.

Two layouts are read:

1. Built by `peft-studio hyper build-library` (studio.hyper.build_library):
       library.json                {"base_model", "spec", "tasks": [...], "held_out": [...],
                                    "shared_init": true, "recipe": {...}}
       <task>/description.json     description, train_descriptions, eval_descriptions, losses ...
       <task>/examples.jsonl       chat-format examples (studio.core.data)
       <task>/adapter/             the final LoRA (standard PEFT folder)
       <task>/checkpoints/step-N/  intermediate LoRAs (DnD trains on these)
   Held-out tasks have LoRAs too (the "oracle" for evaluation) but are never trained on.

2. Any folder of PEFT LoRA adapters with a description each ("train your own"):
       <name>/adapter_config.json + adapter_model.safetensors   (or <name>/adapter/...)
       <name>/description.txt      one description per line (or description.json)
       <name>/examples.jsonl       optional; needed for SFT training and for DnD
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import UserError
from studio.fileio import read_error, read_json_object, safe_child
from studio.hyper.targets import LoraSpec

_KEY_RE = re.compile(r"^base_model\.model\.(.*\.)(\d+)(\.(?:.*\.)?([A-Za-z0-9_]+))\.lora_([AB])\.weight$")


@dataclass
class LibraryEntry:
    name: str
    folder: Path
    adapter_dir: Path
    description: str
    train_descriptions: list[str]
    eval_descriptions: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def checkpoints(self) -> list[Path]:
        """Weight files of the intermediate checkpoints and the final adapter, oldest first."""
        steps = sorted(self.folder.glob("checkpoints/step-*/adapter_model.safetensors"),
                       key=lambda p: int(p.parent.name.split("-")[1]))
        return steps + [self.adapter_dir / "adapter_model.safetensors"]

    @property
    def examples_path(self) -> Path:
        return self.folder / "examples.jsonl"

    def examples(self):
        from studio.core.data import load_examples

        if not self.examples_path.is_file():
            return []
        return load_examples(self.examples_path, fmt="chat")

    def prompts(self) -> list[str]:
        return [next(m["content"] for m in ex.messages if m["role"] == "user")
                for ex in self.examples() if ex.messages]


@dataclass
class Library:
    folder: Path
    spec: LoraSpec
    entries: list[LibraryEntry]               # training tasks
    held_out_entries: list[LibraryEntry] = field(default_factory=list)
    shared_init: bool = False                 # every LoRA started from the same A
    command: str = ""                         # the command that built it, if recorded

    @property
    def held_out(self) -> list[str]:
        return [e.name for e in self.held_out_entries]


def spec_from_adapter(adapter_dir: str | Path) -> LoraSpec:
    """The LoraSpec of a saved PEFT LoRA adapter, from its config and tensor shapes."""
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
    cfg_path, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise UserError("not a PEFT adapter folder (adapter_config.json + adapter_model.safetensors).",
                        path=adapter_dir, fix="Save adapters with peft's save_pretrained (safetensors).")
    cfg = read_json_object(cfg_path, "adapter_config.json", "Save the adapter again with peft's "
                           "save_pretrained.", strict=True)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise UserError(f"a {cfg.get('peft_type')} adapter; hypernetworks learn LoRAs only.",
                        path=cfg_path, field="peft_type", fix="Use LoRA adapters.")
    templates, shapes, layers = {}, {}, {}
    try:
        fh = safe_open(str(weights), "pt")
    except Exception as err:    # noqa: BLE001 - safetensors raises its own kinds for a bad file
        raise UserError(f"the adapter weights cannot be read ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else err!r}).", path=weights,
                        fix="Save the adapter again (a complete adapter_model.safetensors).") from None
    with fh:
        for key in fh.keys():
            m = _KEY_RE.match(key)
            if not m:
                continue
            module = m.group(4)
            templates[module] = m.group(1) + "{layer}" + m.group(3)
            layers.setdefault(module, set()).add(int(m.group(2)))
            shape = fh.get_slice(key).get_shape()
            if m.group(5) == "A":
                shapes.setdefault(module, {})["in"] = shape[1]
            else:
                shapes.setdefault(module, {})["out"] = shape[0]
    if not templates:
        raise UserError("no per-layer LoRA weights found in the adapter.", path=weights,
                        fix="Use LoRA adapters on per-layer modules such as q_proj / v_proj.")
    counts = {len(v) for v in layers.values()}
    if len(counts) != 1:
        raise UserError("the adapter's modules do not cover the same layers.", path=weights,
                        fix="Use adapters that target the same modules in every layer.")
    modules = sorted(templates)
    r = int(cfg.get("r", 8))
    return LoraSpec(modules=modules, num_layers=counts.pop(), path_templates=templates,
                    in_features={m: shapes[m]["in"] for m in modules},
                    out_features={m: shapes[m]["out"] for m in modules},
                    r=r, alpha=float(cfg.get("lora_alpha", r)),
                    use_rslora=bool(cfg.get("use_rslora", False)),
                    base_model=str(cfg.get("base_model_name_or_path") or ""))


def _built_entry(folder: Path, name: str) -> LibraryEntry | None:
    task_dir = safe_child(folder, name, field="tasks", source=folder / "library.json")
    desc_path = task_dir / "description.json"
    if not desc_path.is_file() or not (task_dir / "adapter").is_dir():
        return None       # unfinished task (interrupted build)
    info = read_json_object(desc_path, "description.json", _REBUILD, strict=True)
    description = info.get("description")
    if not isinstance(description, str) or not description.strip():
        raise UserError("description.json has no 'description' text.", path=desc_path,
                        field="description", fix=_REBUILD)
    train = _text_list(info, "train_descriptions", desc_path, [description])
    evals = _text_list(info, "eval_descriptions", desc_path, [])
    return LibraryEntry(name, task_dir, task_dir / "adapter", description, train, evals, info)


_REBUILD = ("Build the task again (`peft-studio hyper build-library` continues an unfinished "
            "library), or restore the file.")


def _text_list(info: dict, key: str, path: Path, default: list[str]) -> list[str]:
    """info[key] as a list of strings (absent / null: `default`); UserError naming the key."""
    value = info.get(key)
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"'{key}' must be a list of sentences, not {json.dumps(value)[:60]}.",
                        path=path, field=key, fix='Write e.g. "' + key + '": ["one sentence"].')
    return list(value)


def _plain_entry(sub: Path) -> LibraryEntry | None:
    adapter = sub if (sub / "adapter_config.json").is_file() else sub / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        return None
    txt, js = sub / "description.txt", sub / "description.json"
    if js.is_file():
        info = read_json_object(js, "description.json",
                                "Write {\"description\": \"one sentence\"}.", strict=True)
        single = info.get("description", "")
        if not isinstance(single, str):
            raise UserError(f"'description' must be text, not {json.dumps(single)[:60]}.",
                            path=js, field="description", fix="Write one sentence in quotes.")
        train = _text_list(info, "train_descriptions", js, []) or [single]
        evals = _text_list(info, "eval_descriptions", js, [])
    elif txt.is_file():
        try:
            text = txt.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError("description.txt is not UTF-8 text.", path=txt,
                            fix="Save it with UTF-8 encoding.") from None
        except OSError as err:
            raise read_error(err, txt, "description.txt") from None
        train, evals = [ln.strip() for ln in text.splitlines()], []
    else:
        raise UserError("the adapter has no description.", path=sub,
                        fix="Add description.txt with one sentence describing its task.")
    train = [d for d in train if d and d.strip()]
    if not train:
        raise UserError("the description is empty.", path=js if js.is_file() else txt,
                        field="description", fix="Write one sentence describing the task.")
    return LibraryEntry(sub.name, sub, adapter, train[0], train, list(evals))


def load_library(folder: str | Path) -> Library:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("the library folder does not exist.", path=folder,
                        fix="Choose a folder of LoRA adapters with descriptions.")
    index = folder / "library.json"
    if index.is_file():
        data = read_json_object(index, "library.json", _REBUILD, strict=True)
        try:
            spec = LoraSpec.from_dict(data["spec"])
        except (KeyError, TypeError) as err:
            raise UserError(f"library.json has no usable 'spec' ({type(err).__name__}: {err}).",
                            path=index, field="spec", fix=_REBUILD) from None
        for key in ("tasks", "held_out"):
            if not isinstance(data.get(key, []), list):
                raise UserError(f"'{key}' must be a list of task folder names.", path=index,
                                field=key, fix=_REBUILD)
        entries = [e for e in (_built_entry(folder, n) for n in data.get("tasks", [])) if e]
        held = [e for e in (_built_entry(folder, n) for n in data.get("held_out", [])) if e]
        shared = bool(data.get("shared_init", True))
        command = str(data.get("command", ""))
    else:
        entries = [e for e in (_plain_entry(s) for s in sorted(folder.iterdir()) if s.is_dir()) if e]
        held, shared, command = [], False, ""
        spec = spec_from_adapter(entries[0].adapter_dir) if entries else None
        for e in entries[1:]:
            other = spec_from_adapter(e.adapter_dir)
            if not other.same_shapes(spec):
                raise UserError(f"adapter '{e.name}' targets other modules or shapes than "
                                f"'{entries[0].name}'.", path=e.adapter_dir,
                                fix="Use LoRAs on the same modules of the same base model.")
    if len(entries) < 2:
        raise UserError(f"the library holds {len(entries)} finished task LoRA(s); at least 2 are needed.",
                        path=folder, fix="Add adapters (each with a description), or finish "
                                         "building the library (`peft-studio hyper build-library`).")
    return Library(folder, spec, entries, held, shared, command)

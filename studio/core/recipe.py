"""A run = one recipe: a plain TOML (or JSON) file naming the model, the data, the method and
the training settings. No Qt, no torch.

    recipe = Recipe.load("lora-dates.toml")
    recipe.validate()          # UserError naming the file and the field, with the fix
    recipe.save("copy.toml")
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio import schema
from studio.core.metric_log import LOGGERS, check_available
from studio.errors import UserError
from studio.fileio import disk_full_as_user_error, parse_json, read_user_text, write_text_atomic

QUANTIZATIONS = ("", "4bit", "8bit")
DTYPES = ("float32", "bfloat16", "float16")
DATA_FORMATS = ("auto", "alpaca", "chat", "sharegpt", "text")
LR_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt",
)


@dataclass
class ModelSection:
    path: str = ""
    quantization: str = ""
    dtype: str = "float32"


@dataclass
class DataSection:
    path: str = ""
    format: str = "auto"
    eval_path: str = ""
    eval_fraction: float = 0.1
    max_length: int = 256


@dataclass
class MethodSection:
    id: str = "lora"
    params: dict = field(default_factory=dict)


@dataclass
class TrainingSection:
    max_steps: int = 60
    epochs: int = 0
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 20
    save_every: int = 20
    log_every: int = 1
    seed: int = 0
    gradient_checkpointing: bool = False
    auto_checkpointing: bool = True
    optimizer: str = "adamw"
    precision: str = "auto"
    frozen_bf16: bool = True
    train_on: str = "answers"
    neftune_alpha: float = 0.0
    early_stopping_patience: int = 0
    keep_best: bool = False
    packing: bool = True
    group_by_length: bool = True
    torch_compile: bool = False
    devices: int = 1
    sharding: str = "ddp"
    log_to: str = "none"


_SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "method": MethodSection,
    "training": TrainingSection,
}

_SPEC_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def _section_schema(cls, specs: dict[str, dict]) -> dict[str, dict]:
    """Full specs (studio.schema format) for a section: type and default from the dataclass field,
    the rest (range, choices, title, help, fix) from `specs`, in the order of `specs`."""
    fields, blank = {f.name: f for f in dataclasses.fields(cls)}, cls()
    out = {}
    for name, extra in specs.items():
        spec = {"type": _SPEC_TYPES[fields[name].type], "default": getattr(blank, name), **extra}
        schema.check_spec(name, spec)
        out[name] = spec
    return out


OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "adafactor")
SHARDINGS = ("ddp", "fsdp")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

RUN_NAME_SPEC = {"type": "string", "default": "run", "title": "Run name",
                 "help": "Names the run folder and the recipe."}

MODEL_SCHEMA = _section_schema(ModelSection, {
    "path": {"title": "Model folder", "help": "A local Hugging Face model folder."},
    "quantization": {"enum": list(QUANTIZATIONS), "title": "Quantization",
                     "help": "Load the frozen base in 4 or 8 bit (\"\" = unquantized)."},
    "dtype": {"enum": list(DTYPES), "title": "Precision", "help": "The base model's weight type."},
})

DATA_SCHEMA = _section_schema(DataSection, {
    "path": {"title": "Training data", "help": "A .jsonl, .json or .csv file."},
    "format": {"enum": list(DATA_FORMATS), "title": "Format", "help": "How examples are laid out."},
    "eval_path": {"title": "Eval data", "help": "Held-out examples (empty = split off eval_fraction)."},
    "eval_fraction": {"minimum": 0.0, "maximum": 0.9, "title": "Eval fraction",
                      "help": "Share of the examples held out to measure eval loss (0 = none).",
                      "fix": "use a fraction between 0 (no held-out split) and 0.9"},
    "max_length": {"minimum": 8, "maximum": 131072, "title": "Max length",
                   "help": "Tokens per example; longer ones are cut.",
                   "fix": "use a token count such as 256, 512 or 1024"},
})

# The [training] section; the Train page renders it as is (studio.ui.method_panel.TRAINING_FORM).
TRAINING_SCHEMA = _section_schema(TrainingSection, {
    "max_steps": {"minimum": 0, "maximum": 10_000_000, "title": "Steps",
                  "help": "Optimiser steps to train for (0 = train for `epochs` instead).",
                  "fix": "use a positive step count, or 0 to train for `epochs`"},
    "batch_size": {"minimum": 1, "maximum": 4096, "title": "Batch size",
                   "help": "Examples per forward pass.", "fix": "use a batch size such as 1, 4 or 8"},
    "grad_accum": {"minimum": 1, "maximum": 4096, "title": "Gradient accumulation",
                   "help": "Forward passes per optimiser step.", "fix": "use 1 (no accumulation) or more"},
    "learning_rate": {"minimum": 1e-10, "maximum": 1.0, "title": "Learning rate",
                      "help": "Peak learning rate; LoRA-style methods like 1e-4 .. 5e-4.",
                      "fix": "LoRA-style methods usually train well at 1e-4 .. 5e-4"},
    "lr_scheduler": {"enum": list(LR_SCHEDULERS), "title": "Scheduler",
                     "help": "How the learning rate changes after warm-up."},
    "warmup_steps": {"minimum": 0, "maximum": 10_000_000, "title": "Warm-up steps",
                     "help": "Steps over which the learning rate ramps up from 0.",
                     "fix": "use 0 or more warm-up steps"},
    "eval_every": {"minimum": 0, "maximum": 10_000_000, "title": "Eval every",
                   "help": "Measure eval loss every N steps (0 = only at the end).",
                   "fix": "use a step interval, or 0 to evaluate only at the end"},
    "save_every": {"minimum": 0, "maximum": 10_000_000, "title": "Save every",
                   "help": "Write a resumable checkpoint every N steps (0 = only when cancelled).",
                   "fix": "use a step interval, or 0 to checkpoint only on cancel"},
    "epochs": {"minimum": 0, "maximum": 100_000, "title": "Epochs", "advanced": True,
               "help": "Train for whole passes over the data when Steps is 0.",
               "fix": "use a whole number of epochs, or 0 to stop at `max_steps`"},
    "weight_decay": {"minimum": 0.0, "maximum": 10.0, "title": "Weight decay", "advanced": True,
                     "help": "AdamW weight decay on the trained weights.",
                     "fix": "use 0.0 (none) or a small value such as 0.01"},
    "max_grad_norm": {"minimum": 0.0, "maximum": 1e6, "title": "Clip grad norm", "advanced": True,
                      "help": "Clip the gradient norm to this value (0 = no clipping).",
                      "fix": "use 1.0, or 0 to turn clipping off"},
    "log_every": {"minimum": 1, "maximum": 100_000, "title": "Log every", "advanced": True,
                  "help": "Send a curve point every N steps.", "fix": "use 1 to log every step"},
    "seed": {"minimum": 0, "maximum": 2_147_483_647, "title": "Seed", "advanced": True,
             "help": "Seeds the data order, the split and the adapter initialisation."},
    "gradient_checkpointing": {"title": "Gradient checkpointing", "advanced": True,
                               "help": "Recompute activations in the backward pass: less memory, slower."},
    "auto_checkpointing": {"title": "Auto checkpointing", "advanced": True,
                           "help": "Turn gradient checkpointing on by itself when the estimated "
                                   "memory for the largest batch does not fit what is free on the "
                                   "device (the run's start notes say so, with the numbers)."},
    "optimizer": {"enum": list(OPTIMIZERS), "title": "Optimizer", "advanced": True,
                  "help": "adamw (PyTorch); adamw_8bit / paged_adamw_8bit (bitsandbytes: 4x smaller "
                          "optimizer state); adafactor (factored second moments, least memory)."},
    "precision": {"enum": list(PRECISIONS), "title": "Compute precision", "advanced": True,
                  "help": "auto: bf16 autocast on a GPU that has it, fp16 (with loss scaling) on an "
                          "older GPU, bf16 on a CPU that multiplies bf16 natively (avx512_bf16 or "
                          "AMX), else fp32; bf16: bf16 autocast; fp16: fp16 autocast with a "
                          "gradient scaler; fp32: full precision."},
    "frozen_bf16": {"title": "bf16 frozen weights", "advanced": True,
                    "help": "When the run computes in bf16, hold the frozen base weights in bf16 "
                            "too: half their memory and no cast of every weight at every step. "
                            "The weights that train stay fp32."},
    "train_on": {"enum": ["answers", "all"], "title": "Train on", "advanced": True,
                 "help": "answers: the loss on the assistant's replies only (the usual choice); "
                         "all: on every token, prompts included."},
    "neftune_alpha": {"minimum": 0.0, "maximum": 100.0, "title": "NEFTune noise", "advanced": True,
                      "help": "Noise on the input embeddings while training (NEFTune; 5 is typical, "
                              "0 = off).", "fix": "use 0 (off) or a value such as 5"},
    "early_stopping_patience": {"minimum": 0, "maximum": 10_000, "title": "Early stopping",
                                "advanced": True,
                                "help": "Stop when the eval loss has not improved for this many "
                                        "evaluations (0 = never; needs eval every N steps).",
                                "fix": "use 0 (off) or a small count such as 3"},
    "keep_best": {"title": "Keep the best adapter", "advanced": True,
                  "help": "Also save the adapter of the lowest eval loss as best-adapter/."},
    "devices": {"minimum": 0, "maximum": 64, "title": "Devices", "advanced": True,
                "help": "Train data-parallel on this many GPUs (processes on a CPU), through "
                        "accelerate: each step takes one batch per device. 0 = every visible GPU.",
                "fix": "use 1 (one device), 0 (all GPUs) or a number up to the GPU count"},
    "sharding": {"enum": list(SHARDINGS), "title": "Multi-device mode", "advanced": True,
                 "help": "How several devices share the work. ddp: every device holds the whole "
                         "base model and trains on its own batches. fsdp: the base model's "
                         "weights, the gradients and the optimizer state are split across the "
                         "devices, one decoder layer gathered at a time, for a base model that "
                         "does not fit one GPU (unquantized base, adamw). One device trains as "
                         "usual whatever this says.",
                 "fix": 'use "ddp" (data parallel, the default) or "fsdp" (the base model '
                        'split across the devices)'},
    "packing": {"title": "Padding-free batches", "advanced": True,
                "help": "Lay each batch's examples end to end (no padding, no attention across "
                        "examples) and compute the output layer only on trained tokens: same "
                        "loss, faster, less memory. Methods that need padded batches (prompt "
                        "learning, AdaLoRA) and NEFTune use padded batches whatever this says."},
    "group_by_length": {"title": "Group by length", "advanced": True,
                        "help": "For padded batches (methods that cannot use padding-free "
                                "batches, NEFTune, or padding-free off): batches of examples of "
                                "similar length, in shuffled order with the longest first, so "
                                "less of each batch is padding. Every example is still seen once "
                                "per epoch."},
    "torch_compile": {"title": "Compile (torch.compile)", "advanced": True,
                      "help": "Compile the training forward and backward at the first step. On a "
                              "CPU that took 6 minutes for a 135M model and then made steps 1.16x "
                              "faster: it pays only in runs of many hundreds of steps. One device "
                              "only."},
    "log_to": {"enum": list(LOGGERS), "title": "Log to", "advanced": True,
               "help": "Also write the curves (train/eval loss, lr, tokens/s per step) for an "
                       "experiment tracker: tensorboard (RUN/tensorboard/), wandb or mlflow "
                       "(when installed); none = off."},
})

# Every checked section; validate() runs each value through studio.schema.coerce_value.
RECIPE_SCHEMA = {"model": MODEL_SCHEMA, "data": DATA_SCHEMA, "training": TRAINING_SCHEMA}

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class Recipe:
    name: str = RUN_NAME_SPEC["default"]
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    method: MethodSection = field(default_factory=MethodSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    source: Path | None = field(default=None, compare=False, repr=False)  # file it came from

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def default(cls, model_path=None, data_path=None, method: str = "lora") -> "Recipe":
        """The demo recipe: the default model, the dates demo data, the method's default params."""
        from studio import paths

        model = Path(model_path) if model_path else paths.default_model_dir()
        if data_path:
            data, eval_path = Path(data_path), ""
        else:
            data = paths.demo_data_path()
            eval_file = data.with_name("dates_eval.jsonl")
            eval_path = str(eval_file) if eval_file.exists() else ""
        recipe = cls(
            name=f"{method}-{'dates' if not data_path else Path(data_path).stem}",
            model=ModelSection(path=str(model)),
            data=DataSection(path=str(data), eval_path=eval_path),
            method=MethodSection(id=method, params=_plugin_defaults(method)),
        )
        return recipe

    @classmethod
    def from_dict(cls, data: dict, path: str | Path | None = None) -> "Recipe":
        """Build from a parsed TOML/JSON dict; UserError on unknown keys and wrong types."""
        if not isinstance(data, dict):
            raise UserError("a recipe must be a table of settings", path=path,
                            fix="start from `peft-studio recipe new OUT.toml`")
        recipe = cls(source=Path(path) if path else None)
        for key, value in data.items():
            if key == "name":
                recipe.name = _check_name(value, path)
            elif key in _SECTIONS:
                if not isinstance(value, dict):
                    raise UserError(f"[{key}] must be a table", path=path, field=key,
                                    fix=f"write it as a [{key}] section")
                setattr(recipe, key, _build_section(key, value, path))
            else:
                raise UserError(
                    f"unknown setting '{key}'", path=path, field=key,
                    fix="allowed at the top level: name, [model], [data], [method], [training]")
        return recipe

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        if not path.is_file():
            raise UserError("recipe file not found", path=path,
                            fix="check the path, or create one with `peft-studio recipe new OUT.toml`")
        if path.suffix.lower() in (".yaml", ".yml"):
            raise UserError("recipes are TOML (or JSON) files, not YAML.", path=path,
                            fix="write it as TOML: `peft-studio recipe new OUT.toml` makes one "
                                "to edit")
        text = read_user_text(path, "the recipe", fix="save the recipe with UTF-8 encoding (or "
                                                      "retype that character)")
        if not text.strip():
            raise UserError("the recipe file is empty.", path=path,
                            fix="write the settings into it, or start from `peft-studio recipe "
                                "new OUT.toml`")
        if path.suffix.lower() == ".json":
            try:
                data = parse_json(text, path)
            except json.JSONDecodeError as err:
                raise UserError(f"not valid JSON ({err.msg})", path=path, line=err.lineno,
                                fix="correct the JSON syntax at that line") from None
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as err:
                match = re.search(r"at line (\d+)", str(err))
                line = int(match.group(1)) if match else None
                if line is None and "end of document" in str(err):
                    line = max(1, len(text.rstrip("\n").splitlines()))
                _refuse_null(text, str(err), path, line)
                if "overwrite" in str(err) or "twice" in str(err):
                    raise UserError(f"a key or [section] is set twice ({err})", path=path,
                                    line=line, fix="keep one of them (TOML allows each key and "
                                                   "section once)") from None
                raise UserError(
                    f"not valid TOML ({err})", path=path, line=line,
                    fix='check quotes around text values (name = "x") and [section] headers',
                ) from None
        return cls.from_dict(data, path)

    # ---- writing --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            **{key: copy.deepcopy(dataclasses.asdict(getattr(self, key))) for key in _SECTIONS},
        }

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write as TOML (or JSON when the name ends in .json); temp file then rename."""
        path = Path(path)
        text = self.to_json() if path.suffix.lower() == ".json" else self.to_toml()
        path.parent.mkdir(parents=True, exist_ok=True)
        with disk_full_as_user_error(path, len(text.encode("utf-8"))):
            write_text_atomic(path, text)     # the temp file is removed when the write fails
        return path

    def copy(self) -> "Recipe":
        return copy.deepcopy(self)

    def resolve_path(self, value: str) -> Path:
        """A path from the recipe: relative ones are taken from the recipe file's folder."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self.source is not None:
            p = self.source.parent / p
        return p.resolve()

    def resolved(self) -> "Recipe":
        """A copy with absolute model/data paths (so it still works when copied elsewhere)."""
        out = self.copy()
        out.model.path = str(self.resolve_path(self.model.path)) if self.model.path else ""
        out.data.path = str(self.resolve_path(self.data.path)) if self.data.path else ""
        if self.data.eval_path:
            out.data.eval_path = str(self.resolve_path(self.data.eval_path))
        return out

    # ---- checking -------------------------------------------------------------------------
    def validate(self, check_paths: bool = True, check_method: bool = True) -> "Recipe":
        """UserError (file + field + fix) for bad values; returns self so calls can chain."""
        path = self.source
        _check_name(self.name, path)
        for section, specs in RECIPE_SCHEMA.items():
            values = getattr(self, section)
            for key, spec in specs.items():
                try:
                    schema.coerce_value(spec, getattr(values, key), field=f"{section}.{key}")
                except UserError as err:
                    raise UserError(err.message, path=path, field=err.field, fix=err.fix) from None
        if self.training.max_steps == 0 and self.training.epochs == 0:
            raise UserError("training has no length: max_steps and epochs are both 0",
                            path=path, field="training.max_steps",
                            fix="set max_steps (e.g. 60) or epochs (e.g. 1)")
        check_available(self.training.log_to, path)      # the chosen tracker is installed
        if check_paths:
            self._check_paths()
        if check_method:
            self.method_params()
        return self

    def _check_paths(self) -> None:
        path = self.source
        if not self.model.path:
            raise UserError("no model folder given", path=path, field="model.path",
                            fix="set [model] path to a Hugging Face model folder "
                                "(run `peft-studio setup` for the default one)")
        from studio.core.models import check_model_folder   # cheap: reads config/tokenizer files

        model_dir = self.resolve_path(self.model.path)
        try:
            check_model_folder(model_dir)
        except UserError as err:
            fix = err.fix or "Point it at a folder with config.json, the tokenizer and the weights."
            if "peft-studio" not in fix:
                fix = f"{fix.rstrip('.')} (run `peft-studio setup` for the default model)."
            raise UserError(f"model folder {model_dir}: {err.message}", path=path,
                            field="model.path", fix=fix) from None
        for key in ("path", "eval_path"):
            value = getattr(self.data, key)
            if key == "path" and not value:
                raise UserError("no training data given", path=path, field="data.path",
                                fix="set [data] path to a .jsonl, .json or .csv file")
            if not value:
                continue
            data_path = self.resolve_path(value)
            if data_path.is_dir():
                raise UserError(f"{data_path} is a folder, not a data file", path=path,
                                field=f"data.{key}",
                                fix="name the .jsonl, .json or .csv file inside it")
            if not data_path.is_file():
                raise UserError(f"data file {data_path} does not exist",
                                path=path, field=f"data.{key}",
                                fix="check the file name (relative paths start at the "
                                    "recipe's folder)")
            from studio.core.data_files import check_suffix

            try:
                check_suffix(data_path)
            except UserError as err:
                raise UserError(f"data file {data_path}: {err.message}", path=path,
                                field=f"data.{key}", fix=err.fix) from None

    def method_params(self) -> dict:
        """The method's parameters checked and completed by its plugin (UserError when bad)."""
        from studio import plugins

        found, _problems = plugins.discover()
        plugin = found.get(self.method.id)
        if plugin is None:
            raise UserError(f"unknown method '{self.method.id}'", path=self.source,
                            field="method.id",
                            fix=f"use one of: {', '.join(sorted(found)) or '(no plugins found)'}")
        try:
            return plugin.validate(dict(self.method.params))
        except UserError as err:
            raise UserError(err.message, path=self.source,
                            field=f"method.params.{err.field}" if err.field else "method.params",
                            fix=err.fix) from None


# ---- helpers --------------------------------------------------------------------------------

def _plugin_defaults(method: str) -> dict:
    try:
        from studio import plugins

        found, _ = plugins.discover()
        return dict(found[method].defaults()) if method in found else {}
    except Exception:  # noqa: BLE001 - a broken plugin set must not stop making a recipe
        return {}


def _check_name(value: Any, path) -> str:
    """The run's name: text, not blank, one line (it names the run in every listing)."""
    if value is None:
        raise UserError("the run's name is null", path=path, field="name",
                        fix='set name = "my-run"')
    name = _coerce("name", value, str, path)
    if not name.strip():
        raise UserError("the run needs a name (it is empty)", path=path, field="name",
                        fix='set name = "my-run"')
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise UserError(f"the run's name {json.dumps(name)[:60]} holds a line break or another "
                        "control character", path=path, field="name",
                        fix='write the name on one line, e.g. name = "my-run"')
    return name


_NULL_WORDS = re.compile(r"=\s*(null|None|NULL|nil|Null|~)\s*(#.*)?$")


def _refuse_null(text: str, message: str, path, line: int | None) -> None:
    """TOML has no null: `key = null` (a habit from JSON / YAML) gets its own message."""
    if line is None or "Invalid value" not in message:
        return
    lines = text.splitlines()
    if line <= len(lines):
        found = _NULL_WORDS.search(lines[line - 1])
        if found:
            key = lines[line - 1].split("=", 1)[0].strip()
            raise UserError(f"TOML has no null value ('{key} = {found.group(1)}')", path=path,
                            line=line, field=key or None,
                            fix="leave the key out to use its default, or write a value "
                                '(text in quotes: name = "my-run")')


def _type_name(kind: type) -> str:
    return {str: "text", int: "whole number", float: "number", bool: "true/false",
            dict: "table"}.get(kind, kind.__name__)


def _coerce(dotted: str, value: Any, kind: type, path) -> Any:
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not ok:
        shown = (json.dumps(value) if isinstance(value, (str, bool, int, float)) else
                 "null" if value is None else type(value).__name__)
        fix = f"write a {_type_name(kind)}"
        if isinstance(value, str) and kind in (int, float, bool):
            fix += " without quotes"
        raise UserError(f"expected a {_type_name(kind)}, got {shown}", path=path, field=dotted,
                        fix=fix)
    return value


def _build_section(name: str, values: dict, path):
    cls = _SECTIONS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{name}.{key}"
        if key not in fields:
            raise UserError(f"unknown setting '{key}' in [{name}]", path=path, field=dotted,
                            fix=f"allowed in [{name}]: {', '.join(fields)}")
        kind = fields[key].type
        kind = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict}[kind]
        kwargs[key] = _coerce(dotted, value, kind, path)
    return cls(**kwargs)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}" if inner else "{}"
    if value is None:
        raise ValueError("TOML has no null; leave the key out instead")
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: dict, _prefix: str = "") -> str:
    """Write a dict as TOML: plain keys first, then one [table] per nested dict."""
    lines, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines)
    for key, value in tables:
        name = f"{_prefix}{_toml_key(key)}"
        body = dump_toml(value, name + ".")
        block = f"[{name}]" + ("\n" + body if body and not body.startswith("[") else
                               ("\n\n" + body if body else ""))
        out += ("\n\n" if out else "") + block
    return out + ("\n" if not _prefix and not out.endswith("\n") else "")

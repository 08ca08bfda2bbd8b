"""Adapter sources: what one compared adapter is, read from the files only (no model load).

    src = load_source("runs/20260101-120000-lora-dates")   # a run folder or a run's name
    src = load_source("path/to/adapter")                   # any PEFT adapter folder (generated,
                                                           # blended or downloaded)
    sources = load_sources([...], base_model=None)         # UserError when the bases differ
    settings_diff(sources) -> {"training.learning_rate": ["0.001", "0.0002"], ...}

Layer: compare (rank 3). No torch, no Qt.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path

from studio.core import runs
from studio.errors import UserError
from studio.fileio import read_json_object

PROMPT_LEARNING = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING")
MISSING = "—"   # shown in the settings table for a setting one source does not have
ADAPTER_FIX = "Give a run folder (or its name, see `peft-studio runs`) or a PEFT adapter folder."


@dataclass
class AdapterSource:
    name: str
    adapter_dir: Path
    kind: str                       # run | generated | blend | adapter
    base_model: str                 # as recorded (a path or a hub name); "" when unrecorded
    method: str                     # the studio method id (runs) or peft's type in lower case
    peft_type: str                  # adapter_config's peft_type, e.g. "LORA"
    config: dict                    # adapter_config.json
    settings: dict = field(default_factory=dict)   # flat "section.key" -> value
    curves: dict = field(default_factory=dict)     # curves_from_events: metric -> [(step, value)]
    run_dir: Path | None = None
    colour: str = ""                # its colour on the page and in the report (assign_colours)

    @property
    def base_name(self) -> str:
        """The base model's folder name: what two records of the same model share."""
        return Path(self.base_model.rstrip("/\\")).name if self.base_model else ""

    @property
    def is_prompt_learning(self) -> bool:
        return self.peft_type in PROMPT_LEARNING

    def to_dict(self) -> dict:
        return {"name": self.name, "adapter_dir": str(self.adapter_dir), "kind": self.kind,
                "base_model": self.base_model, "method": self.method,
                "peft_type": self.peft_type, "settings": self.settings,
                "run_dir": str(self.run_dir) if self.run_dir else None}


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _read_json(path: Path, what: str) -> dict:
    return read_json_object(path, what, "Re-save the adapter from its run.")


def read_adapter_config(adapter_dir: Path) -> dict:
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise UserError("this folder is not a PEFT adapter (it has no adapter_config.json).",
                        path=adapter_dir, fix=ADAPTER_FIX)
    return _read_json(config_path, "adapter_config.json")


# adapter_config keys that say nothing about how the adapter was made
_NOT_SETTINGS = {"base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
                 "task_type", "peft_version", "runtime_config"}


def _config_settings(config: dict) -> dict:
    kept = {k: v for k, v in config.items() if k not in _NOT_SETTINGS and v not in (None, {}, [])}
    if isinstance(kept.get("target_modules"), list):
        kept["target_modules"] = ",".join(sorted(kept["target_modules"]))
    return _flatten(kept, "adapter.")


# What a run's curves hold: metric key -> (title, the event and field it comes from)
METRICS = {"loss": ("Train loss", "log", "loss"), "eval_loss": ("Eval loss", "eval", "eval_loss"),
           "lr": ("Learning rate", "log", "lr"),
           "tokens_per_s": ("Throughput (tokens/s)", "log", "tokens_per_s")}
AXES = {"step": "step", "tokens": "tokens seen"}


def curves_from_events(events: list[dict]) -> dict:
    """A run's curves by step: {"loss", "eval_loss", "lr", "tokens_per_s", "tokens"} -> [(step,
    value)], sorted by step; a step logged again after a resume keeps its last value. "tokens" is
    the tokens trained on by that step (runs from before it was logged have none)."""
    by_key: dict[str, dict] = {key: {} for key in (*METRICS, "tokens")}
    fields = [(key, kind, name) for key, (_, kind, name) in METRICS.items()] + [("tokens", "log", "tokens")]
    for event in events:
        for key, kind, name in fields:
            if event.get("event") == kind and isinstance(event.get(name), (int, float)):
                by_key[key][int(event.get("step", 0))] = float(event[name])
    return {key: sorted(points.items()) for key, points in by_key.items()}


def curve(src: "AdapterSource", metric: str, x: str = "step") -> list[tuple[float, float]]:
    """One metric of a source against the step or the tokens seen ([] when it has none). Tokens
    at a step that was not logged (an eval between logs) are interpolated between logged steps."""
    points = src.curves.get(metric) or []
    if x == "step" or not points:
        return list(points)
    tokens = src.curves.get("tokens") or []
    if not tokens:
        return []
    steps = [s for s, _ in tokens]
    out = []
    for step, value in points:
        k = bisect.bisect_left(steps, step)
        if k < len(steps) and steps[k] == step:
            seen = tokens[k][1]
        elif 0 < k < len(steps):
            (s0, t0), (s1, t1) = tokens[k - 1], tokens[k]
            seen = t0 + (t1 - t0) * (step - s0) / (s1 - s0)
        elif k == 0:
            seen = tokens[0][1] * step / steps[0] if steps[0] else tokens[0][1]
        else:
            continue                                   # past the last logged step
        out.append((seen, value))
    return out


def _from_run(run_dir: Path) -> AdapterSource:
    recipe = runs.load_recipe(run_dir)
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").is_file():
        info = runs.run_info(run_dir)
        raise UserError(f"this run has no final adapter yet (status: {info.status}).",
                        path=run_dir, fix="Compare finished runs, or a checkpoints/step-N/ folder "
                                          "of this run.")
    config = read_adapter_config(adapter_dir)
    data = recipe.to_dict()
    data.pop("name", None)
    settings = _flatten(data)
    settings.update(_config_settings(config))
    return AdapterSource(
        name=recipe.name, adapter_dir=adapter_dir, kind="run",
        base_model=str(recipe.model.path or config.get("base_model_name_or_path") or ""),
        method=recipe.method.id, peft_type=str(config.get("peft_type", "")).upper(),
        config=config, settings=settings, curves=curves_from_events(runs.read_events(run_dir)),
        run_dir=run_dir)


def _from_adapter(adapter_dir: Path) -> AdapterSource:
    config = read_adapter_config(adapter_dir)
    settings = _config_settings(config)
    kind = "adapter"
    for extra, label in (("generated_by.json", "generated"), ("blended_from.json", "blend")):
        if (adapter_dir / extra).is_file():
            kind = label
            made = _read_json(adapter_dir / extra, extra)
            settings.update(_flatten({k: v for k, v in made.items()
                                      if isinstance(v, (str, int, float, bool, dict))}, label + "."))
    peft_type = str(config.get("peft_type", "")).upper()
    # A checkpoint folder inside a run: the run's name and recipe still describe it.
    name = adapter_dir.name
    if adapter_dir.parent.name == "checkpoints" and (adapter_dir.parent.parent / "recipe.toml").is_file():
        name = f"{runs.load_recipe(adapter_dir.parent.parent).name}@{adapter_dir.name}"
    return AdapterSource(
        name=name, adapter_dir=adapter_dir, kind=kind,
        base_model=str(config.get("base_model_name_or_path") or ""),
        method=peft_type.lower() or "?", peft_type=peft_type, config=config, settings=settings)


def load_source(path_or_name) -> AdapterSource:
    """One adapter source from a run folder, a run's folder name, or an adapter folder."""
    path = Path(str(path_or_name)).expanduser()
    if (path / "adapter_config.json").is_file():
        return _from_adapter(path.absolute())
    try:
        run_dir = runs.find_run(path_or_name)
    except UserError:
        if path.is_dir():
            raise UserError("this folder is neither a run nor a PEFT adapter (no recipe.toml, no "
                            "adapter_config.json).", path=path, fix=ADAPTER_FIX) from None
        raise UserError("no such run or adapter folder.", path=path, fix=ADAPTER_FIX) from None
    return _from_run(Path(run_dir).absolute())


def check_same_base(sources: list[AdapterSource], base_model=None) -> str:
    """The base model all `sources` share (a folder name); UserError naming the adapter made for
    another base. `base_model` (a model folder) is the one chosen by the user, when given.
    Adapters that do not record their base are accepted."""
    chosen = Path(str(base_model)).name if base_model else ""
    for src in sources:
        if not src.base_name:
            continue
        if not chosen:
            chosen = src.base_name
            first = src
            continue
        if src.base_name != chosen:
            against = (f"the chosen base model {base_model}" if base_model
                       else f"{first.name} ({first.base_model})")
            raise UserError(f"'{src.name}' was made for the base model {src.base_model}, not for "
                            f"{against}; adapters of different base models cannot be compared.",
                            path=src.adapter_dir,
                            fix="Compare only adapters trained on the same base model"
                                + (", or choose that model with --base-model." if not base_model
                                   else "."))
    return chosen


def load_sources(items, base_model=None) -> list[AdapterSource]:
    """Sources for every item, with unique names, all of one base model (check_same_base)."""
    sources = [load_source(item) for item in items]
    if not sources:
        raise UserError("nothing to compare.", fix=ADAPTER_FIX)
    seen: dict[str, int] = {}
    for src in sources:
        if src.name in seen:
            seen[src.name] += 1
            src.name = f"{src.name} ({seen[src.name]})"
        else:
            seen[src.name] = 1
    check_same_base(sources, base_model)
    return sources


def settings_diff(sources: list[AdapterSource]) -> dict[str, list]:
    """Only the settings whose values are not the same in every source: key -> one value per
    source (MISSING where a source has no such setting), keys sorted."""
    keys = sorted(set().union(*(s.settings for s in sources)))
    diff = {}
    for key in keys:
        values = [s.settings.get(key, MISSING) for s in sources]
        if any(json.dumps(v, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True,
                                                                         default=str)
               for v in values[1:]):
            diff[key] = values
    return diff


def resolve_base_model(sources: list[AdapterSource], base_model=None) -> Path:
    """The base model folder to load: the chosen one, else the first recorded base that is a
    folder here, else the installed default model when it is the recorded one (by name)."""
    from studio import paths

    if base_model:
        folder = Path(str(base_model)).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError("this is not a model folder (no config.json).", path=folder,
                            field="base-model", fix="Give the folder of the base model.")
        check_same_base(sources, folder)
        return folder
    name = check_same_base(sources)
    for src in sources:
        folder = Path(src.base_model).expanduser() if src.base_model else None
        if folder is not None and (folder / "config.json").is_file():
            return folder
    default = paths.default_model_dir()
    if (not name or name == default.name) and (default / "config.json").is_file():
        return default
    raise UserError(f"the base model {name or '(not recorded)'} is not a folder on this machine.",
                    field="base-model", fix="Choose the base model folder with --base-model DIR.")


# One colour per compared adapter, the same in the page, the plots and the report (Okabe-Ito,
# readable by colour-blind users, on the dark page and the white report); the base is grey.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#999933")
BASE_COLOUR = "#888888"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def assign_colours(sources: list[AdapterSource]) -> list[AdapterSource]:
    """Give each source without a colour the first palette colour no other source has, so a
    source keeps its colour while others are added or removed (and the page, its plots and the
    report agree). Returns `sources`."""
    for src in sources:
        if not src.colour:
            used = {s.colour for s in sources}
            src.colour = next((c for c in PALETTE if c not in used),
                              colour(sources.index(src)))
    return sources

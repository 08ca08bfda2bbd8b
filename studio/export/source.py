"""What is being exported: a run (its final adapter, recipe and logs) or any adapter folder.

    src = resolve_source("20261202-lora-dates")        # run name, run folder or adapter folder
    src.adapter_dir, src.base_model, src.method, src.plugin, src.recipe, src.quantization

No torch here: resolving is cheap, so the CLI and the dialog can check a source before loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from studio.errors import UserError

# peft's peft_type (adapter_config.json) -> the studio's method id, for adapters without a run.
PEFT_TYPE_METHODS = {"LORA": "lora", "IA3": "ia3", "OFT": "oft", "BOFT": "boft", "VERA": "vera",
                     "LOHA": "loha", "LOKR": "lokr", "ADALORA": "adalora",
                     "PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt", "P_TUNING": "ptuning"}
PROMPT_LEARNING = frozenset({"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING",
                             "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT"})


@dataclass
class Source:
    adapter_dir: Path
    base_model: Path
    method: str                   # the studio's method (plugin) id
    plugin: object                # studio.plugins.Plugin
    adapter_config: dict
    run_dir: Path | None = None
    recipe: object | None = None  # studio.core.recipe.Recipe of the run, when there is one
    quantization: str | None = None   # how the base was loaded when the adapter was trained

    @property
    def mergeable(self) -> bool:
        return bool(self.plugin.capabilities.get("mergeable")) and (
            str(self.adapter_config.get("peft_type", "")).upper() not in PROMPT_LEARNING)

    def check_mergeable(self) -> None:
        """UserError (exit code 2 in the CLI) for a method whose adapter cannot be folded in."""
        if not self.mergeable:
            raise UserError(f"cannot merge {self.method}: prompt-learning adapters have no weights "
                            "to fold in; export --format adapter instead.",
                            path=self.adapter_dir, field="format",
                            fix="export --format adapter (the adapter folder loads with plain peft)")


def read_adapter_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise UserError("this folder is not a PEFT adapter (it has no adapter_config.json).",
                        path=adapter_dir, fix="give a run, a run's adapter/ folder, a "
                        "checkpoints/step-N/ folder or a generated adapter folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"adapter_config.json could not be read ({exc}).", path=path,
                        fix="re-save the adapter from its run") from None
    if not isinstance(data, dict):
        raise UserError("adapter_config.json is not a JSON object.", path=path,
                        fix="re-save the adapter from its run")
    return data


def infer_method(adapter_dir: Path, config: dict) -> str:
    """The method id of an adapter folder without a run: LoRA-Dash by its extra file, DoRA by
    use_dora, the rest by peft_type."""
    if (Path(adapter_dir) / "lora_dash.json").is_file():
        return "lora_dash"
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type == "LORA" and config.get("use_dora"):
        return "dora"
    return PEFT_TYPE_METHODS.get(peft_type, peft_type.lower())


def _run_of(adapter_dir: Path) -> Path | None:
    """The run folder holding an adapter/ or checkpoints/step-N/ folder, if any."""
    for parent in (adapter_dir.parent, adapter_dir.parent.parent):
        if (parent / "recipe.toml").is_file():
            return parent
    return None


def _final_adapter(run_dir: Path) -> Path:
    from studio.core import runs

    status = runs.read_status(run_dir)
    for candidate in (status.get("adapter_path"), run_dir / "adapter"):
        if candidate and (Path(candidate) / "adapter_config.json").is_file():
            return Path(candidate)
    latest = runs.latest_checkpoint(run_dir)
    hint = f"export the latest checkpoint: {latest}" if latest else \
        "resume the run until it finishes (peft-studio train --resume RUN)"
    raise UserError("this run has no final adapter yet (it is still training, or stopped before "
                    "the end).", path=run_dir, fix=hint)


def locate(run_or_adapter, model=None) -> tuple[Path, Path | None, object | None, Path]:
    """(adapter_dir, run_dir, recipe, base_model) without importing torch or any plugin (the GUI
    calls this to show the estimate before anything is loaded)."""
    from studio.core import runs

    given = Path(str(run_or_adapter)).expanduser()
    if (given / "adapter_config.json").is_file():
        adapter_dir, run_dir = given, _run_of(given)
    else:
        try:
            run_dir = runs.find_run(run_or_adapter)
        except UserError:
            raise UserError("neither a run nor an adapter folder (no recipe.toml, no "
                            "adapter_config.json).", path=run_or_adapter,
                            fix="give a run folder or name (see `peft-studio runs`) or an "
                                "adapter folder") from None
        adapter_dir = _final_adapter(run_dir)
    config = read_adapter_config(adapter_dir)
    recipe = runs.load_recipe(run_dir) if run_dir is not None else None
    if model:
        base = Path(model).expanduser()
    elif recipe is not None and recipe.model.path:
        base = Path(recipe.resolve_path(recipe.model.path))
    else:
        recorded = config.get("base_model_name_or_path")
        if not recorded or not Path(str(recorded)).expanduser().is_dir():
            raise UserError(f"the adapter's base model ({recorded or 'not recorded'}) is not a "
                            "folder on this machine.", path=adapter_dir / "adapter_config.json",
                            field="base_model_name_or_path",
                            fix="give the base model folder with --model DIR")
        base = Path(str(recorded)).expanduser()
    return adapter_dir, run_dir, recipe, base


def resolve_source(run_or_adapter, model=None, plugins: dict | None = None) -> Source:
    """A run name/folder or an adapter folder -> Source. `model` overrides the base model."""
    from studio import plugins as plugin_registry

    adapter_dir, run_dir, recipe, base = locate(run_or_adapter, model)
    config = read_adapter_config(adapter_dir)
    method = recipe.method.id if recipe is not None else infer_method(adapter_dir, config)
    if plugins is None:
        plugins, _problems = plugin_registry.discover()
    plugin = plugins.get(method)
    if plugin is None:
        raise UserError(f"the adapter's method '{method}' has no plugin here.",
                        path=adapter_dir, fix="install the plugin (see `peft-studio methods`)")
    if recipe is not None:
        quantization = recipe.model.quantization or None
    else:
        quantization = "4bit" if plugin.capabilities.get("needs_quantized_base") else None
    return Source(adapter_dir=adapter_dir, base_model=base, method=method, plugin=plugin,
                  adapter_config=config, run_dir=run_dir, recipe=recipe,
                  quantization=quantization)

"""Adapter-method plugins: the contract, the manifest checks and discovery.

A plugin is a folder holding ``manifest.json`` (what the method is and which hyperparameters it
takes) and ``plugin.py`` (``apply(model, params, ctx) -> model`` plus optional hooks). Plugins come
from the built-in ``plugins/`` folder, the user's plugin folder and the ``peft_studio.plugins``
entry-point group. A broken plugin is reported in the problems list and skipped; discovery never
raises. See docs/PLUGINS.md for the guide. No Qt here; torch/peft are imported only when needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Any, Callable

from studio import paths
from studio.errors import UserError
from studio.plugin_manifest import (  # noqa: F401 - re-exported: plugins and the GUI import them here
    DEFAULT_CAPABILITIES, PARAM_TYPES, QUANTIZATIONS, REQUIRED_KEYS, SPEC_KEYS, ManifestError,
    _allowed, _coerce, _is_int, _is_num, check_manifest, check_parameter_spec)

ENTRY_POINT_GROUP = "peft_studio.plugins"
HOOKS = ("apply", "optimizer_param_groups", "callbacks", "save", "load", "merge")


# ---------------------------------------------------------------------------------------------
# The plugin object
# ---------------------------------------------------------------------------------------------

class Plugin:
    """One adapter method: its manifest plus the functions from its plugin.py (or module)."""

    def __init__(self, manifest: dict, module: Any, source: str, folder: Path | None = None):
        manifest = check_manifest(manifest)
        if not callable(getattr(module, "apply", None)):
            raise ManifestError("plugin module defines no apply(model, params, ctx) function")
        for hook in HOOKS[1:]:
            if getattr(module, hook, None) is not None and not callable(getattr(module, hook)):
                raise ManifestError(f"'{hook}' in the plugin module is not a function")
        self.manifest = manifest
        self.module = module
        self.source = source
        self.folder = folder
        self.id: str = manifest["id"]
        self.name: str = manifest["name"]
        self.family: str = manifest["family"]
        self.description: str = manifest["description"]
        self.paper: str = manifest["paper"]
        self.capabilities: dict = manifest["capabilities"]
        self.parameters: dict = manifest["parameters"]
        self.requires_quantization: str | None = manifest.get("requires_quantization")

    def __repr__(self) -> str:
        return f"<Plugin {self.id!r} from {self.source}>"

    def defaults(self) -> dict:
        return {name: spec["default"] for name, spec in self.parameters.items()}

    def validate(self, values: dict | None) -> dict:
        """Return a full, typed copy of values (defaults filled in). UserError(field=name) if bad."""
        values = dict(values or {})
        unknown = sorted(k for k in values if k not in self.parameters)
        if unknown:
            known = ", ".join(self.parameters) or "(none)"
            raise UserError(f"method '{self.id}' has no parameter '{unknown[0]}'.", field=unknown[0],
                            fix=f"remove it; the parameters of '{self.id}' are: {known}.")
        out = {}
        for name, spec in self.parameters.items():
            if name not in values:
                out[name] = spec["default"]
                continue
            raw, allowed = values[name], _allowed(spec)
            try:
                value = _coerce(raw, spec["type"])
            except (ValueError, TypeError):
                raise UserError(f"method '{self.id}': {raw!r} is not a valid {spec['type']}.",
                                field=name, fix=f"use {allowed}.") from None
            lo, hi = spec.get("minimum"), spec.get("maximum")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise UserError(f"method '{self.id}': {value} is out of range.", field=name,
                                fix=f"use {allowed}.")
            if "enum" in spec and value not in spec["enum"]:
                raise UserError(f"method '{self.id}': {value!r} is not an allowed choice.",
                                field=name, fix=f"use {allowed}.")
            out[name] = value
        return out

    # -- hooks ---------------------------------------------------------------------------------
    def apply(self, model, values: dict | None = None, ctx: dict | None = None):
        model_out = self.module.apply(model, self.validate(values), dict(ctx or {}))
        if model_out is None:
            raise UserError(f"method plugin '{self.id}' ({self.source}): apply() returned None.",
                            fix="make apply() return the model to train.")
        return model_out

    def optimizer_param_groups(self, model, values: dict | None, lr: float) -> list[dict] | None:
        hook = getattr(self.module, "optimizer_param_groups", None)
        return hook(model, self.validate(values), lr) if hook else None

    def callbacks(self, model, values: dict | None, ctx: dict | None = None) -> list:
        hook = getattr(self.module, "callbacks", None)
        return list(hook(model, self.validate(values), dict(ctx or {})) or []) if hook else []

    def save(self, model, out_dir) -> None:
        hook = getattr(self.module, "save", None)
        if hook:
            hook(model, out_dir)
            return
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir), safe_serialization=True)

    def load(self, base_model, adapter_dir, is_trainable: bool = False):
        adapter_dir = Path(adapter_dir)
        hook = getattr(self.module, "load", None)
        if hook:
            if "is_trainable" in inspect.signature(hook).parameters:
                return hook(base_model, adapter_dir, is_trainable=is_trainable)
            return hook(base_model, adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise UserError("not a PEFT adapter folder (no adapter_config.json).", path=adapter_dir,
                            fix="choose the 'adapter' folder of a finished run or an exported adapter.")
        from peft import PeftModel
        return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)

    def merge(self, model):
        hook = getattr(self.module, "merge", None)
        if hook:
            return hook(model)
        if not self.capabilities.get("mergeable"):
            raise UserError(f"cannot merge: method '{self.id}' cannot be folded into the base "
                            "weights; export as adapter.", fix="export as adapter instead of merged.")
        return model.merge_and_unload()


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------

def _module_name(kind: str, folder: Path) -> str:
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    safe = re.sub(r"\W", "_", folder.name)
    return f"_peft_studio_plugin_{kind}_{safe}_{digest}"


def _import_file(name: str, path: Path):
    """Import plugin.py by path; the folder acts as its package so `from .helper import x` works."""
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    spec = importlib.util.spec_from_file_location(name, path,
                                                  submodule_search_locations=[str(path.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def load_plugin_folder(folder: str | Path, kind: str = "extra", source: str | None = None) -> Plugin:
    """Load one plugin folder; ManifestError with the cause if it is broken."""
    folder = Path(folder)
    manifest_path, module_path = folder / "manifest.json", folder / "plugin.py"
    if not manifest_path.is_file():
        raise ManifestError("no manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest.json is not valid JSON ({exc})") from None
    manifest = check_manifest(manifest)
    if not module_path.is_file():
        raise ManifestError("no plugin.py")
    try:
        module = _import_file(_module_name(kind, folder), module_path)
    except Exception as exc:  # a third-party import error must not stop the app
        raise ManifestError(f"plugin.py failed to import: {_describe_exception(exc)}") from None
    return Plugin(manifest, module, source or f"{kind}:{folder}", folder)


def _plugin_from_entry_point(ep) -> Plugin:
    try:
        obj = ep.load()
    except Exception as exc:
        raise ManifestError(f"entry point failed to load: {_describe_exception(exc)}") from None
    source = f"entry-point:{ep.name}={ep.value}"
    if isinstance(obj, (str, os.PathLike)):
        if not Path(obj).is_dir():
            raise ManifestError(f"entry point points to {obj}, which is not a folder")
        return load_plugin_folder(Path(obj), kind="ep", source=source)
    manifest = getattr(obj, "MANIFEST", None)
    if manifest is None:
        raise ManifestError("entry point must resolve to a plugin folder path or a module with a "
                            f"MANIFEST dict, got {type(obj).__name__}")
    folder = Path(obj.__file__).parent if isinstance(obj, types.ModuleType) and getattr(
        obj, "__file__", None) else None
    return Plugin(manifest, obj, source, folder)


def _folders_in(root: Path) -> list[Path]:
    if (root / "manifest.json").is_file():      # root is itself a plugin folder
        return [root]
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")))


def _entry_points():
    from importlib.metadata import entry_points
    return list(entry_points(group=ENTRY_POINT_GROUP))


def discover(extra_dirs=()) -> tuple[dict[str, Plugin], list[str]]:
    """Find every plugin: built-in, user folder, extra_dirs, then entry points.

    Returns (plugins by id, problems). A problem is "<where>: <cause>"; broken plugins and later
    duplicates of an id are skipped. Never raises for a plugin's fault.
    """
    plugins: dict[str, Plugin] = {}
    problems: list[str] = []

    def add(make: Callable[[], Plugin], where: str) -> None:
        try:
            plugin = make()
        except ManifestError as exc:
            problems.append(f"{where}: {exc}; skipped")
            return
        except Exception as exc:  # defensive: never let a plugin stop discovery
            problems.append(f"{where}: {_describe_exception(exc)}; skipped")
            return
        if plugin.id in plugins:
            problems.append(f"{where}: duplicate plugin id '{plugin.id}' (already provided by "
                            f"{plugins[plugin.id].source}); skipped")
            return
        plugins[plugin.id] = plugin

    roots = [("builtin", paths.builtin_plugins_dir()), ("user", paths.user_plugins_dir())]
    roots += [("extra", Path(d)) for d in extra_dirs]
    for kind, root in roots:
        if not root.is_dir():
            if kind == "extra":
                problems.append(f"{root}: plugin folder does not exist; skipped")
            continue
        for folder in _folders_in(root):
            add(lambda f=folder, k=kind: load_plugin_folder(f, k), str(folder))
    try:
        eps = _entry_points()
    except Exception as exc:
        problems.append(f"entry points '{ENTRY_POINT_GROUP}': {_describe_exception(exc)}")
        eps = []
    for ep in eps:
        add(lambda e=ep: _plugin_from_entry_point(e), f"entry point '{ep.name}' ({ep.value})")
    return plugins, problems


_cache: dict[tuple, tuple[dict[str, Plugin], list[str]]] = {}


def get_plugin(plugin_id: str, extra_dirs=(), refresh: bool = False) -> Plugin:
    """The plugin with this id (discovery is cached per extra_dirs); UserError listing the ids."""
    key = (str(paths.user_plugins_dir()), tuple(str(d) for d in extra_dirs))
    if refresh or key not in _cache:
        _cache[key] = discover(extra_dirs)
    plugins, problems = _cache[key]
    if plugin_id not in plugins:
        hint = [p for p in problems if f"'{plugin_id}'" in p or f"/{plugin_id}:" in p]
        more = f" ({hint[0]})" if hint else ""
        raise UserError(f"unknown method '{plugin_id}'{more}.", field="method.id",
                        fix=f"use one of: {', '.join(sorted(plugins))}.")
    return plugins[plugin_id]


# ---------------------------------------------------------------------------------------------
# Helpers for plugins and the GUI/CLI
# ---------------------------------------------------------------------------------------------

def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count their real element count."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2 * param.element_size()   # two 4-bit values per byte of storage
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def parse_target_modules(text: str) -> str | list[str]:
    """'all-linear' stays as is; 're:<regex>' becomes a regex; 'q_proj, v_proj' becomes a list."""
    text = (text or "").strip()
    if text == "all-linear":
        return text
    if text.startswith("re:"):
        return text[3:]
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("target_modules is empty.", field="target_modules",
                        fix="use 'all-linear' or a comma list such as 'q_proj,v_proj'.")
    return names


def linear_module_names(model) -> list[str]:
    """Short names of the Linear-like leaf modules (what target_modules can name), in model order."""
    names: list[str] = []
    for full, module in model.named_modules():
        if "Linear" in type(module).__name__ and not list(module.children()):
            short = full.rsplit(".", 1)[-1]
            if short not in names:
                names.append(short)
    return names


def apply_peft_config(model, config):
    """peft.get_peft_model, turning 'target modules not found' into a UserError on target_modules."""
    from peft import get_peft_model
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        if type(exc).__name__ == "NoMatchingPeftModuleError" or "not found in the base" in str(exc):
            layers = getattr(config, "layers_to_transform", None)
            extra = f" (in layers {layers})" if layers is not None else ""
            raise UserError(f"none of the target modules {config.target_modules!r}{extra} exist in "
                            "this model.", field="target_modules",
                            fix="use 'all-linear' or names from: "
                                + ", ".join(linear_module_names(model))) from None
        raise

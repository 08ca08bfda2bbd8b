"""The plugin contract: the Plugin object that wraps a manifest and the functions of plugin.py.

A plugin is a folder holding ``manifest.json`` (what the method is and which hyperparameters it
takes) and ``plugin.py`` (``apply(model, params, ctx) -> model`` plus optional hooks, HOOKS).
See docs/PLUGINS.md. No Qt here; peft is imported only when a default hook needs it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from studio import schema
from studio.errors import UserError
from studio.plugins.manifest import HOOK_CAPABILITIES, ManifestError, check_manifest

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
        self.parameters: dict = manifest["parameters"]
        self.requires_quantization: str | None = manifest.get("requires_quantization")


    @property
    def origin(self) -> str:
        """Where this plugin's code was loaded from, in words: "built in (plugins/lora)", or
        "user plugin at PATH - code that runs with your rights" (shown in the GUI and the CLI)."""
        kind, _, where = str(self.source).partition(":")
        place = str(self.folder) if self.folder else where
        if kind == "builtin":
            return f"built in ({place})"
        what = {"user": "user plugin", "ep": "installed plugin", "entry-point": "installed plugin"}
        return (f"{what.get(kind, 'extra plugin')} at {place or where} - code that runs with your "
                f"rights; keep only plugins you trust")
    def __repr__(self) -> str:
        return f"<Plugin {self.id!r} from {self.source}>"

    @property
    def capabilities(self) -> dict:
        """The manifest's declared capabilities (mergeable, needs_quantized_base, ...) plus those the
        module's hooks imply: optimizer_groups (defines optimizer_param_groups) and callbacks
        (defines callbacks). Computed from the loaded module, so the manifest need not repeat them."""
        derived = {cap: callable(getattr(self.module, hook, None))
                   for cap, hook in HOOK_CAPABILITIES.items()}
        return {**self.manifest["capabilities"], **derived}

    def defaults(self) -> dict:
        return schema.defaults(self.parameters)

    def validate(self, values: dict | None) -> dict:
        """Return a full, typed copy of values (defaults filled in). UserError(field=name) if bad."""
        values = dict(values or {})
        unknown = sorted(k for k in values if k not in self.parameters)
        if unknown:
            known = ", ".join(self.parameters) or "(none)"
            raise UserError(f"method '{self.id}' has no parameter '{unknown[0]}'.", field=unknown[0],
                            fix=f"remove it; the parameters of '{self.id}' are: {known}.")
        return {name: schema.coerce_value(spec, values[name], field=name, context=f"method '{self.id}'")
                if name in values else spec["default"]
                for name, spec in self.parameters.items()}

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

"""Finding plugins: the built-in ``plugins/`` folder, the user's plugin folder, extra folders and
the ``peft_studio.plugins`` entry-point group. A broken plugin is reported in the problems list and
skipped; discovery never raises. No Qt, no torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Callable

from studio import paths
from studio.errors import UserError
from studio.fileio import parse_json
from studio.plugins.contract import Plugin
from studio.plugins.manifest import ManifestError, check_manifest

ENTRY_POINT_GROUP = "peft_studio.plugins"


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
    if isinstance(exc, SystemExit):
        return f"the plugin called sys.exit({exc.code!r}) while being imported{where}"
    return f"{type(exc).__name__}: {exc}{where}"


def load_plugin_folder(folder: str | Path, kind: str = "extra", source: str | None = None) -> Plugin:
    """Load one plugin folder; ManifestError with the cause if it is broken."""
    folder = Path(folder)
    manifest_path, module_path = folder / "manifest.json", folder / "plugin.py"
    if not manifest_path.is_file():
        raise ManifestError("no manifest.json")
    try:
        manifest = parse_json(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest.json is not valid JSON ({exc})") from None
    except UserError as exc:             # a key written twice, NaN, nesting too deep
        raise ManifestError(f"manifest.json: {exc}") from None
    except OSError as exc:
        raise ManifestError(f"manifest.json cannot be read ({exc.strerror or exc})") from None
    manifest = check_manifest(manifest)
    if not module_path.is_file():
        raise ManifestError("no plugin.py")
    try:
        module = _import_file(_module_name(kind, folder), module_path)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - even sys.exit() in a plugin must not stop the app
        raise ManifestError(f"plugin.py failed to import: {_describe_exception(exc)}") from None
    return Plugin(manifest, module, source or f"{kind}:{folder}", folder)


def _plugin_from_entry_point(ep) -> Plugin:
    try:
        obj = ep.load()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin's import too
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
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - never let a plugin stop discovery
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

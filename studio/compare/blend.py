"""A weighted blend of two or more LoRA adapters, saved as a new standard PEFT adapter folder.

    blend(sources, weights=[0.7, 0.3], out_dir, combination_type="linear")

The combination is peft's own `add_weighted_adapter` (linear, cat, svd, ties, dare_linear, ...)
on one base model holding every input adapter. The folder holds what peft saves plus
`blended_from.json` (the inputs, weights and options), so chat, eval and export load it like
any adapter. It is built beside the target and renamed into place; an existing folder is only
replaced when it is a blend the studio wrote and `overwrite` is set. Layer: compare (rank 3).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

from studio.compare.sources import AdapterSource
from studio.errors import UserError
from studio.fileio import atomic_dir, write_json_atomic

COMBINATIONS = ("linear", "cat", "svd", "ties", "ties_svd", "dare_linear", "dare_ties",
                "dare_linear_svd", "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd")
NEEDS_DENSITY = ("ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                 "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd")
SAME_RANK = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")
RECORD = "blended_from.json"
# what peft's save_pretrained writes, plus our record: a folder with only these is ours to replace
BLEND_FILES = frozenset({"adapter_config.json", "adapter_model.safetensors", "README.md", RECORD})


def check_target(out_dir, overwrite: bool) -> Path:
    """The folder to write: new, or (with overwrite) an earlier blend holding only its own files."""
    target = Path(out_dir).expanduser().absolute()
    fix = "Choose a new folder for the blend."
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError("exists and is not a folder; it was left as it is.", path=target, fix=fix)
    if target.is_dir() and any(target.iterdir()):
        names = {p.name for p in target.iterdir()}
        ours = RECORD in names and names <= BLEND_FILES and all(p.is_file() for p in target.iterdir())
        if not ours:
            raise UserError("holds files the studio did not write as a blend; it was left as it is.",
                            path=target, fix=fix)
        if not overwrite:
            raise UserError("already holds a blend.", path=target,
                            fix=fix + " Or allow replacing it (--overwrite).")
    return target


def _rank(src: AdapterSource) -> int:
    r = int(src.config.get("r") or 0)
    return max([r, *(int(v) for v in (src.config.get("rank_pattern") or {}).values())])


def check_blend(sources: list[AdapterSource], weights: list[float], combination_type: str,
                density: float | None) -> None:
    """UserError for a blend peft cannot make, before any model is loaded."""
    from studio.compare.weights import check_has_delta

    if len(sources) < 2:
        raise UserError("a blend needs at least two adapters.", fix="Add another adapter.")
    if len(weights) != len(sources):
        raise UserError(f"{len(weights)} weights for {len(sources)} adapters.", field="weights",
                        fix="Give one weight per adapter, e.g. --weights 0.5,0.5.")
    if combination_type not in COMBINATIONS:
        raise UserError(f"unknown combination '{combination_type}'.", field="combination",
                        fix="Use one of: " + ", ".join(COMBINATIONS) + ".")
    for src in sources:
        check_has_delta(src.config, src.adapter_dir)
    if combination_type in NEEDS_DENSITY and not (density and 0 < density <= 1):
        raise UserError(f"'{combination_type}' keeps a fraction of each update: it needs a "
                        "density between 0 and 1.", field="density", fix="e.g. density 0.5.")
    ranks = {_rank(s) for s in sources}
    if combination_type in SAME_RANK and len(ranks) > 1:
        raise UserError(f"'{combination_type}' adds the factors of adapters of one rank; these have "
                        f"ranks {sorted(ranks)}.", field="combination",
                        fix="Use 'cat' (exact sum of the updates) or 'svd'.")
    if combination_type == "linear" and any(w < 0 for w in weights):
        raise UserError("'linear' scales both factors by sqrt(weight), so weights cannot be "
                        "negative.", field="weights", fix="Use 'cat' or 'svd' for negative weights.")


def blend(sources: list[AdapterSource], weights: list[float], out_dir, base_model=None,
          combination_type: str = "linear", density: float | None = None,
          overwrite: bool = False, aset=None) -> Path:
    """Write the blend of `sources` with `weights` to `out_dir`; returns the folder. `aset` (an
    AdapterSet of exactly these sources) avoids loading the base model again."""
    from studio.compare.loaded import AdapterSet

    weights = [float(w) for w in weights]
    check_blend(sources, weights, combination_type, density)
    target = check_target(out_dir, overwrite)
    if aset is None:
        aset = AdapterSet(sources, base_model)
    pairs = [aset.peft_model(s.name) for s in sources]
    model = pairs[0][0]
    if any(m is not model for m, _ in pairs):
        raise UserError("only adapters of one kind can be blended.",
                        fix="Blend LoRA adapters with LoRA adapters.")
    options = {"density": density} if combination_type in NEEDS_DENSITY else {}
    name = "blend"
    while name in model.peft_config:
        name += "_"
    try:
        model.add_weighted_adapter([n for _, n in pairs], weights, name,
                                   combination_type=combination_type, **options)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"peft could not blend these adapters ({exc}).",
                        fix="Try combination 'cat' or 'svd'.") from exc
    record = {
        "combination_type": combination_type, "density": density,
        "adapters": [{"name": s.name, "path": str(s.adapter_dir), "weight": w}
                     for s, w in zip(sources, weights)],
        "base_model": str(aset.base_path), "created": datetime.now().isoformat(timespec="seconds"),
    }
    try:
        with atomic_dir(target, replace=target.exists()) as tmp:
            model.save_pretrained(str(tmp), selected_adapters=[name])
            saved = tmp / name                    # peft puts a non-default adapter in a sub-folder
            for item in saved.iterdir():
                shutil.move(str(item), tmp / item.name)
            saved.rmdir()
            config = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = str(aset.base_path)
            write_json_atomic(tmp / "adapter_config.json", config)
            write_json_atomic(tmp / RECORD, record)
    except (FileExistsError, PermissionError) as exc:
        raise UserError(f"the blend could not be written here ({exc}).", path=target,
                        fix="Choose a new folder you can write to.") from exc
    finally:
        model.delete_adapter(name)
        model.set_adapter(pairs[0][1])
    return target

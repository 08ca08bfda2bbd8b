"""Adapter folders on disk: what files an adapter folder holds, and where one may be written
(a new or empty folder, or a folder holding only an adapter: never a folder of other files).
Used by the hypernetworks (generate --out) and the transfer (--out). Layer: core."""

from __future__ import annotations

from pathlib import Path

from studio.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# Everything PEFT's save_pretrained or write_adapter puts in a LoRA adapter folder; a folder with
# anything else in it (or a sub-folder) holds something of the user's and is never replaced.
ADAPTER_FILES = frozenset({ADAPTER_CONFIG, *ADAPTER_WEIGHTS, "generated_by.json", "README.md"})


def is_adapter_folder(folder: str | Path) -> bool:
    """True for a folder holding one LoRA adapter and nothing else: adapter_config.json, a
    weights file, and at most generated_by.json and README.md (no other files, no sub-folders)."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    names = set()
    for entry in folder.iterdir():
        if entry.is_symlink() or not entry.is_file():
            return False
        names.add(entry.name)
    return (ADAPTER_CONFIG in names and any(w in names for w in ADAPTER_WEIGHTS)
            and names <= ADAPTER_FILES)


def check_adapter_target(out_dir: str | Path) -> Path:
    """The absolute folder to write an adapter to: new, empty, or an adapter folder (replaced).
    UserError for anything whose contents would be lost or that is not a folder."""
    given = Path(out_dir)
    target = given.absolute()
    fix = "Choose a new folder name, e.g. --out ./my-adapter."
    if target.is_symlink():
        raise UserError("is a symbolic link; the adapter is not written through it.", path=given,
                        fix=fix)
    if target.exists() and not target.is_dir():
        raise UserError("is a file, not a folder; it was left as it is.", path=given, fix=fix)
    if target.is_dir():
        if target.resolve() == Path.cwd().resolve():
            raise UserError("is the current folder; the adapter needs a folder of its own.",
                            path=given, fix=fix)
        if any(target.iterdir()) and not is_adapter_folder(target):
            raise UserError("holds files that are not a LoRA adapter; it was left as it is "
                            "(only a folder with just an adapter's files is replaced).",
                            path=given, fix=fix + " Or empty the folder first.")
    return target

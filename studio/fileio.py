"""Writing files and folders so that a reader (or a crash) never sees half of one. No Qt, no torch.

    write_json_atomic(run_dir / "status.json", status)    # temp file beside it, then rename
    write_text_atomic(path, text)
    with atomic_file(path) as tmp:                        # for writers that take a path
        save_file(tensors, str(tmp))
    with atomic_dir(target, replace=True) as tmp:         # build a folder, rename it into place
        (tmp / "adapter_config.json").write_text(...)

A temp name starts with "." and the target's name, in the target's own folder (so the rename
stays on one file system). On an error the temp file or folder is removed, and the target is
left as it was. `atomic_dir(replace=True)` replaces an existing target only after the new folder
is complete: the old one is moved aside, the new one renamed in, then the old one removed.
Callers decide whether a target may be replaced; these helpers never check what is inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | Path):
    """Yield a temp path beside `path`; once the block ends without error it is renamed to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: str | Path, obj, indent: int | None = 2, **dumps_options) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, **dumps_options))


@contextmanager
def atomic_dir(target: str | Path, replace: bool = False):
    """Yield an empty temp folder beside `target`; when the block ends without error it becomes
    `target`. An existing `target` raises FileExistsError unless `replace` (the caller checked it
    is the studio's to replace); then it is swapped out only once the new folder is complete."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)                  # mkdtemp makes it private; the contents are not secret
        yield tmp
        _move_into_place(tmp, target, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, target: Path, replace: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        os.replace(tmp, target)
        return
    if not replace:
        raise FileExistsError(f"{target} already exists")
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(aside / target.name, target)      # put the old one back
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)

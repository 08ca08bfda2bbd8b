"""Writing an export safely: everything goes into `<target>.partial-<random>/` beside the target
and is renamed onto the target only when complete, so a cancelled, killed or failed export leaves
nothing that looks finished, and nothing the studio did not write is ever overwritten.

    with Staging(target) as stage:        # refuses a foreign non-empty target before any work
        ... write into stage.path ...
        stage.commit(manifest)            # writes export.json, renames stage.path -> target
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from pathlib import Path

from studio.core.runs import pid_alive
from studio.errors import UserError

MANIFEST = "export.json"           # written last: it marks a complete studio export
PARTIAL_MARK = ".peft-studio-partial.json"
MB = 1024 * 1024


class Cancelled(Exception):
    """The export was cancelled through its cancel callback."""


def is_studio_export(folder: Path) -> bool:
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("written_by") == "peft-studio export"


def check_target(target) -> Path:
    """The target as an absolute path; UserError when it holds something the studio did not
    write (an export may only replace an empty folder or a previous studio export)."""
    target = Path(target).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise UserError("the export target is a file.", path=target,
                            fix="choose a new folder name (the export is a folder)")
        if any(target.iterdir()) and not is_studio_export(target):
            raise UserError("the export target exists, is not empty and is not a previous "
                            "PEFT Studio export; it is left untouched.", path=target,
                            fix="choose a new or empty folder")
    if not target.parent.is_dir():
        raise UserError("the folder the export goes into does not exist.", path=target.parent,
                        fix="create it first, or choose another target")
    return target


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def check_disk(target: Path, needed_bytes: int, what: str) -> None:
    free = free_bytes(target.parent)
    if free < needed_bytes:
        raise UserError(f"not enough free disk for {what}: it needs about "
                        f"{needed_bytes / MB:,.0f} MB and {target.parent} has "
                        f"{free / MB:,.0f} MB free.", path=target.parent,
                        fix="free some space or choose a target on another disk")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from Python, or the same error wrapped by a library (safetensors' writer raises
    its own exception type with the OS message)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def disk_full_error(target: Path) -> UserError:
    return UserError("the disk filled up while writing the export; nothing was left at the "
                     "target.", path=Path(target).parent,
                     fix="free some space (see the size estimate) or choose another disk")


def remove_stale_partials(target: Path) -> list[Path]:
    """Staging folders of earlier exports to this target whose process is gone (killed)."""
    removed = []
    for folder in target.parent.glob(f"{target.name}.partial-*"):
        try:
            mark = json.loads((folder / PARTIAL_MARK).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue                      # not ours (no mark): leave it alone
        if isinstance(mark, dict) and not pid_alive(mark.get("pid")):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class Staging:
    def __init__(self, target) -> None:
        self.target = check_target(target)
        self.path: Path | None = None
        self.committed = False

    def __enter__(self) -> "Staging":
        remove_stale_partials(self.target)
        self.path = self.target.parent / f"{self.target.name}.partial-{secrets.token_hex(4)}"
        self.path.mkdir()
        (self.path / PARTIAL_MARK).write_text(json.dumps({"pid": os.getpid(),
                                                           "started": time.time()}))
        return self

    def commit(self, manifest: dict) -> Path:
        """Write export.json and put the folder in place of the target (atomically by rename)."""
        (self.path / PARTIAL_MARK).unlink(missing_ok=True)
        manifest = {"written_by": "peft-studio export", "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    **manifest}
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        check_target(self.target)          # still ours to replace (nobody wrote there meanwhile)
        old = None
        if self.target.exists():
            old = self.target.parent / f"{self.target.name}.old-{secrets.token_hex(4)}"
            self.target.rename(old)
        try:
            self.path.rename(self.target)
        except OSError:
            if old is not None:
                old.rename(self.target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.target

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed and self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        if exc is not None and is_disk_full(exc):
            raise disk_full_error(self.target) from exc

"""Fixtures for the reliability drills (issue 11, "Nothing lost, ever"): a small real file system
that fills up, a tiny training recipe, and the CLI run in this process."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh 40 MB tmpfs (a real file system that can fill up); skipped where mount is refused."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Write a filler file so that about `leave_bytes` stay free on folder's file system; it is
    the test's own file (remove it to free the space again)."""
    filler = folder / f"filler-{uuid.uuid4().hex[:6]}.bin"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as fh:
        left = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 20)
        while left > 0:
            try:
                left -= fh.write(chunk[:min(left, len(chunk))])
            except OSError:
                break
    return filler


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run `peft-studio ARGV` in this process: (exit code, stdout, stderr)."""
    from studio.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def events_of(run_dir: Path) -> list[dict]:
    from studio.core.runs import read_events

    return read_events(run_dir)


def status_of(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "status.json").read_text())


def only_run(base: Path) -> Path:
    found = [p for p in base.iterdir() if p.is_dir() and (p / "recipe.toml").is_file()]
    assert len(found) == 1, found
    return found[0]


def temp_leftovers(folder: Path) -> list[Path]:
    """Temp files and folders the studio's writers leave behind when they fail to clean up."""
    return [p for p in Path(folder).rglob("*") if ".tmp" in p.name or p.name.startswith(".step")]

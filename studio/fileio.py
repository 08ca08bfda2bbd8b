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

A full disk is a message, not a traceback:

    check_free_space(folder, needed_bytes)                # UserError before writing when it won't fit
    with disk_full_as_user_error(target, needed_bytes):   # ENOSPC (or torch's "file write failed")
        ...                                               # becomes "disk full at PATH: about N MB ..."

`safe_child(parent, name)` is the one way to turn a name read from a file into a path: the result
is inside `parent`, or a UserError.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from studio.errors import UserError

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# what torch.save / safetensors say when the disk fills under them (they do not keep the errno)
_DISK_FULL_TEXT = ("no space left", "file write failed", "unexpected pos", "storagefull",
                   "quota exceeded")


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


# ---- a full disk ------------------------------------------------------------------------------

def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    return shutil.disk_usage(_existing(Path(path))).free


def _mb(n: int | float) -> str:
    return f"{max(0.0, n) / 1e6:,.0f}" if n >= 1e6 or n <= 0 else f"{n / 1e6:.1f}"


def disk_full_error(path: str | Path, needed_bytes: int | None = None) -> UserError:
    """The one message for a full disk: 'disk full at PATH: about N MB needed, M MB free'."""
    free = free_bytes(path)
    need = f"about {_mb(needed_bytes)} MB needed, " if needed_bytes else ""
    return UserError(f"disk full at {path}: {need}{_mb(free)} MB free.",
                     fix="free some space on that disk (or point PEFT_STUDIO_HOME at a larger "
                         "one), then try again; a run continues with `peft-studio train --resume "
                         "RUN`.")


def is_disk_full(err: BaseException) -> bool:
    """True for an error that means the disk (or the user's quota) is full."""
    if isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS:
        return True
    if isinstance(err, (OSError, RuntimeError)) or type(err).__name__ == "SafetensorError":
        text = str(err).lower()
        return any(t in text for t in _DISK_FULL_TEXT)
    return False


def check_free_space(path: str | Path, needed_bytes: int) -> None:
    """UserError (disk full) when the file system of `path` has less than `needed_bytes` free."""
    if free_bytes(path) < needed_bytes:
        raise disk_full_error(path, needed_bytes)


@contextmanager
def disk_full_as_user_error(path: str | Path, needed_bytes: int | None = None):
    """Turn a disk-full error raised in the block into disk_full_error(path, needed_bytes).
    Put it outside atomic_file / atomic_dir, so their temp files are gone when the free space
    is measured."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:      # noqa: BLE001 - only disk-full errors are turned, others re-raised
        if is_disk_full(err):
            raise disk_full_error(path, needed_bytes) from None
        raise


# ---- names from file content ------------------------------------------------------------------

def safe_child(parent: str | Path, name: str, field: str | None = None,
               source: str | Path | None = None) -> Path:
    """parent / name, for a `name` read from a file (a task name, a library entry): UserError
    unless it is one plain path component inside `parent` (no '..', no '/', not absolute, not
    hidden, not empty). `source`/`field` name where the bad name came from."""
    text = str(name)
    bad = (not text.strip() or text in (".", "..") or text.startswith(".") or "/" in text
           or "\\" in text or "\0" in text or Path(text).is_absolute())
    child = Path(parent) / text
    if not bad:
        try:
            child.resolve().relative_to(Path(parent).resolve())
        except ValueError:
            bad = True
    if bad:
        raise UserError(f"the name {text!r} is not a plain folder name, so it could write outside "
                        f"{parent}.", path=source, field=field,
                        fix="use a name made of letters, digits, '-', '_' and '.' (no '/', no "
                            "'..', not starting with '.').")
    return child


# ---- JSON that json.loads lets through silently -----------------------------------------------

class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NotJSON(Exception):
    def __init__(self, word: str) -> None:
        super().__init__(word)
        self.word = word


def _unique_pairs(pairs):
    seen = set()
    for key, _value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _no_constant(word):
    raise _NotJSON(word)


def _key_line(text: str, key: str) -> int | None:
    """The line of the second `"key":` in `text` when the key is written exactly twice (else we
    cannot tell which object holds the duplicate, and say no line)."""
    import re

    found = [m.start() for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
    return text.count("\n", 0, found[1]) + 1 if len(found) == 2 else None


def parse_json(text: str, path=None, line: int | None = None, *, duplicates: bool = True,
               constants: bool = True):
    """json.loads, refusing with a UserError (naming `path`, `line` and the key) what json.loads
    accepts silently or crashes on: a key written twice in one object (json keeps only the last
    value, so the other is lost without a word), NaN / Infinity (not JSON; they would become the
    number nan), and nesting so deep that the parser runs out of stack (RecursionError).
    `duplicates` / `constants` False: accept those (files written by other tools, e.g. a model's
    config.json, which transformers reads leniently). json.JSONDecodeError passes through, for
    the caller's own message."""
    kwargs = {}
    if duplicates:
        kwargs["object_pairs_hook"] = _unique_pairs
    if constants:
        kwargs["parse_constant"] = _no_constant
    try:
        return json.loads(text, **kwargs)
    except _DuplicateKey as err:
        raise UserError(f"the key '{err.key}' is written twice in one object; JSON keeps only the "
                        "last value, so the first would be lost without a word.", path=path,
                        line=line if line is not None else _key_line(text, err.key),
                        field=err.key, fix=f"keep one '{err.key}' (rename or remove the other)."
                        ) from None
    except _NotJSON as err:
        raise UserError(f"{err.word} is not a JSON value.", path=path, line=line,
                        fix="write a number, or null, or quote it as text.") from None
    except RecursionError:
        raise UserError("the JSON is nested too deeply to read (thousands of [ or { inside each "
                        "other).", path=path, line=line,
                        fix="write the values flat: a record, a recipe or a task needs only a "
                            "few levels of [ ] and { }.") from None


def read_error(err: OSError, path, what: str = "the file") -> UserError:
    """A UserError for a file that exists but cannot be read (permissions, a folder, I/O)."""
    import errno as _errno

    if err.errno in (_errno.EACCES, _errno.EPERM):
        return UserError(f"{what} cannot be read: permission denied.", path=path,
                         fix="give yourself read permission (e.g. chmod u+r FILE), or copy the "
                             "file somewhere you can read it and choose the copy.")
    if isinstance(err, IsADirectoryError):
        return UserError(f"{what} is a folder, not a file.", path=path,
                         fix="choose the file inside it.")
    return UserError(f"{what} cannot be read ({err.strerror or err}).", path=path,
                     fix="check the file and the disk it is on, then try again.")


def read_user_text(path, what: str, fix: str, field: str | None = None) -> str:
    """A file the user gave, as text: read errors through `read_error`, a byte that is not
    UTF-8 named with its offset and line, a BOM (Notepad saves one) dropped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise read_error(err, path, what) from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise UserError(f"{what} is not UTF-8 text: byte 0x{raw[err.start]:02x} at byte offset "
                        f"{err.start} cannot be read.", path=path,
                        line=raw[:err.start].count(b"\n") + 1, field=field, fix=fix) from None


def read_json_object(path, what: str, fix: str, *, strict: bool = False) -> dict:
    """A JSON file that must hold an object; UserError naming the file and `fix` when it cannot
    be read or holds something else (`strict`: duplicate keys and NaN refused too, see
    parse_json; nesting too deep is refused either way)."""
    path = Path(path)
    try:
        data = parse_json(path.read_text(encoding="utf-8"), path, duplicates=strict,
                          constants=strict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} could not be read ({exc}).", path=path, fix=fix) from exc
    if not isinstance(data, dict):
        raise UserError(f"{what} is not a JSON object.", path=path, fix=fix)
    return data


def slug(name: str, default: str = "run") -> str:
    """A file-name-safe form of `name` (letters, digits, . _ -; at most 60 characters)."""
    import re

    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    return text[:60] or default

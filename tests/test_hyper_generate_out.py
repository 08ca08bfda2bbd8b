"""`peft-studio generate ... --out DIR` never deletes what the studio did not write.

Run as a user types it (a separate process, the shipped Text-to-LoRA and the real model): a folder
holding a user's files, the current folder and a file path are refused with exit code 2 and a
message naming the path, and stay exactly as they were; an earlier adapter folder is replaced; a
write that fails half-way leaves no adapter-looking folder behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Decide whether a sentence about sports is plausible."


def _generate(out, model_dir, cwd, sentence=SENTENCE) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "import sys; from studio.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, "generate", sentence, "--out", str(out),
                           "--model", str(model_dir)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def _refuses(out, model_dir, cwd, root: Path, path_text: str) -> subprocess.CompletedProcess:
    """Run generate --out `out`; it must fail cleanly (exit 2, the path and a fix named, no
    traceback) and leave everything under `root` byte for byte as it was."""
    before = _snapshot(root)
    proc = _generate(out, model_dir, cwd)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert path_text in proc.stderr and "Fix:" in proc.stderr
    assert _snapshot(root) == before
    return proc


def test_a_folder_of_user_files_is_refused_and_kept(tmp_path, model_dir):
    user = tmp_path / "my-stuff"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("years of notes")
    (user / "sub" / "photo.jpg").write_bytes(b"\xff\xd8 jpeg")
    _refuses(user, model_dir, tmp_path, tmp_path, str(user))


def test_an_adapter_folder_with_a_user_file_is_refused(tmp_path, model_dir):
    # adapter files plus one of the user's: not the studio's alone, so not replaced
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "my_notes.md"):
        (folder / name).write_text(name)
    _refuses(folder, model_dir, tmp_path, tmp_path, str(folder))


def test_out_dot_in_a_folder_with_a_file_is_refused(tmp_path, model_dir):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "thesis.tex").write_text("chapter 1")
    _refuses(".", model_dir, cwd, tmp_path, ".")


def test_out_a_file_is_refused_cleanly(tmp_path, model_dir):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"%PDF-1.4 user data")
    proc = _refuses(target, model_dir, tmp_path, tmp_path, str(target))
    assert "is a file" in proc.stderr


def test_regenerate_into_an_existing_adapter_folder(tmp_path, model_dir):
    out = tmp_path / "sports"
    first = _generate(out, model_dir, tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "generated_by.json").read_text())["description"] == SENTENCE
    second_sentence = "Answer questions about dates."
    second = _generate(out, model_dir, tmp_path, sentence=second_sentence)
    assert second.returncode == 0, second.stderr
    assert json.loads((out / "generated_by.json").read_text())["description"] == second_sentence
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "generated_by.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["sports"]     # no temp or moved-aside folders


def test_a_write_that_fails_half_way_leaves_no_adapter(tmp_path, model_dir, monkeypatch):
    import safetensors.torch

    from studio.hyper import api

    hn = api.load_hypernetwork()

    def killed(*args, **kwargs):
        raise OSError("killed while writing the weights")

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    new = tmp_path / "new"
    with pytest.raises(OSError, match="killed"):
        api.generate(hn, new, description=SENTENCE, base_model=model_dir)
    assert list(tmp_path.iterdir()) == []                 # no target, no half-written temp folder
    monkeypatch.undo()
    old = tmp_path / "old"
    api.generate(hn, old, description=SENTENCE, base_model=model_dir)
    before = _snapshot(tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(OSError, match="killed"):
        api.generate(hn, old, description="Answer questions about dates.", base_model=model_dir)
    assert _snapshot(tmp_path) == before                  # the earlier adapter, untouched

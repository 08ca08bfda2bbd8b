"""studio.fileio: a target is either the old one or the complete new one, never half of either."""

from __future__ import annotations

import json

import pytest

from studio.fileio import atomic_dir, write_json_atomic, write_text_atomic


def test_json_and_text_writes_leave_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_text_atomic(tmp_path / "b.txt", "hello")
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert (tmp_path / "b.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt"]


def test_failed_file_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_json_atomic(target, {"x": object()})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_creates_and_replaces_only_when_asked(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("1")
    assert (target / "f").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic_dir(target) as tmp:
            (tmp / "f").write_text("2")
    assert (target / "f").read_text() == "1"
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "g").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["g"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]      # no temp or moved-aside folders


def test_atomic_dir_failure_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "f").write_text("half")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "keep").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, replace=True) as tmp:
            raise RuntimeError("killed mid-write")
    assert [p.name for p in target.iterdir()] == ["keep"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

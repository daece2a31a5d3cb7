"""Atomic output groups: every file appears, or none does, as far as the filesystem allows."""

from __future__ import annotations

import os

import pytest

from shest.io import atomic
from shest.io.atomic import OutputSet, atomic_path


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_group_renames_every_file(tmp_path):
    with OutputSet() as out:
        for name in ("a.csv", "b.csv"):
            out.path(tmp_path / name).write_text(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_group_failure_creates_nothing(tmp_path):
    with pytest.raises(ValueError), OutputSet() as out:
        out.path(tmp_path / "a.csv").write_text("a")
        raise ValueError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_unwritten_file_fails_before_any_rename(tmp_path):
    (tmp_path / "a.csv").write_text("old")
    with pytest.raises(OSError, match="b.csv would be empty"), OutputSet() as out:
        out.path(tmp_path / "a.csv").write_text("new")
        out.path(tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_text() == "old"


def test_unwritten_file_leaves_no_temporaries(tmp_path):
    with pytest.raises(OSError), OutputSet() as out:
        out.path(tmp_path / "a.csv").write_text("new")
        out.path(tmp_path / "b.csv")
    assert leftovers(tmp_path) == []


def test_empty_file_allowed_when_asked(tmp_path):
    with OutputSet() as out:
        out.path(tmp_path / "empty.txt", allow_empty=True)
    assert (tmp_path / "empty.txt").stat().st_size == 0


def test_deleted_temporary_fails_before_any_rename(tmp_path):
    with pytest.raises(OSError, match="b.csv was never written"), OutputSet() as out:
        out.path(tmp_path / "a.csv").write_text("new")
        out.path(tmp_path / "b.csv").unlink()
    assert not (tmp_path / "a.csv").exists()


def test_final_folder_fails_before_any_rename(tmp_path):
    (tmp_path / "b.csv").mkdir()
    with pytest.raises(OSError, match="is a folder"), OutputSet() as out:
        out.path(tmp_path / "a.csv").write_text("new")
        out.path(tmp_path / "b.csv").write_text("new")
    assert not (tmp_path / "a.csv").exists()


@pytest.fixture
def second_rename_fails(monkeypatch):
    calls = []

    def replace(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("disk full")
        os.rename(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)


def test_failed_rename_names_replaced_files(tmp_path, second_rename_fails):
    with pytest.raises(OSError, match=r"already replaced: \S*a\.csv\.$"), OutputSet() as out:
        for name in ("a.csv", "b.csv", "c.csv"):
            out.path(tmp_path / name).write_text(name)


def test_failed_rename_deletes_remaining_temporaries(tmp_path, second_rename_fails):
    with pytest.raises(OSError), OutputSet() as out:
        for name in ("a.csv", "b.csv", "c.csv"):
            out.path(tmp_path / name).write_text(name)
    assert leftovers(tmp_path) == []


def test_atomic_path_failure_keeps_old_file(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("writer failed")
    assert target.read_text() == "old"

"""keras_sep.files: the one place that publishes files and folders."""

import os

import pytest

from keras_sep.files import atomic_write_text, replace_dir, staged_dir, staged_file


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_staged_file_publishes_only_on_success(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "first")
    with pytest.raises(RuntimeError), staged_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert (tmp_path / "a.txt").read_text() == "first"
    assert _names(tmp_path) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_replace_dir_replaces_an_existing_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with staged_dir(tmp_path / "out") as staging:
        (staging / "new.txt").write_text("new")
        assert _names(tmp_path) == sorted(["out", staging.name])
    assert _names(tmp_path / "out") == ["new.txt"]
    assert _names(tmp_path) == ["out"]  # nothing staged or moved aside is left


def test_staged_dir_failure_leaves_dest_untouched(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_dir(tmp_path / "out") as staging:
        (staging / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert _names(tmp_path / "out") == ["old.txt"]
    assert _names(tmp_path) == ["out"]


def test_replace_dir_keeps_an_accepted_dest(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "theirs.txt").write_text("first writer")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.txt").write_text("second writer")
    assert not replace_dir(tmp_path / "mine", tmp_path / "out", keep=lambda d: True)
    assert _names(tmp_path) == ["out"] and _names(tmp_path / "out") == ["theirs.txt"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.txt").write_text("second writer")
    assert replace_dir(tmp_path / "mine", tmp_path / "out", keep=lambda d: False)
    assert _names(tmp_path) == ["out"] and _names(tmp_path / "out") == ["mine.txt"]


def test_replace_dir_puts_the_old_folder_back_when_the_rename_fails(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    (tmp_path / "new").mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if os.fspath(src) == os.fspath(tmp_path / "new"):
            raise PermissionError("refused")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        replace_dir(tmp_path / "new", tmp_path / "out")
    assert _names(tmp_path / "out") == ["old.txt"]
    assert _names(tmp_path) == ["new", "out"]

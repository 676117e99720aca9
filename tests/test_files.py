"""keras_sep.files: the one place that publishes files, under one rule: a run deletes
nothing and replaces only what keras-sep itself wrote."""

import json
import os

import pytest

from keras_sep.files import (
    RECORD,
    OutputExistsError,
    atomic_write_text,
    claim,
    publish,
    remove_leftovers,
    replace_dir,
    staged_dir,
    staged_file,
    staged_files,
    staged_tree,
    written_by_keras_sep,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != RECORD)


def test_a_file_keras_sep_wrote_is_replaced_and_a_users_file_is_not(tmp_path):
    atomic_write_text(tmp_path / "ours.txt", "first")
    assert written_by_keras_sep(tmp_path / "ours.txt")
    atomic_write_text(tmp_path / "ours.txt", "second")  # ours: replaced
    assert (tmp_path / "ours.txt").read_text() == "second"
    (tmp_path / "theirs.txt").write_text("the user's")
    with pytest.raises(OutputExistsError, match="theirs.txt exists and was not written by"):
        atomic_write_text(tmp_path / "theirs.txt", "ours")
    assert (tmp_path / "theirs.txt").read_text() == "the user's"
    atomic_write_text(tmp_path / "theirs.txt", "ours", overwrite=True)
    assert (tmp_path / "theirs.txt").read_text() == "ours"
    assert _names(tmp_path) == ["ours.txt", "theirs.txt"]  # no temporary file left


def test_a_file_edited_since_keras_sep_wrote_it_is_the_users(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "ours")
    os.utime(tmp_path / "a.txt", ns=(1, 1))  # touched by the user (or rewritten by an editor)
    assert not written_by_keras_sep(tmp_path / "a.txt")
    with pytest.raises(OutputExistsError):
        atomic_write_text(tmp_path / "a.txt", "again")


def test_a_folder_or_a_symlink_in_the_way_is_never_replaced(tmp_path):
    (tmp_path / "a.txt").mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"):
        atomic_write_text(tmp_path / "a.txt", "x", overwrite=True)
    (tmp_path / "target.txt").write_text("the user's")
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    with pytest.raises(OutputExistsError):
        atomic_write_text(tmp_path / "link.txt", "x")
    assert (tmp_path / "target.txt").read_text() == "the user's"


def test_staged_files_checks_every_destination_before_the_work(tmp_path):
    (tmp_path / "b.txt").write_text("the user's")
    ran = []
    with pytest.raises(OutputExistsError), staged_files([tmp_path / "a.txt", tmp_path / "b.txt"]):
        ran.append(True)
    assert not ran and _names(tmp_path) == ["b.txt"]


def test_a_run_killed_between_two_renames_still_owns_both_versions(tmp_path, monkeypatch):
    atomic_write_text(tmp_path / "a.txt", "old a")
    atomic_write_text(tmp_path / "b.txt", "old b")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if os.fspath(dst) == os.fspath(tmp_path / "b.txt"):
            raise KeyboardInterrupt  # killed after a.txt was renamed, before b.txt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with (
        pytest.raises(KeyboardInterrupt),
        staged_files([tmp_path / "a.txt", tmp_path / "b.txt"]) as t,
    ):
        for path, tmp in t.items():
            tmp.write_text(f"new {path.name[0]}")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / "a.txt").read_text() == "new a"
    assert (tmp_path / "b.txt").read_text() == "old b"
    assert written_by_keras_sep(tmp_path / "a.txt") and written_by_keras_sep(tmp_path / "b.txt")
    atomic_write_text(tmp_path / "b.txt", "next run")  # so the next run may replace both


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


def test_staged_tree_publishes_file_by_file_and_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("the user's")
    with staged_tree(out) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a.bin").write_bytes(b"a")
        (staging / "top.txt").write_text("top")
    assert _names(out) == ["notes.txt", "sub", "top.txt"]
    assert (out / "sub" / "a.bin").read_bytes() == b"a"
    (out / "top.txt").unlink()
    (out / "top.txt").write_text("now the user's")
    with pytest.raises(OutputExistsError), staged_tree(out) as staging:
        (staging / "top.txt").write_text("again")
    assert (out / "top.txt").read_text() == "now the user's"
    assert _names(out) == ["notes.txt", "sub", "top.txt"]  # the staging folder is gone


def test_claim_records_files_written_by_other_means(tmp_path):
    (tmp_path / "log.csv").write_text("epoch\n")
    assert not written_by_keras_sep(tmp_path / "log.csv")
    claim([tmp_path / "log.csv"])
    assert written_by_keras_sep(tmp_path / "log.csv")
    assert json.loads((tmp_path / RECORD).read_text())["written_by"] == "keras-sep"


def test_leftovers_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / ".ks-999999999-abc.tmp"
    live = tmp_path / f".ks-{os.getppid()}-xyz.tmp"
    users = tmp_path / ".ks-notes"  # not of our making: no process id
    for path in (dead, live, users):
        path.write_text("x")
    assert remove_leftovers(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, users.name])


def test_publish_refuses_everything_when_one_destination_is_taken(tmp_path):
    (tmp_path / "t1").write_text("1")
    (tmp_path / "t2").write_text("2")
    (tmp_path / "b").write_text("the user's")
    with pytest.raises(OutputExistsError):
        publish({tmp_path / "t1": tmp_path / "a", tmp_path / "t2": tmp_path / "b"})
    assert not (tmp_path / "a").exists() and (tmp_path / "b").read_text() == "the user's"


def test_replace_dir_replaces_an_existing_cache_folder(tmp_path):
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

"""Publishing output files: a run deletes nothing and replaces only what keras-sep wrote.

Every file keras-sep writes (stems, model folders, reports, scores, exports, toy data)
goes through here, under one rule:

- a file is written under a short hidden temporary name in its own folder
  (``.ks-<pid>-<random>``) and renamed into place when it is complete, so a reader never
  sees a truncated file and a failed run leaves nothing behind;
- a file already at that name is replaced only if keras-sep wrote it there: each folder
  keras-sep writes into holds a small record, ``.keras-sep-record``, with the size and
  modification time of every file it published there, and a file that no longer matches
  its record (edited, replaced, or never ours) is the user's;
- any other file in the way is an ``OutputExistsError`` (exit 2) naming it, unless the
  caller passes ``overwrite=True`` (the commands' ``--overwrite``); a folder in the way of
  a file is never replaced;
- nothing is deleted: files that a run does not write again stay as they are.

The one exception is ``staged_dir``, for keras-sep's own cache folders, which hold
nothing of the user's.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from keras_sep.errors import UsageError

RECORD = ".keras-sep-record"
# Short, so that a 255-byte file name still has room beside it; the pid lets a later run
# tell a killed run's leftovers from a live run's work in progress.
TEMP_PREFIX = ".ks-"


class OutputExistsError(UsageError):
    """A file keras-sep did not write (or a folder) is where an output would go."""


def _fingerprint(path: str | os.PathLike) -> list[int]:
    st = os.lstat(path)
    return [st.st_size, st.st_mtime_ns]


def _read(folder: Path) -> dict:
    try:
        data = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_record(folder: Path) -> dict[str, list[list[int]]]:
    files = _read(folder).get("files")
    return files if isinstance(files, dict) else {}


def _write_record(
    folder: Path, files: dict[str, list[list[int]]], stems: set[str] | None = None
) -> None:
    if stems is None:
        stems = set(_read(folder).get("stems", []))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    try:
        with os.fdopen(fd, "w") as f:
            record = {"written_by": "keras-sep", "files": files, "stems": sorted(stems)}
            json.dump(record, f, indent=1)
        _set_permissions(tmp)
        os.replace(tmp, folder / RECORD)
    finally:
        Path(tmp).unlink(missing_ok=True)


def written_by_keras_sep(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file keras-sep published, unchanged since."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    return _fingerprint(path) in _read_record(path.parent).get(path.name, [])


def separated_stem(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a stem that keras-sep separated, unchanged since: never an input."""
    path = Path(path)
    return written_by_keras_sep(path) and path.name in _read(path.parent).get("stems", [])


def check_free(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse, before any work, to write ``path`` over something that is not ours."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        raise OutputExistsError(
            f"{path} is a folder where keras-sep would write a file; move it or choose "
            "another output folder"
        )
    if overwrite or written_by_keras_sep(path):
        return
    raise OutputExistsError(
        f"{path} exists and was not written by keras-sep; move it, choose another output "
        "folder, or pass --overwrite to replace it"
    )


def make_folder(folder: str | os.PathLike, created: list[Path] | None = None) -> Path:
    """Create ``folder`` and its parents; a file in the way is an ``OutputExistsError``.

    The folders it creates are appended to ``created``, for ``remove_empty``.
    """
    folder = Path(folder)
    for parent in [*reversed(folder.parents), folder]:
        if not os.path.lexists(parent):
            try:
                parent.mkdir()
            except FileExistsError:
                pass  # another process (a training worker) made it first
            else:
                if created is not None:
                    created.append(parent)
        if not parent.is_dir():
            raise OutputExistsError(
                f"{parent} is a file where keras-sep needs a folder; move it or choose "
                "another output folder"
            )
    return folder


def remove_empty(created: list[Path]) -> None:
    """Remove the folders a failed run created, if they are still empty, deepest first."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def claim(paths: list[str | os.PathLike]) -> None:
    """Record files that keras-sep wrote in place by other means (a Keras log) as ours."""
    by_folder = defaultdict(list)
    for path in map(Path, paths):
        if path.is_file():
            by_folder[path.parent].append(path)
    for folder, files in by_folder.items():
        record = _read_record(folder)
        record.update({p.name: [_fingerprint(p)] for p in files})
        _write_record(folder, record)


def publish(moves: Mapping[Path, Path], overwrite: bool = False, stems: bool = False) -> None:
    """Rename finished temporary files onto their destinations, each on its own.

    Every destination is checked first, so nothing is published when one is refused. The
    record lists a file's new fingerprint before the rename and drops the old one after,
    so a run killed in between still owns whichever version is on disk. ``stems`` marks the
    files as separated stems, which a folder scan never takes as songs.
    """
    for dest in moves.values():
        check_free(dest, overwrite)
    by_folder: dict[Path, list[tuple[Path, Path]]] = defaultdict(list)
    for tmp, dest in moves.items():
        by_folder[Path(dest).parent].append((Path(tmp), Path(dest)))
    for folder, items in by_folder.items():
        record = _read_record(folder)
        names = {dest.name for _, dest in items}
        marked = set(_read(folder).get("stems", []))
        marked = marked | names if stems else marked - names
        for tmp, dest in items:
            _set_permissions(tmp)
            old = [_fingerprint(dest)] if os.path.lexists(dest) else []
            record[dest.name] = [_fingerprint(tmp), *old]
        _write_record(folder, record, marked)
        for tmp, dest in items:
            os.replace(tmp, dest)
            record[dest.name] = [_fingerprint(dest)]
        _write_record(folder, record, marked)


def _temp_name(folder: Path, suffix: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def staged_files(
    paths: list[str | os.PathLike],
    overwrite: bool = False,
    suffix: str = ".tmp",
    stems: bool = False,
) -> Iterator[dict[Path, Path]]:
    """Temporary names for ``paths`` (``{path: temporary}``), published together on success.

    ``stems``: the files are separated stems (``publish``).

    Each destination is checked before the block runs, so a file in the way costs no
    work. On any error (Ctrl-C included) the temporary files are deleted and nothing is
    published.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        check_free(path, overwrite)
    temps: dict[Path, Path] = {}
    created: list[Path] = []
    try:
        for path in paths:
            make_folder(path.parent, created)
            remove_leftovers(path.parent)
            temps[path] = _temp_name(path.parent, suffix)
        yield dict(temps)
        publish({tmp: path for path, tmp in temps.items()}, overwrite, stems)
        created.clear()
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        remove_empty(created)


@contextlib.contextmanager
def staged_file(
    path: str | os.PathLike, suffix: str = ".tmp", overwrite: bool = False
) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to, published onto ``path`` on success.

    ``suffix`` serves writers that pick the format by extension (``.weights.h5``).
    """
    with staged_files([path], overwrite, suffix) as temps:
        yield next(iter(temps.values()))


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with staged_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)


def _files_under(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if not p.is_dir())


@contextlib.contextmanager
def staged_tree(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """An empty hidden folder to fill; on success each of its files is published into ``dest``.

    For outputs that other libraries write as a tree (a SavedModel). Files of ``dest`` that
    the tree does not hold stay as they are.
    """
    created: list[Path] = []
    dest = make_folder(dest, created)
    remove_leftovers(dest)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
    try:
        yield staging
        files = _files_under(staging)
        for rel in files:
            check_free(dest / rel, overwrite)
        for rel in files:
            make_folder((dest / rel).parent)
        by_folder = defaultdict(dict)
        for rel in files:
            by_folder[(dest / rel).parent][staging / rel] = dest / rel
        for moves in by_folder.values():
            publish(moves, overwrite)
        created.clear()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        remove_empty(created)


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed keras-sep runs left in ``folder``."""
    removed = []
    for path in Path(folder).glob(f"{glob.escape(TEMP_PREFIX)}*"):
        pid = path.name[len(TEMP_PREFIX) :].split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue  # not of our making, or a live run's work in progress
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# --- keras-sep's own cache folders --------------------------------------------------------


def _set_permissions(path: str | os.PathLike) -> None:
    """Give a finished temporary file or folder the permissions a plain write would.

    ``mkstemp`` / ``mkdtemp`` make them private to their owner; a model folder, a stem or
    an export must be readable by others (a server account) like any file the user writes.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def replace_dir(
    staging: str | os.PathLike,
    dest: str | os.PathLike,
    keep: Callable[[Path], bool] | None = None,
) -> bool:
    """Rename the finished folder ``staging`` onto ``dest``, replacing what is there.

    Only for keras-sep's own cache folders. An existing ``dest`` is moved into a hidden
    sibling first and deleted once ``staging`` is in place (put back if that rename fails),
    so readers see the old folder or the new one, never a mix. With ``keep``, an existing
    ``dest`` that ``keep(dest)`` accepts stays and ``staging`` is deleted: another process
    published the same content first. Returns whether ``staging`` was moved into place.
    """
    staging, dest = Path(staging), Path(dest)
    _set_permissions(staging)
    aside = None
    try:
        for attempt in range(3):  # writers racing for the same ``dest`` may each win a round
            try:
                os.replace(staging, dest)  # refused while ``dest`` is a non-empty folder
                return True
            except OSError:
                if not os.path.lexists(dest):
                    raise
            if keep is not None and keep(dest):
                shutil.rmtree(staging, ignore_errors=True)
                return False
            if aside is None:
                aside = Path(
                    tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=dest.parent)
                )
            with contextlib.suppress(FileNotFoundError):
                os.replace(dest, aside / str(attempt))
        raise OSError(f"could not replace {dest}: other processes keep writing it")
    except BaseException:
        moved = sorted(aside.iterdir()) if aside is not None else []
        if moved and not os.path.lexists(dest):
            with contextlib.suppress(OSError):
                os.replace(moved[0], dest)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(
    dest: str | os.PathLike, keep: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """An empty hidden sibling of the cache folder ``dest``, published with ``replace_dir``.

    On any error the sibling is deleted and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(dest.parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=dest.parent))
    try:
        yield staging
        replace_dir(staging, dest, keep)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True

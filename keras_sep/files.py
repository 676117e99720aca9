"""Publishing files and folders: write under a temporary name, then rename into place.

Every file keras-sep writes (model folders, stems, reports, scores, cached tracks,
exports) goes through here, so an interrupted or failed write never leaves a truncated
file or a half-filled folder where a reader would take it for a finished one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _set_permissions(path: str | os.PathLike) -> None:
    """Give a finished temporary file or folder the permissions a plain write would.

    ``mkstemp`` / ``mkdtemp`` make them private to their owner; a model folder, a stem or
    an export must be readable by others (a server account) like any file the user writes.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary name beside ``path`` to write to, renamed onto ``path`` if the block succeeds.

    On any error (Ctrl-C included) the temporary file is deleted and ``path`` is untouched.
    ``suffix`` serves writers that pick the format by extension (``.weights.h5``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _set_permissions(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with staged_file(path) as tmp:
        tmp.write_text(text)


def replace_dir(
    staging: str | os.PathLike,
    dest: str | os.PathLike,
    keep: Callable[[Path], bool] | None = None,
) -> bool:
    """Rename the finished folder ``staging`` onto ``dest``, replacing what is there.

    An existing ``dest`` is moved into a hidden sibling first and deleted once ``staging``
    is in place (put back if that rename fails), so readers see the old folder or the new
    one, never a mix. With ``keep``, an existing ``dest`` that ``keep(dest)`` accepts stays
    and ``staging`` is deleted: another process published the same content first. Returns
    whether ``staging`` was moved into place.
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
                aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
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
    """An empty hidden sibling of ``dest`` to fill, published with ``replace_dir`` on success.

    On any error the sibling is deleted and ``dest`` is untouched. Its name carries our
    process id, so the siblings that killed runs left behind are removed by the next one.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(dest)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{dest.name}.{PARTIAL}-{os.getpid()}-", dir=dest.parent)
    )
    try:
        yield staging
        replace_dir(staging, dest, keep)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


PARTIAL = "partial"


def remove_leftovers(dest: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of ``dest`` whose process has ended (a killed run's)."""
    dest = Path(dest)
    removed = []
    for path in dest.parent.glob(f".{glob.escape(dest.name)}.{PARTIAL}-*"):
        pid = path.name[len(dest.name) + len(PARTIAL) + 3 :].split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue  # another run is filling it right now
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True

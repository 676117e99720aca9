"""What a user can get wrong, and how every command reports it: one line, never a traceback.

Every entry point (``keras-sep`` and its subcommands, ``training/train.py``, ``python -m
export``) wraps its ``main`` in ``command``: an error the user can fix prints one line,
``error: ...``, and exits with ``USAGE`` (2: the command line or a config value cannot
work) or ``FAILURE`` (1: a file, dataset or step failed); anything else is a bug and
keeps its traceback, followed by one line on how to report it.
"""

from __future__ import annotations

import argparse
import errno
import functools
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

FAILURE = 1
USAGE = 2
INTERRUPTED = 130
REPORT = (
    "this is a bug in keras-sep; please report it with the command you ran and the "
    "traceback above (pip show keras-sep gives the version)"
)


class KerasSepError(Exception):
    """Base class of the errors a user can fix; the command exits with ``FAILURE``."""

    exit_code = FAILURE


class UsageError(KerasSepError):
    """An option or config value that cannot work; the command exits with ``USAGE``."""

    exit_code = USAGE


class ConfigError(UsageError, ValueError):
    """An unknown architecture, preset or field, or a value of the wrong type or range."""


class ModelFolderError(KerasSepError):
    """A path that is not a keras-sep model (folder or ``.keras`` file)."""


class AudioError(KerasSepError):
    """Audio that cannot be read or used: missing, not audio, empty, too short, NaN..."""


class DataError(KerasSepError):
    """A dataset root that is missing, empty or does not match the model."""


class MissingDependencyError(KerasSepError, ImportError):
    """A feature that needs a package which is not installed (e.g. TensorFlow)."""


class ExportError(KerasSepError):
    """An export that cannot be done: bad options, a converter that refuses, a parity failure."""


class AudioWarning(UserWarning):
    """Audio that can be used, but not all of it as the user may expect (a truncated file)."""


def require(module: str, feature: str, install: str = "keras-sep"):
    """Import ``module`` for ``feature``, or raise a one-line error saying what to install.

    ``install`` is the pip requirement that brings the module: an extra such as
    ``keras-sep[tfio]`` for the packages the base install leaves out.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{feature} needs the '{module}' package, which is not importable here ({e}); "
            f'install it (pip install "{install}" pulls it in) or use a feature that does not '
            f"need it"
        ) from None


# --- the boundary ------------------------------------------------------------------------

_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOTDIR: "part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file",
    errno.EEXIST: "it already exists; remove it or choose another path",
    errno.ENOSPC: "the disk is full; free some space or choose another location",
}


def describe(error: BaseException) -> tuple[int, str] | None:
    """``(exit code, one-line message)`` for an error the user can fix, else None (a bug)."""
    if isinstance(error, KerasSepError):
        message = str(error)
        code = error.exit_code
    elif isinstance(error, OSError) and error.strerror:
        # Files and folders the user named (or the disk) failed us; this is not a bug.
        paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
        where = f"{' -> '.join(paths)}: " if paths else ""
        hint = _OS_HINTS.get(error.errno or 0, "check the path and try again")
        message, code = f"{where}{error.strerror.lower()}; {hint}", FAILURE
    else:
        return None
    return code, " ".join(message.split()) or type(error).__name__


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a ``main(argv) -> int``: user errors become one ``error:`` line and an exit code.

    ``KeyboardInterrupt`` exits with 130. An unexpected exception keeps its traceback,
    followed by a line saying how to report it, and exits with ``FAILURE``.
    """

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return INTERRUPTED
        except Exception as e:
            known = describe(e)
            if known is None:
                traceback.print_exc()
                print(f"error: {REPORT}", file=sys.stderr)
                return FAILURE
            code, message = known
            print(f"error: {message}", file=sys.stderr)
            return code

    return run


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors raise ``UsageError``: one line, exit code 2."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


# --- checks every command runs before it works -------------------------------------------


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a folder the command can create or write into, else ``UsageError``.

    Run before any work, so that a bad output location never costs a separation or an
    epoch: it must not be an existing file, lie under a file, or be unwritable.
    """
    if not str(path).strip():
        raise UsageError(f"{option} is empty; give a folder (. for the current one)")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is an existing file; give a folder")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path} lies under {parent}, which is a file; give a folder")
    try:
        # os.access says yes to root even on a read-only file system; a real file does not.
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise UsageError(
            f"{option} {path}: cannot write in {parent} ({(e.strerror or str(e)).lower()}); "
            "choose a folder you can write to"
        ) from None
    return path


def positive(kind: type = int) -> Callable[[str], int | float]:
    """An argparse ``type`` accepting a finite number > 0 of ``kind`` (int or float)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse

"""Which songs a ``keras-sep separate`` call covers and where each one's stems go.

Inputs are files or folders. A file given by name is always tried; in a folder, files
with an audio extension are taken (subfolders with ``recursive``), others are skipped
with a notice of their kind. Never taken: hidden files, the output folder, and stems
keras-sep separated (its record marks them), so outputs never become inputs; a song
keras-sep wrote (the demo's ``mixture.wav``, toy songs) is taken like any other. Each real
folder is read once, so symlink loops and links back to a parent cannot make a scan
hang or separate a song twice.

Naming rule, fixed before any work so no two songs share an output folder:

- a file given by name goes to ``OUT/<name without extension>/``;
- a file found in a folder goes to ``OUT/<folder name>/<path inside it without
  extension>/``, so a library keeps its layout;
- a song keeps its extension in its folder's name (``OUT/song.wav/``) when the folder
  would be the same as another song's (compared ignoring case, for macOS and Windows
  disks: ``song.wav`` and ``song.mp3``), would hold another song's folder (``song.wav``
  beside a folder ``song/``), is a folder of the user's inside an input folder, or is a
  file; if that name is taken too (``lib/Bonus.wav`` beside ``lib/Bonus/``, with ``-o``
  at ``lib``'s parent, would put the stems on the song itself), ``.stems`` is added:
  ``OUT/lib/Bonus.wav.stems/``. The run says which songs moved, and why;
- if that still leaves two songs on one folder, the call is refused before any work.
"""

from __future__ import annotations

import errno
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from keras_sep.errors import UsageError
from keras_sep.files import (
    RECORD,
    OutputExistsError,
    check_free,
    separated_stem,
    written_by_keras_sep,
)

# Extensions taken from folders: what soundfile decodes, plus what ffmpeg adds.
AUDIO_EXTENSIONS = frozenset(
    {
        *(".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"),
        *(".aifc", ".au", ".caf", ".w64", ".rf64", ".m4a", ".aac", ".mp4", ".wma", ".webm"),
        *(".mka", ".alac"),
    }
)


@dataclass(frozen=True)
class Song:
    """An input file, its output folder relative to the output root, and why it was renamed."""

    path: Path
    folder: Path
    note: str = ""


# Kinds of skipped input, each counted on its own in the summary.
NOT_AUDIO = "not audio"
SUBFOLDER = "subfolder"
OURS = "keras-sep output"
UNREADABLE = "unreadable"


@dataclass
class Plan:
    """The songs of a call, the inputs skipped (path, kind, why) and those that failed."""

    songs: list[Song] = field(default_factory=list)
    skipped: list[tuple[Path, str, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def plan(inputs: list[str | os.PathLike], out: str | os.PathLike, recursive: bool) -> Plan:
    """List the songs of ``inputs`` with distinct output folders under ``out``, or refuse."""
    result = Plan()
    shown, out = Path(out), Path(out).resolve()
    # resolved file -> (its path as found, its output folder with the extension)
    found: dict[Path, tuple[Path, Path]] = {}
    roots: list[Path] = []
    visited: set[Path] = set()
    for given in map(Path, inputs):
        if given.is_dir():
            root = given.resolve()
            roots.append(root)
            for path in _walk(given, recursive, out, result, visited):
                found.setdefault(path.resolve(), (path, Path(root.name) / path.relative_to(given)))
        elif given.exists():
            found.setdefault(given.resolve(), (given, Path(given.name)))
        else:
            result.failed.append((given, f"{given}: no such file or folder; check the path"))
    folders, notes = _distinct(dict(found.values()), out, roots, shown)
    result.songs = [Song(path, folder, notes.get(path, "")) for path, folder in folders.items()]
    return result


def _walk(folder: Path, recursive: bool, out: Path, result: Plan, visited: set[Path]) -> list[Path]:
    """Audio files in ``folder`` (and its subfolders if ``recursive``), in name order."""
    try:
        real = folder.resolve(strict=True)
        entries = sorted(folder.iterdir())
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python 3.11)
        result.skipped.append((folder, UNREADABLE, _why(e)))
        return []
    if real in visited:
        return []  # reached again through a symlink: its songs are listed once
    visited.add(real)
    files = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            # strict: a symlink loop or a dangling link raises here on every Python
            # (3.13's non-strict resolve returns a looping path as it is).
            if entry.resolve(strict=True) == out:
                continue
            is_dir = entry.is_dir()
        except (OSError, RuntimeError) as e:
            result.skipped.append((entry, UNREADABLE, _why(e)))
            continue
        if is_dir:
            if recursive:
                files += _walk(entry, recursive, out, result, visited)
            else:
                result.skipped.append((entry, SUBFOLDER, "a folder; pass -r to include subfolders"))
        elif entry.suffix.lower() not in AUDIO_EXTENSIONS:
            result.skipped.append((entry, NOT_AUDIO, "not an audio file"))
        elif separated_stem(entry):
            result.skipped.append((entry, OURS, "a stem keras-sep wrote"))
        else:
            files.append(entry)
    return files


def _why(error: BaseException) -> str:
    if isinstance(error, RuntimeError) or getattr(error, "errno", None) == errno.ELOOP:
        return "a symlink loop"
    return f"cannot read it ({(getattr(error, 'strerror', None) or str(error)).lower()})"


def _distinct(
    found: dict[Path, Path], out: Path, roots: list[Path], shown: Path
) -> tuple[dict[Path, Path], dict[Path, str]]:
    """An output folder for each file, distinct from every other and from the user's.

    Each song starts on its name without extension; a clash moves it to the name with
    its extension, then to that name plus ``.stems``. Returns the folders and, for each
    song that moved, why (paths as the user gave ``shown``, the output root).
    """
    names = {
        path: [f.with_suffix(""), f, f.with_name(f.name + ".stems")] for path, f in found.items()
    }
    level = dict.fromkeys(found, 0)
    notes: dict[Path, str] = {}

    def folder(path: Path) -> Path:
        return names[path][level[path]]

    def move(path: Path, why: str) -> bool:
        if level[path] + 1 >= len(names[path]):
            return False
        level[path] += 1
        notes[path] = f"{notes[path]}; {why}" if path in notes else why
        return True

    for _ in range(2 * len(names[next(iter(found))]) if found else 0):
        moved = False
        keys = {path: str(folder(path)).casefold() for path in found}
        groups = defaultdict(list)
        for path, key in keys.items():
            groups[key].append(path)
        parents = {parent for key in keys.values() for parent in _parents(key)}
        for path, key in keys.items():
            target, said = out / folder(path), shown / folder(path)
            if len(groups[key]) > 1:
                moved |= move(path, "another song has the same name")
            elif key in parents:
                moved |= move(path, "another song's folder would lie inside its folder")
            elif _users_folder(target, roots):
                moved |= move(path, f"{said}/ is a folder of yours")
            elif os.path.lexists(target) and not target.is_dir():
                moved |= move(path, f"{said} is a file")
        if not moved:
            break
    folders = {path: folder(path) for path in found}
    clashes = defaultdict(list)
    for path, f in folders.items():
        clashes[str(f).casefold()].append(path)
    for paths in clashes.values():
        if len(paths) > 1:
            listed = " and ".join(str(p) for p in paths)
            raise UsageError(
                f"{listed} would all be written to the same folder {folders[paths[0]]}/; "
                "separate them in separate calls with different -o folders"
            )
    return folders, notes


def _parents(key: str) -> list[str]:
    parts = key.split(os.sep)
    return [os.sep.join(parts[:i]) for i in range(1, len(parts))]


def _users_folder(folder: Path, roots: list[Path]) -> bool:
    """An existing folder inside an input folder that keras-sep did not make for stems."""
    if not folder.is_dir() or (folder / RECORD).exists():
        return False
    real = folder.resolve()
    return any(real == root or root in real.parents for root in roots)


def check_song(
    folder: Path, stems: list[str], fmt: str, overwrite: bool, extra: str | None = None
) -> None:
    """Refuse, before the model loads, a song whose stem files (and ``extra``, a plot)
    cannot be written."""
    for parent in [*reversed(folder.parents), folder]:
        if os.path.lexists(parent) and not parent.is_dir():
            raise OutputExistsError(
                f"{parent} is a file where the stems' folder would go; move it or choose "
                "another -o folder"
            )
    for name in [f"{stem}.{fmt}" for stem in stems] + ([extra] if extra else []):
        check_free(folder / name, overwrite)


def complete(folder: Path, stems: list[str], fmt: str) -> bool:
    """Whether ``folder`` holds every stem as keras-sep wrote it (so whole, not truncated)."""
    return all(written_by_keras_sep(folder / f"{s}.{fmt}") for s in stems)

"""Which songs a ``keras-sep separate`` call covers and where each one's stems go.

Inputs are files or folders. A file given by name is always tried; in a folder, files
with an audio extension are taken (subfolders with ``recursive``), others are skipped
with a notice, hidden files and the output folder itself are ignored.

Naming rule, fixed before any work so no two songs share an output folder:

- a file given by name goes to ``OUT/<name without extension>/``;
- a file found in a folder goes to ``OUT/<folder name>/<path inside it without
  extension>/``, so a library keeps its layout;
- songs whose folders would still be the same (compared ignoring case, for macOS and
  Windows disks), such as ``song.wav`` and ``song.mp3``, keep their extension:
  ``OUT/song.wav/`` and ``OUT/song.mp3/``;
- if that still leaves two songs on one folder (two input folders of the same name
  holding the same file), the call is refused before any work.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from keras_sep.errors import UsageError

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
    """An input file and its output folder, relative to the output root."""

    path: Path
    folder: Path


@dataclass
class Plan:
    """The songs of a call, the files skipped (path, why) and the inputs that failed."""

    songs: list[Song] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def plan(inputs: list[str | os.PathLike], out: str | os.PathLike, recursive: bool) -> Plan:
    """List the songs of ``inputs`` with distinct output folders under ``out``, or refuse."""
    result = Plan()
    out = Path(out).resolve()
    # resolved file -> (its path as found, its output folder with the extension)
    found: dict[Path, tuple[Path, Path]] = {}
    for given in map(Path, inputs):
        if given.is_dir():
            name = Path(given.resolve().name)
            for path in _walk(given, recursive, out, result):
                found.setdefault(path.resolve(), (path, name / path.relative_to(given)))
        elif given.exists():
            found.setdefault(given.resolve(), (given, Path(given.name)))
        else:
            result.failed.append((given, "no such file or folder; check the path"))
    folders = _distinct(dict(found.values()))
    result.songs = [Song(path, folder) for path, folder in folders.items()]
    return result


def _walk(folder: Path, recursive: bool, out: Path, result: Plan) -> list[Path]:
    """Audio files in ``folder`` (and its subfolders if ``recursive``), in name order."""
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.resolve() == out:
            continue
        if entry.is_dir():
            if recursive:
                files += _walk(entry, recursive, out, result)
            else:
                result.skipped.append((entry, "a folder; pass -r to include subfolders"))
        elif entry.suffix.lower() in AUDIO_EXTENSIONS:
            files.append(entry)
        else:
            result.skipped.append((entry, "not an audio file"))
    return files


def _distinct(found: dict[Path, Path]) -> dict[Path, Path]:
    """Output folders (without extension) for each file; clashing ones keep the extension."""

    def clashes(folders: dict[Path, Path]) -> list[list[Path]]:
        groups = defaultdict(list)
        for path, folder in folders.items():
            groups[str(folder).casefold()].append(path)
        return [paths for paths in groups.values() if len(paths) > 1]

    folders = {path: folder.with_suffix("") for path, folder in found.items()}
    for paths in clashes(folders):
        for path in paths:
            folders[path] = found[path]
    for paths in clashes(folders):
        names = " and ".join(str(p) for p in paths)
        raise UsageError(
            f"{names} would all be written to the same folder {folders[paths[0]]}/; "
            "separate them in separate calls with different -o folders"
        )
    return folders


def complete(folder: Path, stems: list[str], fmt: str) -> bool:
    """Whether ``folder`` holds every stem; stems are published together, so it is whole."""
    return folder.is_dir() and all((folder / f"{s}.{fmt}").is_file() for s in stems)

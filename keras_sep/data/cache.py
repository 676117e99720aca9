"""On-disk cache of decoded, resampled stems, so training epochs never decode audio.

Each track becomes a folder of ``<source>.npy`` arrays (time, channels) float32 at the
model's rate plus ``meta.json``, built under a temporary name and renamed into place, so
processes caching at once (the workers of a multi-worker run) never read a half. The
folder is keyed by the track's origin (path), the sample rate and the track name;
``meta.json`` records the source file's size and mtime. A folder whose meta is missing
(half-written), whose stamp or sources differ (stale) or whose arrays do not load with
the recorded shape (corrupt) is rebuilt. Arrays are opened memory-mapped: a dataset
larger than RAM trains fine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_sep.audio import resample
from keras_sep.data.tracks import Track
from keras_sep.files import staged_dir

CACHE_VERSION = 1


# Said in README.md and in the --help of the commands that fill the cache (train, study).
CACHE_NOTE = (
    "Training decodes every song once into a cache of float32 stems at the model's rate: "
    "$KERAS_SEP_CACHE, else ~/.cache/keras_sep (train's --cache-dir overrides both). It "
    "takes about 400 MB for the built-in toy songs at 22.05 kHz and 5 GB per hour of songs "
    "at 44.1 kHz; delete the folder to free the space (rm -rf ~/.cache/keras_sep), the "
    "next run rebuilds what it needs."
)


def default_cache_dir() -> Path:
    """``$KERAS_SEP_CACHE``, else ``~/.cache/keras_sep``."""
    return Path(os.environ.get("KERAS_SEP_CACHE", Path.home() / ".cache" / "keras_sep"))


@dataclass
class CachedTrack:
    """A cached track: memory-mapped (time, channels) float32 stems at ``rate``."""

    name: str
    rate: int
    sources: dict[str, np.ndarray]

    @property
    def length(self) -> int:
        return next(iter(self.sources.values())).shape[0]


def track_dir(cache_dir: Path, track: Track, sample_rate: int) -> Path:
    key = hashlib.sha1(f"{track.origin.get('path', '')}|{track.name}".encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9]+", "_", track.name).strip("_")[:40]
    return Path(cache_dir) / f"{sample_rate}hz" / f"{slug}-{key}"


def _load_if_valid(folder: Path, expected: dict) -> CachedTrack | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in expected.items()):
        return None
    sources = {}
    for name in meta["sources"]:
        try:
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return None
        if array.shape != (meta["length"], meta["channels"]) or array.dtype != np.float32:
            return None
        sources[name] = array
    return CachedTrack(meta["name"], meta["rate"], sources)


def cache_track(track: Track, cache_dir: Path, sample_rate: int) -> tuple[CachedTrack, bool]:
    """The cached copy of ``track`` at ``sample_rate``, (re)building it if needed.

    Returns the cached track and whether it had to be built.
    """
    folder = track_dir(cache_dir, track, sample_rate)
    expected = {
        "version": CACHE_VERSION,
        "name": track.name,
        "rate": sample_rate,
        "origin": track.origin.get("path", ""),
        "stamp": track.origin.get("stamp", ""),
    }
    cached = _load_if_valid(folder, expected)
    if cached is not None:
        return cached, False
    # Processes caching at once (multi-worker training) each build their own copy; the
    # first to finish publishes it and the others keep that one.
    with staged_dir(folder, keep=lambda f: _load_if_valid(f, expected) is not None) as building:
        names = list(track.sources)
        length = channels = None
        for name in names:
            stem = resample(np.asarray(track.sources[name], np.float32), track.rate, sample_rate)
            length, channels = stem.shape
            np.save(building / f"{name}.npy", np.ascontiguousarray(stem, dtype=np.float32))
        meta = {**expected, "sources": names, "length": length, "channels": channels}
        (building / "meta.json").write_text(json.dumps(meta, indent=1))
    cached = _load_if_valid(folder, expected)
    assert cached is not None, f"cache folder {folder} unreadable right after writing"
    return cached, True


def cache_tracks(
    tracks: Iterable[Track], cache_dir: str | os.PathLike, sample_rate: int, progress: bool = False
) -> list[CachedTrack]:
    """Cache every track (decoding only those not cached yet) and return them memory-mapped."""
    from keras_sep.progress import END, Progress

    tracks, cached = list(tracks), []
    # One line on a pipe, not one per track: most runs find every track cached.
    label = f"caching at {sample_rate} Hz"
    with Progress(label, len(tracks), "track", quiet=not progress, lines=END) as bar:
        for track in tracks:
            bar.start(track.name)
            cached.append(cache_track(track, Path(cache_dir), sample_rate)[0])
            bar.finish()
    return cached


def folder_size(folder: str | os.PathLike) -> int:
    """Bytes held by the files under ``folder`` (0 if it does not exist)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())

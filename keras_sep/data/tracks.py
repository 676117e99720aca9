"""Multitrack songs as ``Track`` objects: MUSDB18 through ``musdb``, a plain folder of stems,
or the built-in toy songs.

Evaluation reads tracks at their own rate (MUSDB: 44.1 kHz); training goes through the
resampled on-disk cache in ``keras_sep.data.cache``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_sep.config import SOURCES
from keras_sep.errors import DataError, require

SUBSETS = ("train", "test")
SPLITS = ("train", "valid")
# A generated MUSDB18-layout tree lists its validation songs here (musdb's setup format).
SETUP_FILE = "setup.yaml"
# Stem files of a plain song folder: <source>.wav or <source>.flac.
STEM_EXTENSIONS = (".wav", ".flac")


class LazySources(Mapping):
    """Stems decoded on first access, so a cache hit never decodes the audio."""

    def __init__(self, load: Callable[[], dict[str, np.ndarray]]):
        self._load, self._data = load, None

    def _stems(self) -> dict[str, np.ndarray]:
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getitem__(self, name: str) -> np.ndarray:
        return self._stems()[name]

    def __iter__(self):
        return iter(self._stems())

    def __len__(self) -> int:
        return len(self._stems())


@dataclass
class Track:
    """One song: its stems (time, channels) float32 at ``rate``; the mixture is their sum."""

    name: str
    rate: int
    sources: Mapping[str, np.ndarray]
    # Where the audio came from, to key caches (path and file stamp), if anywhere.
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def mixture(self) -> np.ndarray:
        return np.sum(list(self.sources.values()), axis=0, dtype=np.float32)

    @property
    def length(self) -> int:
        return next(iter(self.sources.values())).shape[0]


def file_stamp(path: Path) -> str:
    """Size and modification time of a file: a cached copy of it is stale when they change."""
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def import_musdb():
    """Import musdb, which needs ffmpeg and ffprobe on PATH even for the wav layout."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise DataError(
            f"reading MUSDB18 needs {' and '.join(missing)} on PATH (the musdb package imports "
            "stempeg, which requires them): apt install ffmpeg, or brew install ffmpeg"
        )
    return require("musdb", "reading MUSDB18")


def detect_layout(root: str | os.PathLike) -> bool:
    """True for the MUSDB18-HQ wav layout, False for .stem.mp4 files; errors for neither."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"MUSDB root {root} does not exist; pass the folder holding train/ and test/"
        )
    subsets = [root / s for s in SUBSETS if (root / s).is_dir()]
    if not subsets:
        raise DataError(f"{root} has no train/ or test/ folder; is it a MUSDB18 root?")
    if any(p.suffix == ".mp4" for s in subsets for p in s.iterdir()):
        return False
    if any((p / "mixture.wav").is_file() for s in subsets for p in s.iterdir()):
        return True
    raise DataError(f"{root} holds neither .stem.mp4 files nor <song>/mixture.wav folders")


def check_musdb_tree(root: str | os.PathLike, sources: tuple[str, ...]) -> int:
    """Check every song of a MUSDB18-HQ (wav) root before any work; returns its channels.

    Each song folder must hold ``mixture.wav`` and a file per source, all readable, with
    one sample rate, one length and one channel count: a ``DataError`` names the first
    song that does not. A stems (.mp4) root is not checked here and gives 2 (stereo).
    """
    import soundfile as sf

    if not detect_layout(root):
        return 2
    channels = set()
    for subset in SUBSETS:
        folder = Path(root) / subset
        songs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        for song in songs:
            names = ("mixture", *sources)
            missing = [n for n in names if not (song / f"{n}.wav").is_file()]
            if missing:
                raise DataError(
                    f"{song} has no {', '.join(f'{n}.wav' for n in missing)}; every song of a "
                    f"MUSDB18-HQ root needs mixture.wav and {', '.join(sources)} (.wav)"
                )
            try:
                infos = {n: sf.info(str(song / f"{n}.wav")) for n in names}
            except (sf.LibsndfileError, RuntimeError) as e:
                raise DataError(f"{song}: a stem is not readable audio ({e})") from None
            for what, key in (("sample rates", "samplerate"), ("lengths", "frames")):
                values = {n: getattr(i, key) for n, i in infos.items()}
                if len(set(values.values())) > 1:
                    listed = ", ".join(f"{n} {v}" for n, v in values.items())
                    raise DataError(
                        f"{song}: its stems have different {what} ({listed}); every stem of "
                        "a song must match its mixture"
                    )
            channels |= {i.channels for i in infos.values()}
    if len(channels) > 1:
        raise DataError(f"{root} mixes songs of {sorted(channels)} channels; use one")
    return channels.pop() if channels else 2


def musdb_db(
    root: str | os.PathLike,
    subset: str,
    split: str | None = None,
    sources: tuple[str, ...] | None = None,
):
    """``musdb.DB`` of a root, with the root's own ``setup.yaml`` (validation list) if any.

    Every song of a wav root is checked first (``check_musdb_tree``), so a missing or
    mismatched stem fails here, before any work.
    """
    if subset not in SUBSETS:
        raise DataError(f"subset must be one of {list(SUBSETS)}, got {subset!r}")
    if split is not None and (subset != "train" or split not in SPLITS):
        raise DataError(f"split {split!r} needs subset 'train' and one of {list(SPLITS)}")
    is_wav = detect_layout(root)
    check_musdb_tree(root, tuple(sources or SOURCES))
    musdb = import_musdb()
    setup = SETUP_FILE if (Path(root) / SETUP_FILE).is_file() else None
    return musdb.DB(root=str(root), is_wav=is_wav, subsets=subset, split=split, setup_file=setup)


def musdb_tracks(
    root: str | os.PathLike,
    subset: str = "test",
    split: str | None = None,
    sources: tuple[str, ...] | None = None,
    limit: int | None = None,
) -> Iterator[Track]:
    """Tracks of a MUSDB18 (stems) or MUSDB18-HQ (wav) root, read through ``musdb``.

    ``split`` ('train' or 'valid') applies to ``subset='train'`` and uses musdb's
    standard validation list, or the root's own ``setup.yaml`` if it has one (generated
    trees do). Every check runs when this is called, before the first track is read;
    audio is then decoded one track at a time, at the dataset's rate.
    """
    db = musdb_db(root, subset, split, sources)
    if len(db) == 0:
        where = subset + (f" (split {split})" if split else "")
        raise DataError(f"no tracks in {root} for subset {where}")
    names = tuple(sources or db.setup["sources"].keys())
    unknown = sorted(set(names) - set(db.setup["sources"]))
    if unknown:
        raise DataError(f"{root} has no stems {unknown}; it has {sorted(db.setup['sources'])}")
    return (_musdb_track(track, names) for track in db.tracks[:limit])


def _musdb_track(track, names: tuple[str, ...]) -> Track:
    path = Path(track.path)
    stamp = file_stamp(path) if path.exists() else ""
    stems = LazySources(lambda t=track: _decode(t, names))
    return Track(track.name, int(track.rate), stems, {"path": str(path), "stamp": stamp})


def _decode(track, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: track.targets[name].audio.astype(np.float32) for name in names}


def toy_tracks(
    count: int, seed: int = 0, seconds: float = 20.0, sample_rate: int = 44100, missing: float = 0.0
) -> Iterator[Track]:
    """``count`` built-in synthetic songs, generated in memory (deterministic from ``seed``);
    ``missing``: the chance of a song without vocals, and of a section without bass."""
    from keras_sep.data import toy

    for i in range(count):
        song_seed = toy.song_seed(seed, i)
        stems = LazySources(lambda s=song_seed: toy.generate_song(s, seconds, sample_rate, missing))
        stamp = f"{seconds}s-{sample_rate}Hz" + (f"-missing{missing}" if missing else "")
        origin = {"path": f"toy:{song_seed}", "stamp": stamp}
        yield Track(f"{toy.song_name(i)} (seed {seed})", sample_rate, stems, origin)


def _stems_layout(sources: tuple[str, ...]) -> str:
    return f"a folder of song folders, each holding <source>.wav or .flac for {list(sources)}"


def check_stems_root(root: str | os.PathLike, sources: tuple[str, ...]) -> Path:
    """``root`` as a Path if it is a folder, else a one-line ``DataError``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"stems root {root} does not exist; pass {_stems_layout(sources)}")
    return root


def stems_tracks(
    root: str | os.PathLike, sources: tuple[str, ...], channels: int = 2
) -> list[Track]:
    """The songs of a plain folder, ``root/<song>/<source>.wav|flac``, one track per song.

    A ``mixture`` file, if a song has one, is not read: a track's mixture is the sum of
    its stems. Stems of one song must share a sample rate; shorter ones are padded with
    silence to the longest, mono ones duplicated to ``channels``. Nothing is decoded
    until a stem is accessed.
    """
    import soundfile as sf

    root = check_stems_root(root, sources)
    layout = _stems_layout(sources)
    songs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not songs:
        raise DataError(f"{root} holds no song folders; pass {layout}")
    tracks = []
    for song in songs:
        files = {}
        for source in sources:
            found = [f for ext in STEM_EXTENSIONS if (f := song / f"{source}{ext}").is_file()]
            if found:
                files[source] = found[0]
        missing = [s for s in sources if s not in files]
        if missing:
            hint = " (a MUSDB18 tree? use --musdb-root)" if song.name in SUBSETS else ""
            raise DataError(f"{song} has no stem file for {missing}{hint}; {root} must be {layout}")
        try:
            rates = {sf.info(str(f)).samplerate for f in files.values()}
        except (sf.LibsndfileError, RuntimeError) as e:
            raise DataError(f"{song}: a stem is not readable audio ({e})") from None
        if len(rates) > 1:
            raise DataError(f"{song}: stems have different sample rates {sorted(rates)}")
        stamp = ";".join(f"{f.name}:{file_stamp(f)}" for f in files.values())
        stems = LazySources(lambda f=files: _read_stems(f, channels))
        tracks.append(Track(song.name, rates.pop(), stems, {"path": str(song), "stamp": stamp}))
    return tracks


def _read_stems(files: dict[str, Path], channels: int) -> dict[str, np.ndarray]:
    from keras_sep.audio import fit_length, match_channels, read_audio

    stems = {s: match_channels(read_audio(f)[0], channels, str(f)) for s, f in files.items()}
    length = max(stem.shape[0] for stem in stems.values())
    return {s: fit_length(stem, length) for s, stem in stems.items()}


def hold_out(names: list[str], fraction: float) -> list[str]:
    """A deterministic ``fraction`` of ``names`` (at least one, never all) for validation.

    The choice depends only on the names (a hash of each), not on their order or a seed,
    so adding songs to a folder leaves most of the earlier choice in place.
    """
    if len(names) < 2:
        raise DataError(
            f"holding out validation songs needs at least 2 songs, got {len(names)}; "
            "add songs, or a validation source (--data toy, or a MUSDB root with a validation list)"
        )
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    ranked = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    return sorted(ranked[:count])

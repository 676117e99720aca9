"""Evaluation on MUSDB18 or the toy songs: separate, score with BSSEval v4, aggregate, report.

Protocol (SiSEC 2018 / MUSDB18): every track is separated whole at its own rate
(44.1 kHz for MUSDB18) with the one separation routine, and each system's estimates
are scored with BSSEval v4 on 1-second windows (``keras_sep.metrics``; museval itself
with ``scorer="museval"``) and with the plain whole-signal SDR. Per-track scores are
written as museval JSON as each track finishes, so a crashed run resumes and the files
merge with other systems' published results. Beside the models, every report shows the
reference rows ``mixture`` (the mixture as every estimate), ``silence`` (zeros) and
optionally ``oracle`` (ideal ratio mask).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import numpy as np

from keras_sep import metrics
from keras_sep.baselines import MIXTURE, ORACLE, REFERENCE_SYSTEMS, SILENCE, reference_estimates
from keras_sep.data.toy import HELD_OUT_SEED
from keras_sep.data.tracks import Track
from keras_sep.errors import DataError, UsageError
from keras_sep.files import atomic_write_text, check_free
from keras_sep.progress import Progress
from keras_sep.report import (
    EvaluationResults,
    TrackScores,
    aggregate,
    report_files,
    write_report,
)
from keras_sep.separate import DEFAULT_TTA, Predictor, separate_waveform

SCORES_DIR = "scores"
PROVENANCE_FILE = "run.json"
# Without MUSDB18: toy songs of the held-out seed, at MUSDB18's rate.
TOY_SECONDS, TOY_RATE, TOY_TRACKS = 20.0, 44100, 5


def score_track(
    system: str,
    track: str,
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    rate: int,
    scorer: str = "fast",
    path: str | os.PathLike | None = None,
    timings: Mapping[str, float] | None = None,
) -> TrackScores:
    """Score one system on one track, and write its JSON to ``path`` (atomically) if given."""
    start = time.perf_counter()
    frames, plain = metrics.score(references, estimates, rate, scorer)
    length = next(iter(references.values())).shape[0]
    timings = {**(timings or {}), "score": time.perf_counter() - start}
    degenerate = metrics.degenerate_sources(references)
    silent = metrics.silent_sources(references)
    result = TrackScores(system, track, frames, plain, length / rate, timings, degenerate, silent)
    data = result.to_json(scorer)
    if path is not None:
        atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
    # Read back what was written (5 decimals, infinities as NaN, as museval stores them),
    # so a resumed run aggregates exactly the same numbers.
    return TrackScores.from_json(data)


def _score_job(kwargs: dict[str, Any]) -> TrackScores:
    return score_track(**kwargs)


def _safe_name(name: str) -> str:
    return name.replace(os.sep, "_").replace("/", "_")


def scores_path(out_dir: str | os.PathLike, system: str, subset: str, track: str) -> Path:
    """Where a system's per-track JSON goes: museval's layout ``<system>/<subset>/<track>.json``.

    ``museval.MethodStore().add_eval_dir(out_dir / 'scores' / system)`` reads them.
    """
    return Path(out_dir) / SCORES_DIR / _safe_name(system) / subset / f"{_safe_name(track)}.json"


def _check_track(track: Track, models: Mapping[str, Predictor]) -> None:
    """Models must separate exactly the track's stems and take its channel count."""
    stems = sorted(track.sources)
    channels = next(iter(track.sources.values())).shape[1]
    for name, model in models.items():
        cfg = model.arch_config
        if sorted(cfg.sources) != stems:
            raise DataError(
                f"model {name!r} separates {list(cfg.sources)} but track {track.name!r} has "
                f"stems {stems}; evaluate a model trained on these stems"
            )
        if channels not in (1, cfg.channels):
            raise DataError(
                f"model {name!r} takes {cfg.channels} channel(s) but track {track.name!r} has "
                f"{channels}; evaluate a model with {channels} channel(s)"
            )


def _plain(value: Any) -> str:
    """A provenance entry as a person reads it: its description, else its value."""
    if isinstance(value, dict):
        return str(value.get("description") or ", ".join(f"{k} {v}" for k, v in value.items()))
    return str(value)


def _check_provenance(out_dir: Path, provenance: dict[str, Any], resume: bool) -> None:
    """Refuse to mix runs: resume only what the same data and scorer produced."""
    provenance_file = out_dir / PROVENANCE_FILE
    scores = out_dir / SCORES_DIR
    has_scores = scores.is_dir() and any(scores.rglob("*.json"))
    if not resume:
        if has_scores:
            raise UsageError(
                f"{out_dir} already holds scores of an earlier run; pass --resume to continue "
                "it (scored tracks are skipped) or write to another report folder (-o)"
            )
        return
    if not provenance_file.is_file():
        return
    try:
        old = json.loads(provenance_file.read_text())
    except (OSError, json.JSONDecodeError):
        return
    for key in ("data", "scorer", "tta"):
        # Reports from before test-time augmentation ran one pass.
        before, now = old.get(key, 1 if key == "tta" else None), provenance.get(key)
        if before != now:
            raise UsageError(
                f"cannot resume {out_dir}: it was scored with {key} {_plain(before)}, this "
                f"run uses {_plain(now)}; write to another report folder (-o)"
            )
    for name, info in provenance.get("models", {}).items():
        before = old.get("models", {}).get(name)
        if before is not None and before.get("stamp") != info.get("stamp"):
            raise UsageError(
                f"cannot resume {out_dir}: model {name!r} changed since it was scored "
                f"({info.get('folder')}); write to another report folder (-o)"
            )
        was, now = (m.get("precision", "float32") for m in (before or info, info))
        if was != now:
            raise DataError(
                f"cannot resume {out_dir}: model {name!r} was scored in {was}, this run uses "
                f"{now}; pass --precision {was} or write to another report folder (-o)"
            )


def _load_scores(path: Path) -> TrackScores | None:
    """A per-track JSON written by an earlier run, or None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return TrackScores.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _workers(jobs: int) -> Iterator[Any]:
    """A pool of ``jobs`` scoring processes (None for in-process scoring).

    Workers are spawned, not forked (forking a process that holds a Keras backend can
    deadlock), with one BLAS / OpenMP thread each, so ``jobs`` workers use about
    ``jobs`` cores. A worker that dies fails the run (BrokenProcessPool), never hangs it.
    """
    if jobs <= 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Workers start on demand and read these when they import numpy; the main process
    # has long initialised its own thread pools, so the change does not reach it.
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
        pool.shutdown(wait=True)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def evaluate(
    models: Mapping[str, Predictor],
    tracks: Iterable[Track],
    out_dir: str | os.PathLike,
    *,
    scorer: str = "fast",
    jobs: int = 1,
    resume: bool = False,
    include_oracle: bool = False,
    progress: bool = False,
    subset: str = "test",
    batch_size: int | None = None,
    tta: int = DEFAULT_TTA,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> EvaluationResults:
    """Separate and score every track with every model, then write the report.

    ``models`` maps a display name to a model (or any ``Predictor``). Per-track museval
    JSONs go to ``out_dir/scores/<system>/<subset>/`` as each track finishes; with
    ``resume`` those already there are loaded instead of recomputed. ``jobs`` > 1 scores
    in that many worker processes while the main process separates the next track.
    ``provenance`` (data and model descriptions) goes into ``run.json`` and the report;
    a resumed run must have the same ``data`` entry. ``tta``: test-time augmentation passes
    (``separate.overlap_add``). A report file in ``out_dir`` that keras-sep did not write is
    refused before any work unless ``overwrite``. Returns the scores and summary.
    """
    if scorer not in metrics.SCORERS:
        raise ValueError(f"scorer must be one of {list(metrics.SCORERS)}, got {scorer!r}")
    clash = sorted(set(models) & set(REFERENCE_SYSTEMS))
    if clash:
        raise DataError(f"model names {clash} are reserved for reference rows; rename them")
    out_dir = Path(out_dir)
    # As written to run.json: the resume check compares it with what is on disk.
    provenance = json.loads(
        json.dumps({"scorer": scorer, "tta": tta, **dict(provenance or {})}, default=str)
    )
    _check_provenance(out_dir, provenance, resume)
    for path in [out_dir / PROVENANCE_FILE, *report_files(out_dir).values()]:
        check_free(path, overwrite)
    text = json.dumps(provenance, indent=2) + "\n"
    atomic_write_text(out_dir / PROVENANCE_FILE, text, overwrite)
    systems = [*models, MIXTURE, SILENCE] + ([ORACLE] if include_oracle else [])

    scores: list[TrackScores] = []
    names: list[str] = []
    sources: list[str] | None = None
    pending: list[Any] = []
    # Tracks are taken one at a time (a generator may decode as it goes); the display
    # has a total when they know their number (select_tracks' do).
    total = len(tracks) if isinstance(tracks, Sized) else None
    bar = Progress("evaluate", total, "track", quiet=not progress)
    with bar, _workers(jobs) as pool:

        def collect(limit: int) -> None:
            while len(pending) > limit:
                scores.append(pending.pop(0).result())

        for track in tracks:
            if track.name in names:
                raise DataError(f"two tracks are called {track.name!r}; track names must differ")
            names.append(track.name)
            bar.start(track.name)
            paths = {system: scores_path(out_dir, system, subset, track.name) for system in systems}
            loaded = {system: _load_scores(path) for system, path in paths.items() if resume}
            todo = [system for system in systems if loaded.get(system) is None]
            scores += [loaded[system] for system in systems if system not in todo]
            # When every system was scored before, the audio is not even decoded.
            stems = list(track.sources) if todo else list(scores[-1].frames)
            if sources is None:
                sources = stems
            elif sorted(stems) != sorted(sources):
                raise DataError(
                    f"track {track.name!r} has stems {sorted(stems)}, "
                    f"the first track had {sorted(sources)}"
                )
            if todo:
                _check_track(track, models)
                references = dict(track.sources)
            for system in todo:
                start = time.perf_counter()
                if system in models:
                    estimates = separate_waveform(
                        models[system],
                        track.mixture,
                        track.rate,
                        name=track.name,
                        batch_size=batch_size,
                        tta=tta,
                    ).stems
                else:
                    estimates = reference_estimates(system, track)
                job = {
                    "system": system,
                    "track": track.name,
                    "references": references,
                    "estimates": estimates,
                    "rate": track.rate,
                    "scorer": scorer,
                    "path": str(paths[system]),
                    "timings": {"separate": time.perf_counter() - start},
                }
                if pool is None:
                    scores.append(_score_job(job))
                else:
                    pending.append(pool.submit(_score_job, job))
                    collect(2 * jobs)  # bounds the estimates held in memory
            bar.finish("scored before" if not todo else "")
        collect(0)
    if not names:
        raise DataError("no tracks to evaluate: the dataset selection is empty")
    assert sources is not None
    order = {name: i for i, name in enumerate(names)}
    scores.sort(key=lambda s: (systems.index(s.system), order[s.track]))
    results = EvaluationResults(
        out_dir=out_dir,
        systems=systems,
        sources=sources,
        tracks=names,
        scores=scores,
        summary=aggregate(scores, sources),
        scorer=scorer,
    )
    results.files = write_report(results, provenance, overwrite)
    return results


class Counted(Iterable):
    """Tracks made one at a time as they are taken, whose number is known before."""

    def __init__(self, make: Callable[[], Iterable[Track]], count: int) -> None:
        self.make, self.count = make, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Track]:
        return iter(self.make())


def select_tracks(
    musdb_root: str | os.PathLike | None = None,
    subset: str = "test",
    split: str | None = None,
    limit: int | None = None,
    seconds: float = TOY_SECONDS,
) -> tuple[Iterable[Track], dict[str, Any], str]:
    """The tracks to evaluate, how the provenance describes them, and their museval subset.

    MUSDB18 at ``musdb_root`` (``subset``, optionally musdb's ``split``), or without it
    the built-in toy songs of the held-out seed, ``seconds`` long. ``limit`` keeps the
    first tracks.
    """
    from keras_sep.data import tracks as tracks_mod

    if musdb_root:
        tracks_mod.detect_layout(musdb_root)  # a missing root fails before loading
        count = len(tracks_mod.musdb_db(musdb_root, subset, split).tracks[:limit])
        tracks = Counted(
            lambda: tracks_mod.musdb_tracks(musdb_root, subset, split, limit=limit), count
        )
        split_text = f", split {split}" if split else ""
        data = {
            "kind": "musdb",
            "root": str(Path(musdb_root).resolve()),
            "subset": subset,
            "split": split,
            "description": f"MUSDB18 at {musdb_root}, subset {subset}{split_text}",
        }
        return tracks, data, subset
    count = limit or TOY_TRACKS
    tracks = Counted(
        lambda: tracks_mod.toy_tracks(
            count, seed=HELD_OUT_SEED, seconds=seconds, sample_rate=TOY_RATE
        ),
        count,
    )
    data = {
        "kind": "toy",
        "seed": HELD_OUT_SEED,
        "seconds": seconds,
        "rate": TOY_RATE,
        "description": f"built-in toy songs (seed {HELD_OUT_SEED}, {seconds:g} s, {TOY_RATE} Hz)",
    }
    return tracks, data, "test"


def _stamp(folder: Path) -> str:
    from keras_sep.folder import CONFIG_FILE, WEIGHTS_FILE, is_keras_file

    files = [folder] if is_keras_file(folder) else [folder / CONFIG_FILE, folder / WEIGHTS_FILE]
    parts = []
    for file in files:
        st = file.stat()
        parts.append(f"{st.st_size}-{st.st_mtime_ns}")
    return ":".join(parts)


def load_models(
    folders: Mapping[str, Path], precision: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load model folders by display name; returns the models and their provenance.

    Every folder is checked before any is loaded, so a typo in the last one fails fast.
    A resumed run compares each model's ``stamp`` (file sizes and times) with its own.
    ``precision`` goes to ``keras_sep.load``.
    """
    import keras_sep
    from keras_sep.folder import read_info

    infos = {name: read_info(folder) for name, folder in folders.items()}
    models = {name: keras_sep.load(folder, precision=precision) for name, folder in folders.items()}
    provenance = {
        name: {
            "folder": str(Path(folder).resolve()),
            "stamp": _stamp(Path(folder)),
            "precision": models[name].precision,
            "description": f"{infos[name].get('architecture')} at {folder}, "
            f"{models[name].arch_config.sample_rate} Hz, {models[name].precision}",
        }
        for name, folder in folders.items()
    }
    return models, provenance

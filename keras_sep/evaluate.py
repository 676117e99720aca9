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

import argparse
import contextlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keras_sep import metrics
from keras_sep.audio import fit_length
from keras_sep.data.tracks import Track
from keras_sep.errors import DataError
from keras_sep.files import atomic_write_text
from keras_sep.separate import DEFAULT_BATCH_SIZE, Predictor, separate_waveform

# Reference rows: the mixture as every estimate (what doing nothing scores), silence
# (what estimating nothing scores: plain SDR exactly 0 dB) and the ideal ratio mask.
MIXTURE, SILENCE, ORACLE = "mixture", "silence", "oracle"
REFERENCE_SYSTEMS = (MIXTURE, SILENCE, ORACLE)
SCORES_DIR = "scores"
RUN_FILE = "run.json"
REPORT_MD, REPORT_JSON = "report.md", "report.json"
BOXPLOT_PNG, PER_TRACK_PNG = "sdr_boxplot.png", "sdr_per_track.png"
# --data toy: songs of seed 2, which training never uses, at MUSDB18's rate.
TOY_SEED, TOY_SECONDS, TOY_RATE, TOY_TRACKS = 2, 20.0, 44100, 5

# The paper's Table 1: MUSDB18 test, BSSEval SDR in dB, (mean, median) over all frames.
PAPER_TABLE1 = {
    "Wave-U-Net": {
        "vocals": (-3.292, 2.643),
        "drums": (1.435, 3.310),
        "bass": (-1.935, 1.942),
        "other": (0.986, 1.911),
    },
    "Dilated U-Net": {
        "vocals": (-3.787, 2.561),
        "drums": (2.163, 3.977),
        "bass": (-0.738, 3.080),
        "other": (0.953, 1.945),
    },
    "Dilated Dense U-Net": {
        "vocals": (-2.986, 2.830),
        "drums": (2.449, 3.934),
        "bass": (-1.023, 2.711),
        "other": (1.187, 2.039),
    },
}


# --- reference estimates ---------------------------------------------------------------


def ideal_ratio_mask(
    sources: Mapping[str, np.ndarray], n_fft: int = 4096, hop: int = 1024, power: float = 2.0
) -> dict[str, np.ndarray]:
    """Oracle estimates: the mixture's STFT masked by |S_j|^p / sum_k |S_k|^p, per channel.

    ``power=2`` is the ideal ratio mask of the sigsep oracle baselines (IRM2); it needs
    the true sources, so it is an upper bound for mask-like methods, not a method.
    """
    from scipy.signal import istft, stft

    names = list(sources)
    length, channels = next(iter(sources.values())).shape
    out = {s: np.zeros((length, channels), dtype=np.float32) for s in names}
    kw = {"nperseg": n_fft, "noverlap": n_fft - hop}
    for c in range(channels):  # one channel at a time bounds memory for long tracks
        specs = [stft(np.asarray(sources[s][:, c], dtype=np.float32), **kw)[2] for s in names]
        mix = np.sum(specs, axis=0)
        weights = [np.abs(x) ** power for x in specs]
        total = np.sum(weights, axis=0)
        total[total == 0] = 1.0  # empty bins: every mask is 0 there
        for s, w in zip(names, weights, strict=True):
            wave = istft(mix * (w / total), **kw)[1]
            out[s][:, c] = fit_length(wave, length)
    return out


def reference_estimates(system: str, track: Track) -> dict[str, np.ndarray]:
    """The estimates of a reference row for ``track``."""
    if system == MIXTURE:
        mixture = track.mixture
        return {s: mixture for s in track.sources}
    if system == SILENCE:
        return {s: np.zeros_like(x) for s, x in track.sources.items()}
    if system == ORACLE:
        return ideal_ratio_mask(track.sources)
    raise ValueError(f"unknown reference system {system!r}; known: {list(REFERENCE_SYSTEMS)}")


# --- per-track scores ------------------------------------------------------------------


@dataclass
class TrackScores:
    """One system's scores on one track: BSSEval frames and the plain SDR, per source."""

    system: str
    track: str
    frames: dict[str, dict[str, np.ndarray]]  # source -> metric -> (windows,)
    plain_sdr: dict[str, float]
    seconds: float = 0.0  # length of the track
    timings: dict[str, float] = field(default_factory=dict)  # separate / score seconds
    # Sources with linearly dependent channels: ISR / SIR / SAR ill-posed (metrics.py).
    degenerate: list[str] = field(default_factory=list)

    def to_json(self, scorer: str) -> dict[str, Any]:
        """museval's per-track JSON, with our extras under the key ``keras_sep``."""
        extra = {
            "system": self.system,
            "track": self.track,
            "scorer": scorer,
            "seconds": self.seconds,
            "plain_SDR": self.plain_sdr,
            "timings": self.timings,
            "degenerate_sources": self.degenerate,
        }
        return metrics.museval_json(self.frames, extra={"keras_sep": extra})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrackScores:
        extra = data["keras_sep"]
        return cls(
            system=extra["system"],
            track=extra["track"],
            frames=metrics.frames_from_json(data),
            plain_sdr={s: float(v) for s, v in extra["plain_SDR"].items()},
            seconds=float(extra.get("seconds", 0.0)),
            timings=dict(extra.get("timings", {})),
            degenerate=list(extra.get("degenerate_sources", [])),
        )


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
    result = TrackScores(system, track, frames, plain, length / rate, timings, degenerate)
    data = result.to_json(scorer)
    if path is not None:
        atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
    # Read back what was written (5 decimals, infinities as NaN, as museval stores them),
    # so a resumed run aggregates exactly the same numbers.
    return TrackScores.from_json(data)


def _score_job(kwargs: dict[str, Any]) -> TrackScores:
    return score_track(**kwargs)


# --- aggregation (pure functions) ------------------------------------------------------


def _defined(values: Iterable[np.ndarray]) -> np.ndarray:
    """All non-NaN values, pooled (museval stores undefined frames as NaN)."""
    pooled = np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in values] or [[]])
    return pooled[~np.isnan(pooled)]


def table1_stats(frames_per_track: Sequence[np.ndarray]) -> tuple[float, float]:
    """The paper's Table 1 statistics: (mean, median) of all tracks' frames pooled, NaN skipped.

    This is how Wave-U-Net's evaluation code aggregates museval JSONs: silent frames
    (NaN) are excluded, every remaining 1-second frame of every track counts once.
    Returns NaN for both when there is no defined frame.
    """
    values = _defined(frames_per_track)
    if values.size == 0:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.median(values))


def sisec_stat(frames_per_track: Sequence[np.ndarray]) -> float:
    """The SiSEC 2018 / leaderboard statistic: median over frames per track, then median
    over tracks (NaN frames and tracks without a defined frame skipped)."""
    medians = [np.median(v) for v in (_defined([f]) for f in frames_per_track) if v.size]
    return float(np.median(medians)) if medians else math.nan


def mean_median(values: Sequence[float]) -> tuple[float, float]:
    """(mean, median) of per-track values such as the plain SDR; NaN skipped."""
    v = _defined([np.asarray(values, dtype=np.float64)])
    if v.size == 0:
        return math.nan, math.nan
    return float(np.mean(v)), float(np.median(v))


def aggregate(
    scores: Sequence[TrackScores], sources: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """{system: {source: statistics}} over all given tracks.

    Statistics per source: for each BSSEval metric ``mean`` / ``median`` (Table 1 style,
    pooled frames), ``sisec`` (median of per-track medians) and ``frames`` (defined
    frames counted); ``plain_SDR`` ``mean`` / ``median`` over tracks.
    """
    by_system: dict[str, list[TrackScores]] = {}
    for s in scores:
        by_system.setdefault(s.system, []).append(s)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for system, items in by_system.items():
        out[system] = {}
        for source in sources:
            stats: dict[str, Any] = {}
            for metric in metrics.METRICS:
                frames = [t.frames[source][metric] for t in items]
                mean, median = table1_stats(frames)
                stats[metric] = {
                    "mean": mean,
                    "median": median,
                    "sisec": sisec_stat(frames),
                    "frames": int(_defined(frames).size),
                }
            mean, median = mean_median([t.plain_sdr[source] for t in items])
            stats["plain_SDR"] = {"mean": mean, "median": median}
            out[system][source] = stats
    return out


# --- evaluation --------------------------------------------------------------------------


@dataclass
class EvaluationResults:
    """What ``evaluate`` computed and wrote."""

    out_dir: Path
    systems: list[str]
    sources: list[str]
    tracks: list[str]
    scores: list[TrackScores]
    summary: dict[str, dict[str, dict[str, Any]]]
    scorer: str
    files: dict[str, Path] = field(default_factory=dict)

    def track_scores(self, system: str) -> list[TrackScores]:
        return [s for s in self.scores if s.system == system]


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


def _check_run(out_dir: Path, run: dict[str, Any], resume: bool) -> None:
    """Refuse to mix runs: resume only what the same data and scorer produced."""
    run_file = out_dir / RUN_FILE
    scores = out_dir / SCORES_DIR
    has_scores = scores.is_dir() and any(scores.rglob("*.json"))
    if not resume:
        if has_scores:
            raise DataError(
                f"{out_dir} already holds scores of an earlier run; pass --resume to continue "
                "it (scored tracks are skipped) or write to another report folder (-o)"
            )
        return
    if not run_file.is_file():
        return
    try:
        old = json.loads(run_file.read_text())
    except (OSError, json.JSONDecodeError):
        return
    for key in ("data", "scorer"):
        if old.get(key) != run.get(key):
            raise DataError(
                f"cannot resume {out_dir}: it was scored with {key} {old.get(key)!r}, this run "
                f"uses {run.get(key)!r}; write to another report folder (-o)"
            )
    for name, info in run.get("models", {}).items():
        before = old.get("models", {}).get(name)
        if before is not None and before.get("stamp") != info.get("stamp"):
            raise DataError(
                f"cannot resume {out_dir}: model {name!r} changed since it was scored "
                f"({info.get('folder')}); write to another report folder (-o)"
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
    batch_size: int = DEFAULT_BATCH_SIZE,
    provenance: Mapping[str, Any] | None = None,
) -> EvaluationResults:
    """Separate and score every track with every model, then write the report.

    ``models`` maps a display name to a model (or any ``Predictor``). Per-track museval
    JSONs go to ``out_dir/scores/<system>/<subset>/`` as each track finishes; with
    ``resume`` those already there are loaded instead of recomputed. ``jobs`` > 1 scores
    in that many worker processes while the main process separates the next track.
    ``provenance`` (data and model descriptions) goes into ``run.json`` and the report;
    a resumed run must have the same ``data`` entry. Returns the scores and summary.
    """
    if scorer not in metrics.SCORERS:
        raise ValueError(f"scorer must be one of {list(metrics.SCORERS)}, got {scorer!r}")
    clash = sorted(set(models) & set(REFERENCE_SYSTEMS))
    if clash:
        raise DataError(f"model names {clash} are reserved for reference rows; rename them")
    out_dir = Path(out_dir)
    run = {"scorer": scorer, **dict(provenance or {})}
    run = json.loads(json.dumps(run, default=str))
    _check_run(out_dir, run, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / RUN_FILE, json.dumps(run, indent=2) + "\n")
    systems = [*models, MIXTURE, SILENCE] + ([ORACLE] if include_oracle else [])

    scores: list[TrackScores] = []
    names: list[str] = []
    sources: list[str] | None = None
    pending: list[Any] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="track", desc="evaluate", dynamic_ncols=True)
    with _workers(jobs) as pool:

        def collect(limit: int) -> None:
            while len(pending) > limit:
                scores.append(pending.pop(0).result())

        for track in tracks:
            if track.name in names:
                raise DataError(f"two tracks are called {track.name!r}; track names must differ")
            names.append(track.name)
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
                paths[system].parent.mkdir(parents=True, exist_ok=True)
                if pool is None:
                    scores.append(_score_job(job))
                else:
                    pending.append(pool.submit(_score_job, job))
                    collect(2 * jobs)  # bounds the estimates held in memory
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(track.name[:40])
        collect(0)
    if bar is not None:
        bar.close()
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
    results.files = write_report(results, run)
    return results


# --- report ----------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "undefined"
    return f"{x:.3f}"


def _pair(stats: Mapping[str, float]) -> str:
    if math.isnan(stats["mean"]):
        return "undefined"
    return f"{_fmt(stats['mean'])} / {_fmt(stats['median'])}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _jsonable(x: Any) -> Any:
    """NaN and infinities become null: strict JSON for the report."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _per_track_medians(results: EvaluationResults) -> dict[str, dict[str, dict[str, float]]]:
    """{system: {track: {source: median frame SDR}}} (NaN where no frame is defined)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for s in results.scores:
        out.setdefault(s.system, {})[s.track] = {
            src: sisec_stat([s.frames[src]["SDR"]]) for src in results.sources
        }
    return out


def report_markdown(results: EvaluationResults, run: Mapping[str, Any]) -> str:
    """The Markdown report: Table-1-style SDR table, SiSEC and plain-SDR tables, plots."""
    systems, sources, summary = results.systems, results.sources, results.summary
    models = [s for s in systems if s not in REFERENCE_SYSTEMS]
    minutes = sum(s.seconds for s in results.scores if s.system == systems[0]) / 60
    data = run.get("data", {})
    lines = [
        "# keras-sep evaluation report",
        "",
        f"- Data: {data.get('description', 'tracks')}; {len(results.tracks)} tracks, "
        f"{minutes:.1f} minutes of audio.",
        f"- Systems: {', '.join(models) or 'none'}; reference rows: "
        f"{', '.join(s for s in systems if s in REFERENCE_SYSTEMS)}.",
    ]
    for name, info in run.get("models", {}).items():
        lines.append(f"- Model `{name}`: {info.get('description', info.get('folder', ''))}")
    lines += [
        f"- Scorer: `{results.scorer}` (BSSEval v4 images, 1-second windows and hops, "
        "512-tap distortion filters: the MUSDB18 / SiSEC 2018 protocol of museval).",
        "",
        "## SDR, paper Table 1 statistics (dB, mean / median)",
        "",
        "BSSEval v4 SDR of every 1-second frame of every track, pooled per source; frames "
        "where a reference or an estimate is silent are undefined and left out (as in the "
        'paper, which reports the mean "after removing silence regions").',
        "",
    ]
    paper = [f"paper: {name} †" for name in PAPER_TABLE1]
    rows = []
    for src in sources:
        row = [src] + [_pair(summary[s][src]["SDR"]) for s in systems]
        row += [
            "{:.3f} / {:.3f}".format(*PAPER_TABLE1[name][src]) if src in PAPER_TABLE1[name] else ""
            for name in PAPER_TABLE1
        ]
        rows.append(row)
    lines += _table(["source", *systems, *paper], rows)
    lines += [
        "",
        "† Published numbers from the paper's Table 1 (MUSDB18 test set, models trained on "
        "MUSDB18), copied for reference, not computed here: they compare with this run only "
        "when it scores models trained on MUSDB18 on its test set.",
        "",
        "`undefined`: no frame could be scored. museval leaves every window whose estimate "
        "is silent undefined (NaN), so BSSEval gives silence no value; its plain SDR below is "
        "exactly 0 dB.",
        "",
        "## SiSEC / leaderboard statistic (dB)",
        "",
        "Median over the frames of each track, then median over tracks (what museval's "
        "`EvalStore` and the SiSEC 2018 tables report).",
        "",
    ]
    header = ["system", "source", *metrics.METRICS]
    rows = [
        [s, src, *(_fmt(summary[s][src][m]["sisec"]) for m in metrics.METRICS)]
        for s in systems
        for src in sources
    ]
    lines += _table(header, rows)
    flagged: dict[str, set[str]] = {}
    for t in results.scores:
        for src in t.degenerate:
            flagged.setdefault(src, set()).add(t.track)
    if flagged:
        counts = ", ".join(f"{src} ({len(ts)} tracks)" for src, ts in sorted(flagged.items()))
        lines += [
            "",
            f"Caution: the reference channels of {counts} are linearly dependent (mono or "
            "panned by a gain). BSSEval's distortion filters are then ill-determined and "
            "ISR, SIR and SAR of those tracks are not meaningful (museval's own values move "
            "by up to 20 dB when noise 120 dB down is added); SDR is not affected.",
        ]
    lines += [
        "",
        "## Plain SDR (dB, mean / median over tracks)",
        "",
        "10 log10(|s|^2 / |s - estimate|^2) over each whole track (the MDX challenge metric). "
        "Silence scores exactly 0 dB and the mixture about -5 dB for a stem with a quarter "
        "of the energy: a model works when it clearly beats the silence row, beating the "
        "mixture row proves nothing.",
        "",
    ]
    rows = [[src] + [_pair(summary[s][src]["plain_SDR"]) for s in systems] for src in sources]
    lines += _table(["source", *systems], rows)
    lines += [
        "",
        "## Plots",
        "",
        f"![SDR distribution per source]({BOXPLOT_PNG})",
        "",
        "Box plots of the frame SDRs of all tracks (box: quartiles, line: median, "
        "triangle: mean; outliers not drawn).",
        "",
        f"![SDR per track]({PER_TRACK_PNG})",
        "",
        "Median frame SDR of each track.",
        "",
        "## Per track: median frame SDR (dB)",
        "",
    ]
    medians = _per_track_medians(results)
    rows = [
        [f"{i}. {track}", s, *(_fmt(medians[s][track][src]) for src in sources)]
        for i, track in enumerate(results.tracks, 1)
        for s in systems
        if s != SILENCE
    ]
    lines += _table(["track", "system", *sources], rows)
    lines += ["", "## Time", ""]
    rows = []
    for s in systems:
        items = results.track_scores(s)
        seconds = sum(t.seconds for t in items) or 1.0
        sep = sum(t.timings.get("separate", 0.0) for t in items)
        sco = sum(t.timings.get("score", 0.0) for t in items)
        rows.append([s, f"{60 * sep / seconds:.2f}", f"{60 * sco / seconds:.2f}"])
    lines += _table(["system", "estimate (s per audio minute)", "score (s per audio minute)"], rows)
    lines += [
        "",
        "Per-track museval JSONs are under `scores/<system>/`; `report.json` has every "
        "number of this report.",
        "",
    ]
    return "\n".join(lines)


def _plot_boxes(results: EvaluationResults, path: Path) -> None:
    from matplotlib.figure import Figure

    systems = [s for s in results.systems if s != SILENCE]
    fig = Figure(figsize=(3.0 * len(results.sources), 3.6), layout="constrained")
    axes = fig.subplots(1, len(results.sources), sharey=True, squeeze=False)[0]
    for ax, src in zip(axes, results.sources, strict=True):
        data = [_defined([t.frames[src]["SDR"] for t in results.track_scores(s)]) for s in systems]
        keep = [i for i, d in enumerate(data) if d.size]
        ax.boxplot(
            [data[i] for i in keep],
            tick_labels=[systems[i] for i in keep],
            showfliers=False,
            showmeans=True,
        )
        ax.set_title(src)
        ax.tick_params(axis="x", labelrotation=30)
        ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle="--", label="0 dB (silence)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("SDR per 1-s frame (dB)")
    axes[-1].legend(fontsize="small", loc="lower right")
    fig.savefig(path, dpi=90)


def _plot_tracks(results: EvaluationResults, path: Path) -> None:
    from matplotlib.figure import Figure

    medians = _per_track_medians(results)
    systems = [s for s in results.systems if s != SILENCE]
    x = np.arange(1, len(results.tracks) + 1)  # track numbers as in the per-track table
    fig = Figure(figsize=(3.0 * len(results.sources), 3.6), layout="constrained")
    axes = fig.subplots(1, len(results.sources), sharey=True, squeeze=False)[0]
    for ax, src in zip(axes, results.sources, strict=True):
        for s in systems:
            y = [medians[s][t][src] for t in results.tracks]
            ax.plot(x, y, marker="o", markersize=3, linewidth=0.8, label=s)
        ax.set_title(src)
        ax.set_xlabel("track number")
        ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle="--")
        ax.grid(alpha=0.3)
        if len(x) <= 12:
            ax.set_xticks(x)
    axes[0].set_ylabel("median frame SDR (dB)")
    axes[-1].legend(fontsize="small")
    fig.savefig(path, dpi=90)


def write_report(results: EvaluationResults, run: Mapping[str, Any]) -> dict[str, Path]:
    """Write report.md, report.json and the two PNGs into ``results.out_dir``."""
    out = results.out_dir
    files = {
        "markdown": out / REPORT_MD,
        "json": out / REPORT_JSON,
        "boxplot": out / BOXPLOT_PNG,
        "per_track": out / PER_TRACK_PNG,
    }
    _plot_boxes(results, files["boxplot"])
    _plot_tracks(results, files["per_track"])
    report = {
        "run": dict(run),
        "protocol": {
            "metric": "BSSEval v4 images (museval mode v4)",
            "window_seconds": metrics.WINDOW_SECONDS,
            "hop_seconds": metrics.HOP_SECONDS,
            "filters_len": metrics.FILTERS_LEN,
            "scorer": results.scorer,
            "table1": "mean and median of all frames of all tracks, undefined frames skipped",
            "sisec": "median over frames per track, then median over tracks",
            "plain_SDR": "10 log10(|s|^2 / |s - est|^2) per whole track, mean/median",
        },
        "systems": results.systems,
        "sources": results.sources,
        "tracks": results.tracks,
        "summary": results.summary,
        "per_track": {
            s: {
                t.track: {
                    "seconds": t.seconds,
                    "plain_SDR": t.plain_sdr,
                    "median": {
                        src: {m: sisec_stat([t.frames[src][m]]) for m in metrics.METRICS}
                        for src in results.sources
                    },
                    "timings": t.timings,
                    "degenerate_sources": t.degenerate,
                }
                for t in results.track_scores(s)
            }
            for s in results.systems
        },
        "paper_table1": {
            "note": "published, MUSDB18 test set; SDR dB (mean, median)",
            "values": PAPER_TABLE1,
        },
    }
    atomic_write_text(files["json"], json.dumps(_jsonable(report), indent=2) + "\n")
    atomic_write_text(files["markdown"], report_markdown(results, run))
    return files


# --- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``keras-sep evaluate`` arguments."""
    parser.add_argument(
        "--model",
        action="append",
        metavar="[NAME=]FOLDER",
        help="model folder to evaluate; repeat to compare several in one table "
        "(default: the bundled demo model). NAME sets its column name (default: the "
        "folder's name)",
    )
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--musdb-root", metavar="PATH", help="MUSDB18 or MUSDB18-HQ root folder")
    data.add_argument(
        "--data",
        choices=["toy"],
        help=f"built-in synthetic songs (seed {TOY_SEED}, unseen in training, "
        f"{TOY_SECONDS:.0f} s at {TOY_RATE} Hz)",
    )
    parser.add_argument("--subset", choices=["test", "train"], default="test")
    parser.add_argument(
        "--split", choices=["train", "valid"], help="with --subset train: musdb's split"
    )
    parser.add_argument(
        "--tracks",
        type=int,
        metavar="N",
        help=f"evaluate the first N tracks (default: all; {TOY_TRACKS} toy songs)",
    )
    parser.add_argument(
        "-o", "--output", default="report", metavar="REPORT_DIR", help="report folder"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="score N tracks in parallel processes"
    )
    parser.add_argument(
        "--scorer",
        choices=list(metrics.SCORERS),
        default="fast",
        help="BSSEval v4 implementation: 'fast' (keras_sep.metrics, same numbers as museval, "
        "about 20x faster) or 'museval' itself",
    )
    parser.add_argument(
        "--oracle", action="store_true", help="add the ideal-ratio-mask oracle row (upper bound)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue a report folder, skipping scored tracks"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="segments per model call"
    )


def _model_args(values: Sequence[str] | None) -> dict[str, Path]:
    """{name: folder} from ``[NAME=]FOLDER`` arguments."""
    import keras_sep

    out: dict[str, Path] = {}
    for value in values or [keras_sep.DEFAULT_MODEL]:
        name, sep, folder = value.partition("=")
        if not sep or "/" in name or os.sep in name:
            name, folder = Path(value).name or value, value
        if name in out:
            raise DataError(
                f"two models are called {name!r}; name them with NAME=FOLDER, "
                f"e.g. --model a={folder}"
            )
        out[name] = Path(folder)
    return out


def _stamp(folder: Path) -> str:
    from keras_sep.folder import CONFIG_FILE, WEIGHTS_FILE

    parts = []
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        st = (folder / name).stat()
        parts.append(f"{st.st_size}-{st.st_mtime_ns}")
    return ":".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run ``keras-sep evaluate``; errors the user can fix raise ``KerasSepError``."""
    from keras_sep.data import tracks as tracks_mod
    from keras_sep.folder import read_info

    if args.tracks is not None and args.tracks < 1:
        raise DataError(f"--tracks must be at least 1, got {args.tracks}")
    if args.jobs < 1:
        raise DataError(f"--jobs must be at least 1, got {args.jobs}")
    if args.musdb_root:
        tracks_mod.detect_layout(args.musdb_root)  # a missing root fails before loading
        tracks: Iterable[Track] = tracks_mod.musdb_tracks(
            args.musdb_root, args.subset, args.split, limit=args.tracks
        )
        split = f", split {args.split}" if args.split else ""
        data = {
            "kind": "musdb",
            "root": str(Path(args.musdb_root).resolve()),
            "subset": args.subset,
            "split": args.split,
            "description": f"MUSDB18 at {args.musdb_root}, subset {args.subset}{split}",
        }
        subset = args.subset
    elif args.data == "toy":
        count = args.tracks or TOY_TRACKS
        tracks = tracks_mod.toy_tracks(
            count, seed=TOY_SEED, seconds=TOY_SECONDS, sample_rate=TOY_RATE
        )
        data = {
            "kind": "toy",
            "seed": TOY_SEED,
            "seconds": TOY_SECONDS,
            "rate": TOY_RATE,
            "description": f"built-in toy songs (seed {TOY_SEED}, {TOY_SECONDS:.0f} s, "
            f"{TOY_RATE} Hz)",
        }
        subset = "test"
    else:
        raise DataError("choose the data: --musdb-root PATH (MUSDB18) or --data toy")

    import keras_sep

    folders = _model_args(args.model)
    infos = {name: read_info(folder) for name, folder in folders.items()}  # fails fast
    models = {name: keras_sep.load(folder) for name, folder in folders.items()}
    provenance = {
        "data": data,
        "models": {
            name: {
                "folder": str(folder.resolve()),
                "stamp": _stamp(folder),
                "description": f"{infos[name].get('architecture')} at {folder}, "
                f"{models[name].arch_config.sample_rate} Hz",
            }
            for name, folder in folders.items()
        },
    }
    results = evaluate(
        models,
        tracks,
        args.output,
        scorer=args.scorer,
        jobs=args.jobs,
        resume=args.resume,
        include_oracle=args.oracle,
        progress=True,
        subset=subset,
        batch_size=args.batch_size,
        provenance=provenance,
    )
    # The Table-1-style section on the terminal; everything else is in the report.
    text = results.files["markdown"].read_text()
    start, end = text.index("## SDR, paper"), text.index("## SiSEC")
    print(text[start:end].rstrip())
    print(f"\nreport: {results.files['markdown']}")
    return 0

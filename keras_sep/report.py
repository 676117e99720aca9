"""Evaluation results: per-track scores, their aggregation, and the written report.

``evaluate`` produces ``TrackScores`` (one system on one track) and this module turns
them into statistics (the paper's Table 1 and the SiSEC 2018 ones), ``report.md``,
``report.json`` and two plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keras_sep import metrics
from keras_sep.baselines import REFERENCE_SYSTEMS, SILENCE
from keras_sep.files import atomic_write_text, staged_file

REPORT_MD, REPORT_JSON = "report.md", "report.json"
BOXPLOT_PNG, PER_TRACK_PNG = "sdr_boxplot.png", "sdr_per_track.png"

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
    # Sources whose reference is silent on this track: absent from it, nothing to score.
    silent: list[str] = field(default_factory=list)

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
            "silent_sources": self.silent,
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
            silent=list(extra.get("silent_sources", [])),
        )


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
    frames counted); ``plain_SDR`` ``mean`` / ``median`` over the tracks where the source
    is not silent.
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
            # A silent reference has no SDR to speak of (any estimate scores far below 0).
            heard = [t.plain_sdr[source] for t in items if source not in t.silent]
            mean, median = mean_median(heard)
            stats["plain_SDR"] = {"mean": mean, "median": median}
            out[system][source] = stats
    return out


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

    def silent_tracks(self) -> dict[str, list[str]]:
        """{source: the tracks where its reference is silent}, for sources silent anywhere."""
        out: dict[str, list[str]] = {}
        for track in self.tracks:
            silent = {src for s in self.scores if s.track == track for src in s.silent}
            for src in self.sources:
                if src in silent:
                    out.setdefault(src, []).append(track)
        return out

    def absent(self) -> list[str]:
        """Sources silent in every track: there is nothing to score for them."""
        return [s for s, t in self.silent_tracks().items() if len(t) == len(self.tracks)]


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "undefined"
    return f"{x:.3f}"


ABSENT = "absent"


def _pair(stats: Mapping[str, float], absent: bool = False) -> str:
    if absent:
        return ABSENT
    if math.isnan(stats["mean"]):
        return "undefined"
    return f"{_fmt(stats['mean'])} / {_fmt(stats['median'])}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def jsonable(x: Any) -> Any:
    """NaN and infinities become null: strict JSON for the report."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
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


def table1_markdown(results: EvaluationResults) -> str:
    """The report's headline section: SDR as the paper's Table 1, beside its numbers."""
    systems, sources, summary = results.systems, results.sources, results.summary
    lines = [
        "## SDR, paper Table 1 statistics (dB, mean / median)",
        "",
        "BSSEval v4 SDR of every 1-second frame of every track, pooled per source; frames "
        "where a reference or an estimate is silent are undefined and left out (as in the "
        'paper, which reports the mean "after removing silence regions").',
        "",
    ]
    paper = [f"paper: {name} †" for name in PAPER_TABLE1]
    rows, absent = [], results.absent()
    for src in sources:
        row = [src] + [_pair(summary[s][src]["SDR"], src in absent) for s in systems]
        row += [
            "{:.3f} / {:.3f}".format(*PAPER_TABLE1[name][src]) if src in PAPER_TABLE1[name] else ""
            for name in PAPER_TABLE1
        ]
        rows.append(row)
    lines += markdown_table(["source", *systems, *paper], rows)
    lines += [
        "",
        "† Published numbers from the paper's Table 1 (MUSDB18 test set, models trained on "
        "MUSDB18), copied for reference, not computed here: they compare with this run only "
        "when it scores models trained on MUSDB18 on its test set.",
        "",
        "`undefined`: no frame could be scored. museval leaves every window whose estimate "
        "is silent undefined (NaN), so BSSEval gives silence no value; its plain SDR below is "
        "exactly 0 dB.",
    ]
    lines += _silence_note(results)
    return "\n".join(lines)


def _silence_note(results: EvaluationResults) -> list[str]:
    """Lines saying which stems are silent in which tracks, and what that does to the tables."""
    lines = []
    for src, tracks in results.silent_tracks().items():
        if len(tracks) == len(results.tracks):
            lines.append(
                f"`{ABSENT}`: {src} is silent in every track (an instrumental set, or stems "
                "without it): there is nothing to score, so it has no row values and no plot."
            )
        else:
            names = ", ".join(tracks[:5]) + (", ..." if len(tracks) > 5 else "")
            lines.append(
                f"{src} is silent in {len(tracks)} of {len(results.tracks)} tracks ({names}); "
                "its frames there are undefined and its plain SDR leaves those tracks out."
            )
    return ["", *lines] if lines else []


def report_markdown(results: EvaluationResults, provenance: Mapping[str, Any]) -> str:
    """The Markdown report: Table-1-style SDR table, SiSEC and plain-SDR tables, plots."""
    systems, sources, summary = results.systems, results.sources, results.summary
    models = [s for s in systems if s not in REFERENCE_SYSTEMS]
    minutes = sum(s.seconds for s in results.scores if s.system == systems[0]) / 60
    data = provenance.get("data", {})
    lines = [
        "# keras-sep evaluation report",
        "",
        f"- Data: {data.get('description', 'tracks')}; {len(results.tracks)} tracks, "
        f"{minutes:.1f} minutes of audio.",
        f"- Systems: {', '.join(models) or 'none'}; reference rows: "
        f"{', '.join(s for s in systems if s in REFERENCE_SYSTEMS)}.",
    ]
    for name, info in provenance.get("models", {}).items():
        lines.append(f"- Model `{name}`: {info.get('description', info.get('folder', ''))}")
    lines += [
        f"- Scorer: `{results.scorer}` (BSSEval v4 images, 1-second windows and hops, "
        "512-tap distortion filters: the MUSDB18 / SiSEC 2018 protocol of museval).",
        "",
        table1_markdown(results),
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
    lines += markdown_table(header, rows)
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
    absent = results.absent()
    rows = [
        [src] + [_pair(summary[s][src]["plain_SDR"], src in absent) for s in systems]
        for src in sources
    ]
    lines += markdown_table(["source", *systems], rows)
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
    lines += markdown_table(["track", "system", *sources], rows)
    lines += ["", "## Time", ""]
    rows = []
    for s in systems:
        items = results.track_scores(s)
        seconds = sum(t.seconds for t in items) or 1.0
        sep = sum(t.timings.get("separate", 0.0) for t in items)
        sco = sum(t.timings.get("score", 0.0) for t in items)
        rows.append([s, f"{60 * sep / seconds:.2f}", f"{60 * sco / seconds:.2f}"])
    lines += markdown_table(
        ["system", "estimate (s per audio minute)", "score (s per audio minute)"], rows
    )
    lines += [
        "",
        "Per-track museval JSONs are under `scores/<system>/`; `report.json` has every "
        "number of this report.",
        "",
    ]
    return "\n".join(lines)


PLOT_PT = 12  # font size of the report's plots, 1600 px wide


def _source_panels(results: EvaluationResults):
    """A figure 1600 px wide with one panel per source; (figure, {source: axes} to draw in).

    A source silent in every track gets a panel that says so and nothing to draw in; one
    silent in some tracks says in how many.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.8), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(results.sources), sharey=True, squeeze=False)[0]
    silent, total = results.silent_tracks(), len(results.tracks)
    drawn = {}
    for ax, src in zip(axes, results.sources, strict=True):
        count = len(silent.get(src, []))
        title = src + (f"\nsilent in {count} of {total} tracks" if 0 < count < total else "")
        ax.set_title(title, fontsize=PLOT_PT)
        ax.tick_params(labelsize=PLOT_PT - 1)
        if count == total:
            ax.text(
                0.5,
                0.5,
                f"{src}: {ABSENT}\n(silent in every track,\nnothing to score)",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=PLOT_PT,
            )
            ax.set_xticks([])
            continue
        ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle="--", label="0 dB (silence)")
        ax.grid(alpha=0.3)
        drawn[src] = ax
    return fig, axes, drawn


def _plot_boxes(results: EvaluationResults, path: Path, overwrite: bool = False) -> None:
    systems = [s for s in results.systems if s != SILENCE]
    fig, axes, drawn = _source_panels(results)
    for src, ax in drawn.items():
        data = [_defined([t.frames[src]["SDR"] for t in results.track_scores(s)]) for s in systems]
        keep = [i for i, d in enumerate(data) if d.size]
        if not keep:
            ax.text(
                0.5, 0.5, "no defined frame", transform=ax.transAxes, ha="center", fontsize=PLOT_PT
            )
            continue
        ax.boxplot(
            [data[i] for i in keep],
            tick_labels=[systems[i] for i in keep],
            showfliers=False,
            showmeans=True,
        )
        ax.tick_params(axis="x", labelrotation=30)
    axes[0].set_ylabel("SDR per 1-s frame (dB)", fontsize=PLOT_PT)
    _save(fig, path, drawn, overwrite)


def _plot_tracks(results: EvaluationResults, path: Path, overwrite: bool = False) -> None:
    medians = _per_track_medians(results)
    systems = [s for s in results.systems if s != SILENCE]
    x = np.arange(1, len(results.tracks) + 1)  # track numbers as in the per-track table
    fig, axes, drawn = _source_panels(results)
    for src, ax in drawn.items():
        for s in systems:
            y = [medians[s][t][src] for t in results.tracks]
            ax.plot(x, y, marker="o", markersize=4, linewidth=1.0, label=s)
        ax.set_xlabel("track number", fontsize=PLOT_PT)
        if len(x) <= 12:
            ax.set_xticks(x)
    axes[0].set_ylabel("median frame SDR (dB)", fontsize=PLOT_PT)
    _save(fig, path, drawn, overwrite)


def _save(fig, path: Path, drawn: dict, overwrite: bool = False) -> None:
    """The legend beside the panels (never over a curve), then the PNG, atomically."""
    if drawn:
        handles, labels = next(iter(drawn.values())).get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=PLOT_PT - 1)
    with staged_file(path, suffix=".png", overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")


def report_files(out: Path) -> dict[str, Path]:
    """The files ``write_report`` writes into ``out``."""
    return {
        "markdown": out / REPORT_MD,
        "json": out / REPORT_JSON,
        "boxplot": out / BOXPLOT_PNG,
        "per_track": out / PER_TRACK_PNG,
    }


def write_report(
    results: EvaluationResults, provenance: Mapping[str, Any], overwrite: bool = False
) -> dict[str, Path]:
    """Write report.md, report.json and the two PNGs into ``results.out_dir``."""
    files = report_files(results.out_dir)
    _plot_boxes(results, files["boxplot"], overwrite)
    _plot_tracks(results, files["per_track"], overwrite)
    report = {
        "run": dict(provenance),
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
                    "silent_sources": t.silent,
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
    atomic_write_text(files["json"], json.dumps(jsonable(report), indent=2) + "\n", overwrite)
    atomic_write_text(files["markdown"], report_markdown(results, provenance), overwrite)
    return files

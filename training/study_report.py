"""A study's report: Fig. 3-style bars, validation-loss curves, a Table 1-style table, verdicts.

The headline metric is Fig. 3's "Mean SDR": BSSEval v4 SDR, the mean of all 1-second
frames of all held-out songs with silent frames left out (Table 1's mean), averaged over
the sources. A claim "A beats B" is judged per seed (the same seed means the same
initialisation seed and the same training examples, so runs pair up):

- held: A scores higher than B with every seed;
- held partly: higher on the mean over seeds, but not with every seed;
- did not hold: not higher on the mean over seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_sep.baselines import MIXTURE, SILENCE
from keras_sep.evaluate import PROVENANCE_FILE
from keras_sep.files import atomic_write_text, staged_file
from keras_sep.report import EvaluationResults, jsonable, markdown_table
from keras_sep.training.study import EVAL_DIR, Claim, Study, read_timeline, run_folder, system_name

REPORT_MD, REPORT_JSON = "report.md", "report.json"
BARS_PNG, CURVES_PNG = "bars.png", "curves.png"
HELD, PARTLY, NOT_HELD, UNDECIDED = "held", "held partly", "did not hold", "undecided"
METRICS = {  # key -> (words, where it comes from in the evaluation summary)
    "sdr_mean": "mean SDR (BSSEval, frames)",
    "sdr_median": "median SDR (BSSEval, frames)",
    "plain_sdr": "plain SDR (whole tracks)",
}


def system_scores(summary: Mapping[str, Any], system: str, sources: Sequence[str]) -> dict:
    """One system's metrics averaged over the sources, and per source."""
    stats = summary[system]
    per_source = {
        src: {
            "sdr_mean": stats[src]["SDR"]["mean"],
            "sdr_median": stats[src]["SDR"]["median"],
            "plain_sdr": stats[src]["plain_SDR"]["mean"],
        }
        for src in sources
    }
    out = {m: float(np.mean([per_source[s][m] for s in sources])) for m in METRICS}
    return {**out, "sources": per_source}


def _side(scores: Mapping[str, Mapping[int, dict]], side: Sequence[str], seed: int, m: str):
    values = [scores[label][seed][m] for label in side]
    return values[0] if len(values) == 1 else values[0] - values[1]


def verdict(
    claim: Claim, scores: Mapping[str, Mapping[int, dict]], seeds: Sequence[int]
) -> dict[str, Any]:
    """Judge one claim on the headline metric; the other metrics say whether they agree."""
    gaps = {
        m: [_side(scores, claim.better, s, m) - _side(scores, claim.worse, s, m) for s in seeds]
        for m in METRICS
    }
    main = gaps["sdr_mean"]
    if any(math.isnan(g) for g in main):
        result = UNDECIDED
    elif all(g > 0 for g in main):
        result = HELD
    elif np.mean(main) > 0:
        result = PARTLY
    else:
        result = NOT_HELD
    return {
        "claim": claim.text,
        "better": list(claim.better),
        "worse": list(claim.worse),
        "verdict": result,
        "gap_db": {m: float(np.mean(g)) for m, g in gaps.items()},
        "gap_per_seed_db": {m: dict(zip(seeds, g, strict=True)) for m, g in gaps.items()},
    }


def _signed(x: float) -> str:
    return "undefined" if math.isnan(x) else f"{x:+.2f}"


def verdict_words(v: Mapping[str, Any]) -> str:
    """One sentence per claim: the verdict, the gap per seed, whether other metrics agree."""
    per_seed = ", ".join(
        f"seed {s}: {_signed(g)}" for s, g in v["gap_per_seed_db"]["sdr_mean"].items()
    )
    gap = _signed(v["gap_db"]["sdr_mean"])
    text = f"**{v['verdict']}**: {v['claim']}. Gap in mean SDR {gap} dB ({per_seed})."
    if v["verdict"] == UNDECIDED:
        return text + " Some SDR is undefined (a silent estimate), so the claim cannot be judged."
    sign = v["gap_db"]["sdr_mean"] > 0
    for m in ("sdr_median", "plain_sdr"):
        gap = v["gap_db"][m]
        agrees = "agrees" if (gap > 0) == sign else "disagrees"
        text += f" The {METRICS[m]} {agrees} ({_signed(gap)} dB)."
    gaps = list(v["gap_per_seed_db"]["sdr_mean"].values())
    if any(g > 0 for g in gaps) and not all(g > 0 for g in gaps):
        text += " The seeds disagree: at this scale the gap is within seed-to-seed noise."
    return text


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}


def _data_label(data: tuple[str, ...]) -> str:
    """Short name of the training data: toy songs, or the MUSDB18-layout roots' folder names."""
    if data == ("toy",):
        return "toy data"
    return "data: " + ", ".join(Path(root).name for root in data)


def _common(values: set) -> str:
    return ", ".join(str(v) for v in sorted(values, key=str))


def scale_info(
    study: Study, records: Mapping[str, Mapping[int, dict]], data: Mapping, tracks: int
) -> dict:
    """The scale of every number in the report, as facts and as words (long and short)."""
    cfgs = list(study.variants.values())
    steps = [r["steps"] for runs in records.values() for r in runs.values()]
    seconds = [r["seconds"] for runs in records.values() for r in runs.values()]
    first = cfgs[0]
    if first.data == ("toy",):
        train_data = (
            f"built-in toy songs ({first.toy_songs} training and {first.toy_valid_songs} "
            f"validation songs of {first.toy_seconds:g} s)"
        )
    else:
        # A MUSDB18-layout root may hold MUSDB18 or other songs (our FluidSynth corpus).
        train_data = "the train subset of the MUSDB18-layout root(s) " + ", ".join(first.data)
    facts = {
        "scale": study.scale,
        "preset": _common({c.preset for c in cfgs}),
        "segment_length": _common({c.model_config().segment_length for c in cfgs}),
        "sample_rate": study.sample_rate,
        "batch_size": _common({c.batch_size for c in cfgs}),
        "learning_rate": _common({c.learning_rate for c in cfgs}),
        "budget": study.budget.to_dict(),
        "steps": _spread(steps),
        "seconds": _spread(seconds),
        "seeds": list(study.seeds),
        "training_data": train_data,
        "evaluation_data": f"{tracks} held-out song(s): {data.get('description', '')}",
    }
    used = f"{min(steps):,}–{max(steps):,} steps" if study.budget.seconds else ""
    used = used or f"{_secs(min(seconds))}–{_secs(max(seconds))} training s"
    facts["short"] = (
        f"scale {study.scale}: preset {facts['preset']}, {study.budget.describe()} "
        f"({used}), {len(study.seeds)} seeds, {_data_label(first.data)}"
    )
    facts["long"] = (
        f"Scale **{study.scale}**: preset {facts['preset']}, {facts['segment_length']}-sample "
        f"segments at {study.sample_rate} Hz, batch {facts['batch_size']}, learning rate "
        f"{facts['learning_rate']}; budget {study.budget.describe()} (used {min(steps):,}–"
        f"{max(steps):,} steps and {_secs(min(seconds))}–{_secs(max(seconds))} training "
        f"seconds per run); seeds {', '.join(map(str, study.seeds))}; trained on {train_data}; "
        f"scored on {facts['evaluation_data']}."
    )
    return facts


def step_view(study: Study, curves: Mapping[str, Mapping[int, list]]) -> dict[str, Any]:
    """Validation loss at the most steps every run reached (a time budget's step view)."""
    finals = [rows[-1]["steps"] for runs in curves.values() for rows in runs.values() if rows]
    common = int(min(finals) // study.validate_every * study.validate_every) if finals else 0
    out: dict[str, Any] = {"steps": common, "val_loss": {}}
    if common == 0:
        return out
    for label, runs in curves.items():
        values = []
        for rows in runs.values():
            before = [r["val_loss"] for r in rows if r["steps"] <= common and "val_loss" in r]
            values.append(before[-1] if before else math.nan)
        out["val_loss"][label] = float(np.mean(values))
    return out


def _secs(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _fmt(x: float, digits: int = 2) -> str:
    return "undefined" if math.isnan(x) else f"{x:.{digits}f}"


def report_markdown(report: Mapping[str, Any], study: Study) -> str:
    scale, variants = report["scale"], report["variants"]
    tag = f"*{scale['short']}*"
    lines = [f"# Study {study.name}: {study.title}", "", scale["long"], ""]
    lines += [
        "Every variant trained with every seed on the same data for the same budget; each run's "
        "model at its best validation loss was scored on the same held-out songs "
        f"([evaluation report]({EVAL_DIR}/report.md)). Mean SDR: BSSEval v4 SDR, mean of all "
        "1-second frames with silent frames left out (Table 1's mean, Fig. 3's axis), averaged "
        "over the sources.",
        "",
        "## Verdict",
        "",
        tag,
        "",
    ]
    if report["claims"]:
        lines += [f"- {verdict_words(v)}" for v in report["claims"]]
        held = sum(v["verdict"] == HELD for v in report["claims"])
        lines += [
            "",
            f"At this scale {held} of {len(report['claims'])} of the paper's comparisons held "
            "with every seed. A verdict holds for this scale only: the paper trained far larger "
            "models for far longer on MUSDB18.",
        ]
    else:
        lines += ["The spec states no claims."]
    learned = [
        label
        for label, v in variants.items()
        if v["plain_sdr"]["mean"] > report["silence"]["plain_sdr"]
    ]
    lines += [
        "",
        f"Sanity: {len(learned)} of {len(variants)} variants beat the silence row on plain SDR "
        "(averaged over sources); a variant that does not has not learned to separate at this "
        "scale, and comparisons involving it say little.",
        "",
        "## Fig. 3-style: mean SDR per variant",
        "",
        tag,
        "",
        f"![mean SDR per variant]({BARS_PNG})",
        "",
        "Bars: mean over seeds; whiskers: lowest and highest seed; dots: the seeds.",
        "",
    ]
    header = ["variant", "mean SDR (dB)", "per seed", "median SDR", "plain SDR", "steps", "train s"]
    rows = []
    for label, v in variants.items():
        rows.append(
            [
                label,
                f"{_fmt(v['sdr_mean']['mean'])} ({_fmt(v['sdr_mean']['min'])} … "
                f"{_fmt(v['sdr_mean']['max'])})",
                ", ".join(_fmt(v["per_seed"][s]["sdr_mean"]) for s in study.seeds),
                _fmt(v["sdr_median"]["mean"]),
                _fmt(v["plain_sdr"]["mean"]),
                f"{v['steps']:,.0f}",
                _secs(v["seconds"]),
            ]
        )
    for name in (MIXTURE, SILENCE):
        ref = report[name]
        rows.append(
            [
                f"*{name}*",
                _fmt(ref["sdr_mean"]),
                "",
                _fmt(ref["sdr_median"]),
                _fmt(ref["plain_sdr"]),
                "",
                "",
            ]
        )
    lines += markdown_table(header, rows)
    lines += [
        "",
        "## Table 1-style: SDR per source (dB, mean / median)",
        "",
        tag,
        "",
        "BSSEval frames pooled over the held-out songs, mean / median, averaged over seeds. "
        "`undefined`: museval gives silent estimates no frame SDR; silence's plain SDR is 0 dB.",
        "",
    ]
    rows = []
    for label, v in variants.items():
        rows.append(
            [label]
            + [
                f"{_fmt(v['sources'][s]['sdr_mean'])} / {_fmt(v['sources'][s]['sdr_median'])}"
                for s in study.sources
            ]
        )
    for name in (MIXTURE, SILENCE):
        src = report[name]["sources"]
        rows.append(
            [f"*{name}*"]
            + [f"{_fmt(src[s]['sdr_mean'])} / {_fmt(src[s]['sdr_median'])}" for s in study.sources]
        )
    lines += markdown_table(["system", *study.sources], rows)
    lines += ["", "Plain SDR per source (dB, mean over songs and seeds):", ""]
    rows = [
        [label] + [_fmt(v["sources"][s]["plain_sdr"]) for s in study.sources]
        for label, v in variants.items()
    ]
    rows += [
        [f"*{name}*"] + [_fmt(report[name]["sources"][s]["plain_sdr"]) for s in study.sources]
        for name in (MIXTURE, SILENCE)
    ]
    lines += markdown_table(["system", *study.sources], rows)
    view = report["step_view"]
    lines += [
        "",
        "## Validation loss",
        "",
        tag,
        "",
        f"![validation loss against steps and seconds]({CURVES_PNG})",
        "",
        "MSE summed over the sources on the same fixed validation segments for every variant. "
        "Training seconds count the time inside training steps, without the first step of "
        "each process (graph tracing), validation and checkpoints.",
        "",
    ]
    header = ["variant", "best val_loss", "final val_loss", f"val_loss at step {view['steps']:,}"]
    rows = [
        [
            label,
            _fmt(v["best_val_loss"], 4),
            _fmt(v["final_val_loss"], 4),
            _fmt(view["val_loss"].get(label, math.nan), 4),
        ]
        for label, v in variants.items()
    ]
    lines += markdown_table(header, rows)
    if study.budget.seconds:
        lines += [
            "",
            f"Time view: every run trained {study.budget.seconds:g} s (the bars above). Step view: "
            f"the last column compares the variants at {view['steps']:,} steps, the most every "
            "run reached; the slower variants had done fewer steps by the end.",
        ]
    lines += ["", "## Runs", "", tag, ""]
    rows = [
        [
            label,
            str(seed),
            f"{r['steps']:,}",
            _secs(r["seconds"]),
            _secs(r["wall_seconds"]),
            f"`{r['folder']}`",
        ]
        for label, runs in report["runs"].items()
        for seed, r in runs.items()
    ]
    lines += markdown_table(["variant", "seed", "steps", "train s", "wall s", "run folder"], rows)
    lines += ["", "`report.json` holds every number of this report.", ""]
    return "\n".join(lines)


def plot_bars(report: Mapping[str, Any], study: Study, path: Path) -> None:
    """Fig. 3-style bars: one per variant (mean over seeds), seed spread as whiskers and dots."""
    from matplotlib.figure import Figure

    labels = list(report["variants"])
    x = np.arange(len(labels))
    fig = Figure(figsize=(4.5 + 2.2 * len(labels), 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("sdr_mean", "plain_sdr"), strict=True):
        v = [report["variants"][label][metric] for label in labels]
        means = np.array([s["mean"] for s in v])
        low, high = means - [s["min"] for s in v], [s["max"] for s in v] - means
        ax.bar(x, means, color="C0", alpha=0.7, yerr=[low, high], capsize=4)
        for i, label in enumerate(labels):
            seeds = [report["variants"][label]["per_seed"][s][metric] for s in study.seeds]
            ax.plot([i] * len(seeds), seeds, "o", color="k", markersize=3)
        for name, style in ((MIXTURE, "--"), (SILENCE, ":")):
            value = report[name][metric]
            if not math.isnan(value):
                ax.axhline(value, color="0.4", linestyle=style, linewidth=1, label=name)
        ax.axhline(0.0, color="0.8", linewidth=0.6)
        ax.set_xticks(x, labels, rotation=20)
        ax.set_ylabel(f"{METRICS[metric]} (dB)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{study.title}\n{report['scale']['short']}", fontsize="medium")
    with staged_file(path, suffix=".png", overwrite=True) as tmp:  # checked before the study
        fig.savefig(tmp, dpi=100)


def plot_curves(
    curves: Mapping[str, Mapping[int, list]], study: Study, short: str, path: Path
) -> None:
    """Validation loss of every run on one axis, against steps and against training seconds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    styles = ["-", "--", ":", "-."]
    for ax, x_key, x_label in zip(
        axes, ("steps", "seconds"), ("training steps", "training seconds"), strict=True
    ):
        for c, (label, runs) in enumerate(curves.items()):
            for k, (seed, rows) in enumerate(runs.items()):
                points = [(r[x_key], r["val_loss"]) for r in rows if "val_loss" in r]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(
                        xs,
                        ys,
                        styles[k % len(styles)],
                        color=f"C{c}",
                        marker="o",
                        markersize=2,
                        label=f"{label} (seed {seed})",
                    )
        ax.set_xlabel(x_label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (MSE summed over sources)")
    axes[1].legend(fontsize="x-small", ncol=2)
    fig.suptitle(f"{study.title}\n{short}", fontsize="medium")
    with staged_file(path, suffix=".png", overwrite=True) as tmp:  # checked before the study
        fig.savefig(tmp, dpi=100)


def write_report(
    study: Study,
    out: Path,
    records: Mapping[str, Mapping[int, dict]],
    results: EvaluationResults,
) -> dict[str, Path]:
    """Aggregate the runs and their scores; write report.md, report.json and the plots."""
    out = Path(out)
    sources = list(study.sources)
    scores = {
        label: {
            seed: system_scores(results.summary, system_name(label, seed), sources) for seed in runs
        }
        for label, runs in records.items()
    }
    curves = {
        label: {seed: read_timeline(run_folder(out, label, seed)) for seed in runs}
        for label, runs in records.items()
    }
    variants = {}
    for label, runs in scores.items():
        seeds = list(runs)
        entry = {m: _spread([runs[s][m] for s in seeds]) for m in METRICS}
        entry["per_seed"] = runs
        entry["sources"] = {
            src: {m: float(np.mean([runs[s]["sources"][src][m] for s in seeds])) for m in METRICS}
            for src in sources
        }
        entry["steps"] = float(np.mean([records[label][s]["steps"] for s in seeds]))
        entry["seconds"] = float(np.mean([records[label][s]["seconds"] for s in seeds]))
        entry["best_val_loss"] = float(
            np.mean([records[label][s]["best"].get("val_loss", math.nan) for s in seeds])
        )
        finals = [rows[-1].get("val_loss", math.nan) for rows in curves[label].values() if rows]
        entry["final_val_loss"] = float(np.mean(finals)) if finals else math.nan
        variants[label] = entry
    data = json.loads((out / EVAL_DIR / PROVENANCE_FILE).read_text()).get("data", {})
    scale = scale_info(study, records, data, len(results.tracks))
    report = {
        "study": study.plan(),
        "scale": scale,
        "headline_metric": METRICS["sdr_mean"] + ", averaged over sources",
        "variants": variants,
        MIXTURE: system_scores(results.summary, MIXTURE, sources),
        SILENCE: system_scores(results.summary, SILENCE, sources),
        "claims": [verdict(c, scores, study.seeds) for c in study.claims],
        "step_view": step_view(study, curves),
        "runs": {
            label: {
                seed: {**r, "folder": str(run_folder(out, label, seed).relative_to(out))}
                for seed, r in runs.items()
            }
            for label, runs in records.items()
        },
        "evaluation": str(Path(EVAL_DIR) / "report.md"),
    }
    files = report_files(out)
    plot_bars(report, study, files["bars"])
    plot_curves(curves, study, scale["short"], files["curves"])
    # Checked before the study trained (check_study_dir), so every one is ours or allowed.
    atomic_write_text(files["json"], json.dumps(jsonable(report), indent=2) + "\n", True)
    atomic_write_text(files["markdown"], report_markdown(report, study), True)
    return files


def report_files(out: Path) -> dict[str, Path]:
    """The files ``write_report`` writes into a study's folder."""
    return {
        "markdown": out / REPORT_MD,
        "json": out / REPORT_JSON,
        "bars": out / BARS_PNG,
        "curves": out / CURVES_PNG,
    }

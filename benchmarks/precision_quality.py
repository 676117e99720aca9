"""Quality and speed cost of bfloat16: per-stem SDR and real-time factor, float32 vs bfloat16.

    python benchmarks/precision_quality.py                          # bundled model, toy songs
    python benchmarks/precision_quality.py /work/data/corpus/test   # a MUSDB-layout test set
    python benchmarks/precision_quality.py ROOT [ROOT ...] --model runs/ddu --tracks 8

Each ROOT is a MUSDB18(-HQ) layout folder (holding test/) or its test/ (or train/) folder;
without ROOT, or with ``--data toy``, the built-in held-out toy songs are used. Every song is
separated whole by the model folder (default: the bundled model) in float32 and in bfloat16
(the two alternate which goes first, since the machine may be loaded by other work) and
scored with BSSEval v4 (``keras-sep evaluate``'s fast scorer). Prints, per stem, the Table-1
mean and median SDR of both and bf16 minus float32, how close the two estimates are (SNR of
the bf16 estimate against the float32 one), and the RTF of each, with the CPU named.
Target: bf16 loses at most 0.1 dB of mean SDR.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

PRECISIONS = ("float32", "bfloat16")


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|reference|^2 / |reference - estimate|^2): how close ``estimate`` is."""
    noise = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-20) / noise)


def musdb_root(path: Path) -> tuple[Path, str]:
    """(root, subset) for a MUSDB root (its test set) or for one of its subset folders."""
    from keras_sep.data.tracks import SUBSETS

    if path.name in SUBSETS and not any((path / s).is_dir() for s in SUBSETS):
        return path.parent, path.name
    return path, "test"


def tracks(roots: list[str], limit: int | None) -> Iterator:
    """The songs of every root (first ``limit`` of each), or the held-out toy songs."""
    from keras_sep.evaluate import select_tracks

    if not roots:
        yield from select_tracks(limit=limit)[0]
    for given in roots:
        root, subset = musdb_root(Path(given))
        yield from select_tracks(root, subset, limit=limit)[0]


def main(argv: list[str] | None = None) -> int:
    import keras_sep
    from keras_sep.evaluate import score_track
    from keras_sep.precision import describe_machine
    from keras_sep.report import aggregate
    from keras_sep.separate import DEFAULT_BATCH_SIZE, separate_waveform

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", metavar="ROOT", help="MUSDB-layout song folders")
    p.add_argument("--data", choices=["toy"], help="the built-in held-out toy songs")
    p.add_argument("--model", default=keras_sep.DEFAULT_MODEL, help="model folder")
    p.add_argument("--tracks", type=int, metavar="N", help="first N songs of each root")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = p.parse_args(argv)
    if args.data and args.roots:
        p.error("give song roots or --data toy, not both")

    print(describe_machine())
    models = {name: keras_sep.load(args.model, precision=name) for name in PRECISIONS}
    cfg = models["float32"].arch_config
    warm = np.zeros((args.batch_size, cfg.valid_length(cfg.segment_length), cfg.channels))
    for model in models.values():
        model.predict_on_batch(warm.astype(np.float32))  # trace / compile once, untimed
    print(f"model {args.model}: {models['float32'].architecture}, {cfg.sample_rate} Hz")

    scores, seconds = [], 0.0
    elapsed = dict.fromkeys(PRECISIONS, 0.0)
    closeness: dict[str, list[float]] = {s: [] for s in cfg.sources}
    for i, track in enumerate(tracks(args.roots, args.tracks)):
        references, mixture = dict(track.sources), track.mixture
        estimates = {}
        for name in PRECISIONS[:: 1 if i % 2 == 0 else -1]:  # alternate which runs first
            start = time.perf_counter()
            estimates[name] = separate_waveform(
                models[name], mixture, track.rate, batch_size=args.batch_size, tta=1
            ).stems
            elapsed[name] += time.perf_counter() - start
            scores.append(score_track(name, track.name, references, estimates[name], track.rate))
        for source in cfg.sources:
            closeness[source].append(
                snr_db(estimates["float32"][source], estimates["bfloat16"][source])
            )
        seconds += track.length / track.rate
        print(f"  {track.name}: {track.length / track.rate:.0f} s", file=sys.stderr, flush=True)
    if not scores:
        p.error("no songs found")

    summary = aggregate(scores, cfg.sources)
    count = len(scores) // len(PRECISIONS)
    print(f"\n{count} songs, {seconds:.0f} s of audio; SDR in dB (BSSEval v4, all frames)")
    print(
        "| stem | float32 mean | bf16 mean | diff | float32 median | bf16 median | diff | "
        "bf16 vs float32 SNR |"
    )
    print("|" + "---|" * 8)
    diffs = []
    for source in cfg.sources:
        a, b = (summary[name][source]["SDR"] for name in PRECISIONS)
        diffs.append(b["mean"] - a["mean"])
        print(
            f"| {source} | {a['mean']:.3f} | {b['mean']:.3f} | {b['mean'] - a['mean']:+.3f} | "
            f"{a['median']:.3f} | {b['median']:.3f} | {b['median'] - a['median']:+.3f} | "
            f"{np.mean(closeness[source]):.1f} |"
        )
    print(
        f"mean SDR change over stems (bf16 - float32): {np.mean(diffs):+.3f} dB "
        f"(target: no worse than -0.1 dB)"
    )
    rtf = {name: elapsed[name] / seconds for name in PRECISIONS}
    print(
        f"real-time factor of separate: float32 {rtf['float32']:.3f}, bfloat16 "
        f"{rtf['bfloat16']:.3f} ({rtf['float32'] / rtf['bfloat16']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

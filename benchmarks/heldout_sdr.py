"""Plain SDR of model folders on held-out songs, dry and produced, beside the trivial rows.

How the bundled model is chosen (docs/separation.md): every candidate separates the same
held-out MUSDB18-layout test songs, and this prints each stem's mean plain SDR (10 log10
|s|^2 / |s - est|^2, the MDX metric: silence scores 0 dB) next to the mixture and silence
rows, for each root. Plain SDR needs no BSSEval, so a table takes seconds per model.

A stem that is absent from a song (all zeros: a song without vocals) has no SDR; it is left
out of that stem's mean ("-" when no song has it), and for songs without vocals the script
prints the vocals output's level against the mixture (dB, mean over those songs, a song
whose output is silent counted at -100 dB; and the loudest song): how much a model leaks
into a stem that should be silent.

    python benchmarks/heldout_sdr.py data/corpus data/produced --model bundled --model runs/demo
    python benchmarks/heldout_sdr.py data/produced --model runs/a --model runs/b --json out.json
    python benchmarks/heldout_sdr.py data/produced --tta 1 --tta 4   # test-time augmentation
    python benchmarks/heldout_sdr.py data/novocals --gate model --gate off  # the level gate
    python benchmarks/heldout_sdr.py data/produced --mask model --mask off  # the soft mask
    python benchmarks/heldout_sdr.py data/produced --overlap 0.0625 --overlap 0.5

Make the produced songs with training/produce_songs.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

import keras_sep
from keras_sep.baselines import MIXTURE, SILENCE, reference_estimates
from keras_sep.data.tracks import musdb_tracks
from keras_sep.metrics import is_silent, plain_sdr, relative_level_db
from keras_sep.separate import DEFAULT_OVERLAP, DEFAULT_TTA, separate_waveform

# A stem output this far below the mixture counts as silent: an exactly silent output (the
# level gate's) would otherwise make the mean over songs -inf.
LEVEL_FLOOR_DB = -100.0


def table(tracks, systems: dict) -> tuple[dict, dict]:
    """Mean plain SDR per system and source over the songs that have the source, and the
    mean level (dB against the mixture) of each source's output over the songs without it;
    ``systems``: name -> track -> estimates."""
    rows, leaks = {}, {}
    for name, estimate in systems.items():
        scores = {s: [] for s in tracks[0].sources}
        levels = {s: [] for s in tracks[0].sources}
        for track in tracks:
            estimates = estimate(track)
            for s, reference in track.sources.items():
                if is_silent(reference):
                    level = relative_level_db(estimates[s], track.mixture)
                    levels[s].append(max(LEVEL_FLOOR_DB, level))
                else:
                    scores[s].append(plain_sdr(reference, estimates[s]))
        rows[name] = {s: float(np.mean(v)) if v else float("nan") for s, v in scores.items()}
        leaks[name] = {
            s: (float(np.mean(v)), len(v), float(np.max(v)), sum(x <= LEVEL_FLOOR_DB for x in v))
            for s, v in levels.items()
            if v
        }
    return rows, leaks


def _cell(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="MUSDB18-layout roots whose test/ songs are scored")
    p.add_argument(
        "--model", action="append", default=[], help="model folder, or 'bundled' (repeat)"
    )
    p.add_argument(
        "--tta",
        type=int,
        action="append",
        help=f"test-time augmentation passes, 1 to 4 (repeat: a row each; default {DEFAULT_TTA})",
    )
    p.add_argument(
        "--gate",
        choices=["model", "off"],
        action="append",
        help="the model folder's level gate (keras_sep/gate.py) or none (repeat: a row each; "
        "default: model, what separate does)",
    )
    p.add_argument(
        "--mask",
        choices=["model", "off"],
        action="append",
        help="the model folder's soft mask (keras_sep/mask.py) or none (repeat: a row each; "
        "default: model, what separate does)",
    )
    p.add_argument(
        "--overlap",
        type=float,
        action="append",
        help=f"segment overlap, 0 to 0.9 (repeat: a row each; default {DEFAULT_OVERLAP})",
    )
    p.add_argument("--json", help="also write the tables here")
    args = p.parse_args()
    passes = args.tta or [DEFAULT_TTA]
    gates = args.gate or ["model"]
    masks = args.mask or ["model"]
    overlaps = args.overlap or [DEFAULT_OVERLAP]
    models = {
        m: keras_sep.load(keras_sep.DEFAULT_MODEL if m == "bundled" else m)
        for m in args.model or ["bundled"]
    }
    results = {}
    for root in args.roots:
        tracks = list(musdb_tracks(root, "test"))
        systems = {r: (lambda t, r=r: reference_estimates(r, t)) for r in (MIXTURE, SILENCE)}
        for name, model in models.items():
            for tta, overlap, gate, mask in itertools.product(passes, overlaps, gates, masks):
                label = name + (f", tta {tta}" if len(passes) > 1 else "")
                label += f", overlap {overlap:g}" if len(overlaps) > 1 else ""
                label += f", mask {mask}" if len(masks) > 1 else ""
                label += f", gate {gate}" if len(gates) > 1 else ""
                kept = {k: None for k, v in (("gate", gate), ("mask", mask)) if v == "off"}
                systems[label] = lambda t, m=model, n=tta, o=overlap, k=kept: (
                    separate_waveform(m, t.mixture, t.rate, tta=n, overlap=o, **k).stems
                )
        started = time.perf_counter()
        rows, leaks = table(tracks, systems)
        results[root] = {"sdr": rows, "absent_stem_level_db": leaks}
        sources = list(tracks[0].sources)
        seconds = time.perf_counter() - started
        print(f"\n{root}: {len(tracks)} songs, mean plain SDR (dB), scored in {seconds:.0f} s")
        print("| system | " + " | ".join(sources) + " | mean |")
        print("|---" * (len(sources) + 2) + "|")
        for name, row in rows.items():
            cells = " | ".join(_cell(row[s]) for s in sources)
            print(f"| {name} | {cells} | {np.nanmean(list(row.values())):.2f} |")
        absent = sorted({s for leak in leaks.values() for s in leak}, key=sources.index)
        for s in absent:
            count = next(iter(leaks.values()))[s][1]
            print(f"\n{s} output on the {count} songs without {s}, dB against the mixture:")
            for name, leak in leaks.items():
                if name != SILENCE:
                    mean, count, loudest, silent = leak[s]
                    print(
                        f"| {name} | {mean:.1f} dB (loudest song {loudest:.1f} dB; "
                        f"{silent} of {count} silent) |"
                    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Forward time of one model under each conv formulation, on this backend and device.

Same weights in every build; the formulations run alternately, several rounds, and the
fastest round of each is reported (the least disturbed by other work on the machine).

    KERAS_BACKEND=jax python benchmarks/conv_formulations.py [--arch dilated_dense] [--batch 4]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

import keras_sep
from keras_sep.analysis import model_stats

SEGMENT = 16384


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="dilated_dense")
    p.add_argument("--preset", default="paper")
    p.add_argument(
        "--impls", nargs="+", default=["keras", "native", "phase", "fold", "spectral", "auto"]
    )
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    backend = keras.backend.backend()
    impls = [i for i in args.impls if not (i == "keras" and backend == "tensorflow")]
    models = {i: keras_sep.build(args.arch, preset=args.preset, conv_impl=i) for i in impls}
    weights = next(iter(models.values())).get_weights()
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (args.batch, SEGMENT, 2)).astype("float32")
    reference = None
    for impl, model in models.items():
        model.set_weights(weights)
        y = model.predict_on_batch(x)  # compile, and check they agree
        y = np.stack([np.asarray(y[s]) for s in model.sources])
        reference = y if reference is None else reference
        print(f"{impl}: max abs difference to {impls[0]}: {np.abs(y - reference).max():.1e}")
    best = {impl: float("inf") for impl in impls}
    for _ in range(args.rounds):
        for impl, model in models.items():
            started = time.perf_counter()
            model.predict_on_batch(x)
            best[impl] = min(best[impl], time.perf_counter() - started)
    gflop = model_stats(models[impls[0]]).gflop(SEGMENT)
    print(
        f"{args.arch} {args.preset}, backend {backend}, batch {args.batch} x {SEGMENT}, "
        f"best of {args.rounds} rounds"
    )
    print("| formulation | s / segment | GFLOP/s | real-time factor (22.05 kHz) |")
    print("|---|---|---|---|")
    for impl, seconds in best.items():
        per_segment = seconds / args.batch
        print(
            f"| {impl} | {per_segment:.2f} | {gflop / per_segment:.0f} | "
            f"{per_segment / (SEGMENT / 22050):.2f} |"
        )


if __name__ == "__main__":
    main()

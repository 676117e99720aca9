"""Is the input pipeline ever the bottleneck? Segments/s from the cache vs the training step.

Prints the tf.data and PyDataset throughput (batches of 16 x 16384-sample segments drawn
from the memory-mapped cache), dry (gains, channel swap, polarity, remix) and with the
production chain on (every effect of keras_sep.data.production at its default
probability), the training step time of the bundled model and of the tiny and paper
presets at batch 16 on this machine, and how many batches the produced pipeline fills per
step.

    python benchmarks/pipeline_throughput.py [--archs dilated_dense] [--paper-steps 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import keras
import numpy as np

import keras_sep
from keras_sep.data.cache import cache_tracks
from keras_sep.data.sampler import Augmentation, SegmentSampler
from keras_sep.data.tracks import toy_tracks
from keras_sep.training import pipeline

BATCH, SEGMENT = 16, 16384


def batches_per_second(batches, count: int) -> float:
    iterator = iter(batches)
    next(iterator)  # start-up (threads, tracing)
    started = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - started)


def step_seconds(arch: str, preset: str, steps: int) -> float:
    if preset == "bundled":
        model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    else:
        model = keras_sep.build(arch, preset=preset)
    model.compile(keras.optimizers.Adam(1e-4), loss="mse", jit_compile=False)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (BATCH, SEGMENT, 2)).astype("float32")
    y = {s: x / 4 for s in model.sources}
    model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - started) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["wave_u_net", "dilated", "dilated_dense"])
    p.add_argument("--songs", type=int, default=8)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--tiny-steps", type=int, default=3)
    p.add_argument("--paper-steps", type=int, default=1)
    args = p.parse_args()
    print(
        f"backend {keras.backend.backend()}, {os.cpu_count()} CPU threads, "
        f"batch {BATCH} x {SEGMENT} samples"
    )

    with tempfile.TemporaryDirectory() as cache:
        tracks = cache_tracks(
            toy_tracks(args.songs, seed=0, seconds=30, sample_rate=22050), cache, 22050
        )
        rates = {}
        for chain, names in (("dry", []), ("production", ["production"])):
            augmentation = Augmentation.from_names(["channel_swap", "polarity", "remix", *names])
            sampler = SegmentSampler(tracks, keras_sep.SOURCES, SEGMENT, augmentation=augmentation)
            py_batches = pipeline.TrainBatches(sampler, BATCH, 0, args.batches + 1)
            rates[f"tf.data, {chain}"] = batches_per_second(
                pipeline.tf_dataset(sampler, BATCH, 0, args.batches + 1), args.batches
            )
            # One thread here; model.fit runs PyDataset items in worker threads.
            rates[f"PyDataset (1 thread), {chain}"] = batches_per_second(
                (py_batches[i] for i in range(args.batches + 1)), args.batches
            )
    for name, rate in rates.items():
        print(
            f"{name}: {rate:.1f} batches/s = {rate * BATCH:.0f} segments/s "
            f"({rate * BATCH * SEGMENT / 22050:.0f} s of audio per second)"
        )
    produced = rates["tf.data, production"]
    print("| model | preset | step (batch 16) | produced tf.data batches per step |")
    print("|---|---|---|---|")
    runs = [("wave_u_net", "bundled", args.tiny_steps)]
    runs += [
        (a, p, n)
        for p, n in (("tiny", args.tiny_steps), ("paper", args.paper_steps))
        for a in args.archs
    ]
    for arch, preset, steps in runs:
        seconds = step_seconds(arch, preset, steps)
        print(f"| {arch} | {preset} | {seconds:.2f} s | {seconds * produced:.1f} |", flush=True)
    print(
        "The pipeline is never the bottleneck while 'batches per step' is above 1 "
        "(it fills that many batches in the time one step takes)."
    )


if __name__ == "__main__":
    main()

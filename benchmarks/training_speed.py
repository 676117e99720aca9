"""Training and separation speed per architecture, conv formulation and precision.

For each architecture (paper preset by default) and each conv formulation ("keras": the
plain keras.layers.Conv1D / Conv1DTranspose build; "auto": ours, which picks native or
space-to-batch per backend and device), each precision (float32, mixed_bfloat16):
parameters, GFLOP per 16384-sample stereo segment (forward), training step time at
batch 16, achieved TFLOP/s (training counted as 3x the forward FLOPs), and the
separation real-time factor of a 30 s stereo song through the shared routine.

Runs under the current KERAS_BACKEND (tensorflow, jax or torch), on CPU or GPU:

    KERAS_BACKEND=jax python benchmarks/training_speed.py                  # the GPU table
    KERAS_BACKEND=jax python benchmarks/training_speed.py --presets tiny --batch 2 --steps 2

TensorFlow's CPU kernels cannot run the plain build's dilated transposed convolutions, so
"keras" rows are skipped there.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

import keras_sep
from keras_sep.analysis import model_stats
from keras_sep.separate import separate

SEGMENT = 16384


def on_gpu() -> bool:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def sync(value) -> None:
    """Wait for asynchronous GPU work: pull one number back to the host."""
    keras.ops.convert_to_numpy(keras.ops.sum(value))


def step_seconds(model, batch: int, steps: int, jit) -> float:
    model.compile(keras.optimizers.Adam(1e-4), loss="mse", jit_compile=jit)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, SEGMENT, 2)).astype("float32")
    y = {s: x / 4 for s in model.sources}
    sync(model.train_on_batch(x, y))  # compile
    started = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    sync(loss)
    return (time.perf_counter() - started) / steps


def separation_rtf(model, seconds: float, batch: int) -> float:
    rate = model.sample_rate
    song = np.random.default_rng(1).uniform(-0.5, 0.5, (int(seconds * rate), 2))
    song = song.astype("float32")
    separate(model, song[: 2 * SEGMENT], batch_size=batch)  # compile
    started = time.perf_counter()
    separate(model, song, batch_size=batch)
    return (time.perf_counter() - started) / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["wave_u_net", "dilated", "dilated_dense"])
    p.add_argument("--presets", nargs="+", default=["paper"])
    p.add_argument("--impls", nargs="+", default=["keras", "auto"])
    p.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--song-seconds", type=float, default=30.0)
    p.add_argument("--separate-batch", type=int, default=16)
    p.add_argument("--jit", choices=["auto", "true", "false"], default="auto")
    args = p.parse_args()
    jit = {"true": True, "false": False}.get(args.jit, "auto")
    backend, gpu = keras.backend.backend(), on_gpu()
    print(
        f"backend {backend}, {'GPU' if gpu else 'CPU'}, batch {args.batch} x {SEGMENT}, "
        f"jit_compile={args.jit}"
    )
    print(
        "| model | preset | conv | precision | params | GFLOP/segment | step | TFLOP/s | "
        "separate RTF |"
    )
    print("|" + "---|" * 9)
    for preset in args.presets:
        for arch in args.archs:
            for impl in args.impls:
                if impl == "keras" and backend == "tensorflow" and arch != "wave_u_net" and not gpu:
                    continue  # TF's CPU kernel refuses dilated transposed convolutions
                for precision in args.precisions:
                    keras.mixed_precision.set_global_policy(precision)
                    keras.utils.set_random_seed(0)
                    model = keras_sep.build(arch, preset=preset, conv_impl=impl)
                    stats = model_stats(model)
                    gflop = stats.gflop(SEGMENT)
                    step = step_seconds(model, args.batch, args.steps, jit)
                    tflops = 3 * gflop * args.batch / step / 1e3
                    rtf = separation_rtf(model, args.song_seconds, args.separate_batch)
                    print(
                        f"| {arch} | {preset} | {impl} | {precision} | "
                        f"{stats.params / 1e6:.2f} M | {gflop:.1f} | {step:.3f} s | "
                        f"{tflops:.2f} | {rtf:.4f} |",
                        flush=True,
                    )
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()

"""Training and separation speed per architecture, conv formulation and precision.

For each architecture (paper preset by default) and each conv formulation ("keras": the
plain keras.layers.Conv1D / Conv1DTranspose build; "auto": ours, which picks native or
space-to-batch per backend and device), each precision (float32, mixed_bfloat16):
parameters, GFLOP per 16384-sample stereo segment (forward), the first training step
(compiling it, under JAX the XLA compile and autotuning), the training step time at
batch 16, achieved TFLOP/s (training counted as 3x the forward FLOPs), and the
separation real-time factor of a 30 s stereo song through the shared routine
(``--song-seconds 0`` skips it). A row is printed as soon as it is measured; a variant
that fails prints its error in the row and the others go on.

Runs under the current KERAS_BACKEND (tensorflow, jax or torch), on CPU or GPU:

    KERAS_BACKEND=jax python benchmarks/training_speed.py                  # the GPU table
    KERAS_BACKEND=jax python benchmarks/training_speed.py --presets tiny --batch 2 --steps 2

Under torch on CUDA, models are built with cuDNN autotuning and TF32 on unless
KERAS_SEP_TORCH_TUNING=0 (keras_sep/tuning.py); the header says which.

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
from keras_sep.layers import on_accelerator
from keras_sep.separate import separate
from keras_sep.tuning import apply_backend_tuning

SEGMENT = 16384


def sync(value) -> None:
    """Wait for asynchronous GPU work: pull one number back to the host."""
    keras.ops.convert_to_numpy(keras.ops.sum(value))


def step_seconds(model, batch: int, steps: int, jit) -> tuple[float, float]:
    """(seconds of the first step, which compiles; seconds per step after it)."""
    model.compile(keras.optimizers.Adam(1e-4), loss="mse", jit_compile=jit)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, SEGMENT, 2)).astype("float32")
    y = {s: x / 4 for s in model.sources}
    started = time.perf_counter()
    sync(model.train_on_batch(x, y))
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    sync(loss)
    return first, (time.perf_counter() - started) / steps


def separation_rtf(model, seconds: float, batch: int) -> float:
    rate = model.sample_rate
    song = np.random.default_rng(1).uniform(-0.5, 0.5, (int(seconds * rate), 2))
    song = song.astype("float32")
    separate(model, song[: 2 * SEGMENT], batch_size=batch, tta=1)  # compile
    started = time.perf_counter()
    separate(model, song, batch_size=batch, tta=1)  # one pass, as the RTFs in the docs
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
    backend, gpu = keras.backend.backend(), on_accelerator()
    tuning = ", torch tuning: " + (", ".join(apply_backend_tuning()) or "none")
    print(
        f"backend {backend}, {'GPU' if gpu else 'CPU'}, batch {args.batch} x {SEGMENT}, "
        f"jit_compile={args.jit}{tuning if backend == 'torch' else ''}"
    )
    print(
        "| model | preset | conv | precision | batch | params | GFLOP/segment | first step | "
        "step | TFLOP/s | separate RTF |"
    )
    print("|" + "---|" * 11, flush=True)
    for preset in args.presets:
        for arch in args.archs:
            for impl in args.impls:
                if impl == "keras" and backend == "tensorflow" and arch != "wave_u_net" and not gpu:
                    continue  # TF's CPU kernel refuses dilated transposed convolutions
                for precision in args.precisions:
                    row = f"| {arch} | {preset} | {impl} | {precision} | {args.batch} | "
                    try:
                        row += measure(arch, preset, impl, precision, args, jit)
                    except Exception as e:  # one failed variant must not hide the others
                        row += f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]} |"
                    print(row, flush=True)
    keras.mixed_precision.set_global_policy("float32")


def measure(arch: str, preset: str, impl: str, precision: str, args, jit) -> str:
    """The measured columns of one row."""
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    model = keras_sep.build(arch, preset=preset, conv_impl=impl)
    stats = model_stats(model)
    gflop = stats.gflop(SEGMENT)
    first, step = step_seconds(model, args.batch, args.steps, jit)
    tflops = 3 * gflop * args.batch / step / 1e3
    rtf = "-"
    if args.song_seconds > 0:
        rtf = f"{separation_rtf(model, args.song_seconds, args.separate_batch):.4f}"
    return (
        f"{stats.params / 1e6:.2f} M | {gflop:.1f} | {first:.1f} s | {step:.3f} s | "
        f"{tflops:.2f} | {rtf} |"
    )


if __name__ == "__main__":
    main()

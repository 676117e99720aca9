"""Separation speed: real-time factor of `separate` vs the bare model, and peak memory.

For each architecture, preset and precision (random weights; float32 and bfloat16, see
keras_sep/precision.py), on a 30-second 44.1 kHz stereo song:
  - bare: the model's forward pass on full batches of segments, per audio second;
  - separate: decode + resample + overlap-add + resample back + write stems, per audio second;
  - their ratio (target: at most 1.3), FLOPs per audio second and GFLOP/s achieved.
The precisions of one model are measured in ``--rounds`` alternating rounds and the best
round is kept, so load from other work on the machine hits both alike.
Then the peak resident memory of separating a 10-minute song (float32), in a fresh process.

    python benchmarks/separation_speed.py [--presets tiny paper] [--archs ...] [--seconds 30]
    python benchmarks/separation_speed.py --archs dilated_dense --presets paper --memory-minutes 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import soundfile as sf

import keras_sep
from keras_sep.analysis import model_stats
from keras_sep.audio import write_stems
from keras_sep.models import convert_precision
from keras_sep.precision import PRECISIONS, describe_machine
from keras_sep.separate import DEFAULT_BATCH_SIZE, separate_file

RATE = 44100


def bare_seconds_per_audio_second(model, repeats: int) -> float:
    cfg = model.arch_config
    segment = cfg.valid_length(cfg.segment_length)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (DEFAULT_BATCH_SIZE, segment, cfg.channels))
    x = x.astype("float32")
    model.predict_on_batch(x)  # trace / compile
    started = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(x)
    elapsed = (time.perf_counter() - started) / repeats
    return elapsed / (DEFAULT_BATCH_SIZE * segment / cfg.sample_rate)


def separate_seconds_per_audio_second(model, song: Path, seconds: float) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds of ``separate_file`` + writing, per audio second.

    CPU time divided by the cores is what the wall-clock time would be on an otherwise idle
    machine if the work spread perfectly over all cores: a floor that load does not move.
    """
    # No warm-up: bare_seconds_per_audio_second has just run the same batch shape.
    with tempfile.TemporaryDirectory() as out:
        started, cpu = time.perf_counter(), time.process_time()
        result = separate_file(model, song, tta=1)  # one pass: the pipeline's own cost
        write_stems(Path(out) / "song", result.stems, result.sample_rate)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        return wall / seconds, cpu / seconds


MEMORY = textwrap.dedent(
    """
    import resource, sys, numpy as np, keras_sep
    from keras_sep.separate import separate_waveform
    model = keras_sep.build(sys.argv[1], preset=sys.argv[2])
    seconds = float(sys.argv[3])
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (int(seconds * 44100), 2))
    audio = audio.astype("float32")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    separate_waveform(model, audio, 44100, tta=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{before:.0f} {peak:.0f}")
    """
)


def peak_memory_mb(arch: str, preset: str, seconds: float) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY, arch, preset, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    before, peak = map(float, done.stdout.split()[-2:])
    return before, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["wave_u_net", "dilated", "dilated_dense"])
    p.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS[1:], default=PRECISIONS[1:])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per model")
    p.add_argument("--memory-minutes", type=float, default=10.0, help="0: skip")
    args = p.parse_args()

    print(describe_machine())
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.wav"
        rng = np.random.default_rng(1)
        sf.write(song, rng.uniform(-0.5, 0.5, (int(args.seconds * RATE), 2)), RATE)
        header = (
            "| model | preset | precision | params | GFLOP per audio s | bare RTF | "
            "separate RTF | ratio | GFLOP/s | separate CPU s / audio s / cores |"
        )
        print(header)
        print("|" + "---|" * 10)
        for preset in args.presets:
            for arch in args.archs:
                model = keras_sep.build(arch, preset=preset)
                stats = model_stats(model)
                gflop_per_second = stats.flops_per_sample * model.sample_rate / 1e9
                repeats = args.repeats if preset == "tiny" or arch == "wave_u_net" else 1
                variants = {name: convert_precision(model, name) for name in args.precisions}
                best = {name: np.full(3, np.inf) for name in variants}
                for r in range(args.rounds):
                    for name in list(variants)[:: 1 if r % 2 == 0 else -1]:
                        bare = bare_seconds_per_audio_second(variants[name], repeats)
                        full = separate_seconds_per_audio_second(variants[name], song, args.seconds)
                        best[name] = np.minimum(best[name], [bare, *full])
                for name, (bare, full, cpu) in best.items():
                    print(
                        f"| {arch} | {preset} | {name} | {stats.params / 1e6:.2f} M | "
                        f"{gflop_per_second:.1f} | {bare:.4f} | {full:.4f} | {full / bare:.2f} | "
                        f"{gflop_per_second / bare:.0f} | {cpu / os.cpu_count():.4f} |",
                        flush=True,
                    )
    minutes = args.memory_minutes
    output_mb = 4 * minutes * 60 * RATE * 2 * 4 / 2**20
    for arch in args.archs if minutes > 0 else []:
        before, peak = peak_memory_mb(arch, "tiny", minutes * 60)
        print(
            f"peak memory, {minutes:.0f}-minute song, {arch} tiny: {peak:.0f} MiB "
            f"(process with model and audio loaded: {before:.0f} MiB; the four float32 stems "
            f"alone take {output_mb:.0f} MiB)",
            flush=True,
        )


if __name__ == "__main__":
    main()

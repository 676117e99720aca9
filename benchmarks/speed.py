"""Speed from the first second to the last, beside Open-Unmix and HT-Demucs when installed.

One command prints four tables (docs/performance.md, "Speed beside the peers"):

1. the machine: CPU, its flags, and a plain float32 sgemm rate (NumPy's BLAS);
2. start-up, in fresh processes: ``import keras_sep`` and loading the bundled model, as
   ``separate`` does where its ONNX copy runs (ONNX Runtime: CPUs without bfloat16 units,
   and short jobs) and where the Keras model does (long jobs on bfloat16 CPUs or GPUs,
   ``keras_sep.warm_start``), beside ``import torch, openunmix``, and where the Keras
   start-up goes;
3. the model call: real-time factor (seconds per audio second) on ``--seconds`` of 44.1
   kHz stereo, random weights for the peers and the paper models, alternating rounds,
   medians, and each as a multiple of Open-Unmix (umxhq);
4. the whole ``keras-sep separate`` of a ``--short-seconds`` song and of a
   ``--song-minutes`` song in a fresh process: wall time and cores kept busy, this tree
   beside the git revision ``--ref`` when given.

    python benchmarks/speed.py [--ref REV] [--paper] [--isa avx2] [--seconds 20] [--rounds 3]

Peers: ``pip install openunmix demucs einops julius`` (with ``--no-deps`` beside a torch
without torchaudio: Open-Unmix imports torchaudio only to resample, so the benchmark then
stands in an empty module for it and says so). ``--paper`` adds the paper's Dilated Dense
U-Net (float32, about 3 s per audio second on 2 AVX2 cores). Threads: every core for each
framework (TensorFlow's and torch's defaults).

``--isa avx2`` stands in for a CPU without AVX-512 or bfloat16 on one that has them: the
benchmark reruns itself with every library held to AVX2 (``ISA_LIMITS``: oneDNN for
TensorFlow and torch, torch's own kernels, MKL and OpenBLAS for the sgemm), so the
model call and its ratio to Open-Unmix are measured as such a CPU would compute them.
The clock, caches and memory are still this machine's: an emulation, not a real AVX2
CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
RATE = 44100
# Environment variables that hold each library to AVX2, read when the library loads.
ISA_LIMITS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # TensorFlow's and torch's oneDNN
        "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # torch's sgemm
        "OPENBLAS_CORETYPE": "Haswell",  # NumPy's sgemm
    }
}


# ----------------------------------------------------------------------------- helpers
def medians(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each callable ``rounds`` times, in alternating order, after one untimed warm-up."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(rounds):
        order = list(runs.items()) if i % 2 == 0 else list(runs.items())[::-1]
        for name, run in order:
            times[name].append(run())
    return times


def fresh(code: str, tree: Path = REPO) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of ``python -c code`` importing ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # cwd=tree: `python -c` puts the working folder first on sys.path, ahead of PYTHONPATH,
    # so run from anywhere else, this repository's keras_sep would stand in for ``tree``'s.
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"error: a timed process failed: {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def stub_torchaudio() -> bool:
    """Stand in an empty ``torchaudio`` if it is missing (Open-Unmix resamples with it)."""
    try:
        import torchaudio  # noqa: F401

        return False
    except ImportError:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        return True


STUB = "import sys, types; sys.modules.setdefault('torchaudio', types.ModuleType('torchaudio'))"


def has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- 1. machine
def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best float32 n x n matrix product rate NumPy's BLAS reaches here, in GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- 2. start-up
STARTS = {
    "keras-sep, ONNX copy (float32 CPUs; short jobs): import, load the bundled model": (
        "import keras_sep; from keras_sep.warm_start import load_separator; "
        "load_separator(keras_sep.DEFAULT_MODEL, seconds=1)"
    ),
    "keras-sep, Keras (long jobs on bfloat16 CPUs, GPUs): import, load the bundled model": (
        "import keras_sep; keras_sep.load(keras_sep.DEFAULT_MODEL)"
    ),
}
# Where keras-sep's start-up goes, measured inside one fresh process.
BREAKDOWN = """
import json, time
t = [time.perf_counter()]
import keras_sep; t.append(time.perf_counter())
from keras_sep.native_logs import quiet_tensorflow_start
quiet_tensorflow_start(); t.append(time.perf_counter())
import keras; t.append(time.perf_counter())
model = keras_sep.load(keras_sep.DEFAULT_MODEL); t.append(time.perf_counter())
import numpy as np
cfg = model.arch_config
model.predict_on_batch(np.zeros((4, cfg.valid_length(cfg.segment_length), 2), "float32"))
t.append(time.perf_counter())
names = ["import keras_sep", "import tensorflow", "import keras", "load the bundled model",
         "first model call"]
print(json.dumps(dict(zip(names, np.diff(t).tolist()))))
"""


def startup(rounds: int) -> None:
    runs = {name: (lambda code=code: fresh(code)[0]) for name, code in STARTS.items()}
    peer = "torch + Open-Unmix: import"
    if has("openunmix") and has("torch"):
        runs[peer] = lambda: fresh(f"{STUB}; import torch, openunmix")[0]
    times = {name: statistics.median(t) for name, t in medians(runs, rounds).items()}
    print(f"\n## Start-up, fresh processes, median of {rounds}\n")
    print("| | seconds | vs torch + Open-Unmix |\n|---|---|---|")
    for name, t in times.items():
        ratio = f"{t / times[peer]:.2f}x" if peer in times else "-"
        print(f"| {name} | {t:.2f} | {ratio} |")
    if peer not in times:
        print("\n(Open-Unmix not installed: no peer start-up)")
    parts = json.loads(fresh(BREAKDOWN)[2].strip().splitlines()[-1])
    print(
        "\nWhere the Keras start-up goes (one fresh process): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items())
    )


# ----------------------------------------------------------------------------- 3. model call
def model_calls(seconds: float, rounds: int, paper: bool) -> None:
    import keras_sep
    from keras_sep.audio import resample
    from keras_sep.data import toy

    mixture = sum(toy.generate_song(7, seconds, RATE).values()).astype(np.float32)
    runs: dict[str, Callable[[], float]] = {}
    stubbed = False
    if has("openunmix") and has("torch"):
        import torch

        stubbed = stub_torchaudio()
        import openunmix

        umx = openunmix.umxhq(pretrained=False, device="cpu").eval()
        audio = torch.from_numpy(mixture.T.copy())[None]

        def run_umx() -> float:
            with torch.no_grad():
                return _timed(lambda: umx(audio))

        runs["Open-Unmix umxhq (random weights)"] = run_umx
    if has("demucs") and has("torch"):
        import torch
        from demucs.apply import apply_model
        from demucs.htdemucs import HTDemucs

        demucs = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()
        audio = torch.from_numpy(mixture.T.copy())[None]

        def run_demucs() -> float:
            with torch.no_grad():
                return _timed(lambda: apply_model(demucs, audio, shifts=1, overlap=0.25))

        runs["HT-Demucs (random weights)"] = run_demucs

    # float32, and what `keras-sep separate`'s --precision auto picks where that differs.
    from keras_sep.precision import resolve

    for precision in dict.fromkeys(["float32", resolve("auto")]):
        bundled = keras_sep.load(keras_sep.DEFAULT_MODEL, precision=precision)
        at_model = resample(mixture, RATE, bundled.sample_rate)
        for tta, what in ((1, "--tta 1"), (4, "defaults (--tta 4)")):
            runs[f"keras-sep bundled model, {what}, {precision}"] = (
                lambda m=bundled, x=at_model, tta=tta: _timed(
                    lambda: keras_sep.separate(m, x, tta=tta)
                )
            )
    # The ONNX copy, which `separate` runs wherever Keras would compute in float32 on the
    # CPU, and for short jobs elsewhere (keras_sep.warm_start).
    from keras_sep.warm_start import onnx_runner

    copy = onnx_runner(keras_sep.DEFAULT_MODEL)
    at_model = resample(mixture, RATE, copy.arch_config.sample_rate)
    for tta, what in ((1, "--tta 1"), (4, "defaults (--tta 4)")):
        runs[f"keras-sep bundled model, {what}, its ONNX copy (float32)"] = (
            lambda x=at_model, tta=tta: _timed(lambda: keras_sep.separate(copy, x, tta=tta))
        )
    archs = [("wave_u_net", "paper Wave-U-Net, one pass")]
    if paper:
        archs.append(("dilated_dense", "paper Dilated Dense U-Net, one pass, float32"))
    for arch, label in archs:
        model = keras_sep.build(arch, preset="paper")
        x = resample(mixture, RATE, model.sample_rate)
        runs[f"keras-sep {label}"] = lambda m=model, x=x: _timed(
            lambda: keras_sep.separate(m, x, tta=1)
        )

    times = medians(runs, rounds)
    print(f"\n## The model call, {seconds:g} s of 44.1 kHz stereo, median of {rounds}\n")
    print("| | real-time factor | vs Open-Unmix |\n|---|---|---|")
    base = times.get("Open-Unmix umxhq (random weights)")
    base_rtf = statistics.median(base) / seconds if base else None
    for name, t in times.items():
        rtf = statistics.median(t) / seconds
        ratio = f"{rtf / base_rtf:.2f}" if base_rtf else "-"
        print(f"| {name} | {rtf:.3f} | {ratio} |")
    print(
        "\nkeras-sep: `separate` at the model's rate (the overlap-add included, decoding and "
        "resampling not), the paper models in float32; Open-Unmix: its Separator on the "
        "whole song (STFT, four models, Wiener filter); HT-Demucs: apply_model, its "
        "default overlap 0.25 and one shift."
    )
    if stubbed:
        print("torchaudio is not installed: an empty module stood in for it (only resampling).")


# ----------------------------------------------------------------------------- 4. command
def whole_command(seconds: float, rounds: int, ref: str | None) -> None:
    from keras_sep.data import toy

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        song = tmp / "song.wav"
        sf.write(song, sum(toy.generate_song(7, seconds, RATE).values()), RATE)
        trees = {"this tree": REPO}
        if ref:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp / "ref"), ref],
                check=True,
                capture_output=True,
            )
            trees[ref] = tmp / "ref"
        cpu: dict[str, list[float]] = {name: [] for name in trees}
        count = iter(range(10**6))

        def command(name: str, tree: Path) -> Callable[[], float]:
            def run() -> float:
                out = tmp / f"out{next(count)}"
                code = (
                    "import sys; from keras_sep.cli import main; "
                    f"sys.exit(main(['separate', {str(song)!r}, '-o', {str(out)!r}, '-q']))"
                )
                wall, seconds, _ = fresh(code, tree)
                cpu[name].append(seconds / wall)
                return wall

            return run

        try:
            times = medians({name: command(name, tree) for name, tree in trees.items()}, rounds)
        finally:
            if ref:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "ref")],
                    capture_output=True,
                )
    print(f"\n## `keras-sep separate` of a {seconds:g} s song, defaults, median of {rounds}\n")
    print("| | wall s | real-time factor | cores busy |\n|---|---|---|---|")
    for name, t in times.items():
        wall = statistics.median(t)
        busy = statistics.median(cpu[name][1:])  # the warm-up's first
        print(f"| {name} | {wall:.1f} | {wall / seconds:.3f} | {busy:.2f} |")
    if ref:
        ratio = statistics.median(times["this tree"]) / statistics.median(times[ref])
        print(f"\nthis tree / {ref}: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="model-call audio length")
    parser.add_argument("--song-minutes", type=float, default=3.0, help="whole-command song")
    parser.add_argument("--short-seconds", type=float, default=20.0, help="and a short one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref", help="git revision whose whole command to time beside this tree")
    parser.add_argument("--paper", action="store_true", help="add the paper DDU (slow)")
    parser.add_argument("--only", choices=["startup", "model", "command"], help="run one part")
    parser.add_argument(
        "--isa", choices=sorted(ISA_LIMITS), help="hold every library to this instruction set"
    )
    args = parser.parse_args()
    limits = ISA_LIMITS.get(args.isa, {})
    if any(os.environ.get(k) != v for k, v in limits.items()):
        # The limits apply when a library loads: rerun before any of them is imported.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **limits})

    from keras_sep.precision import describe_machine

    print("## Machine\n")
    print(describe_machine())
    if limits:
        print(f"held to {args.isa.upper()}: " + " ".join(f"{k}={v}" for k, v in limits.items()))
        print("(ONNX Runtime has no such switch: its rows use every instruction set here)")
    print(f"float32 sgemm (NumPy's BLAS, 2048^3, every core): {sgemm_gflops():.0f} GFLOP/s")
    if args.only in (None, "startup"):
        startup(args.rounds)
    if args.only in (None, "model"):
        model_calls(args.seconds, args.rounds, args.paper)
    if args.only in (None, "command"):
        for seconds in (args.short_seconds, args.song_minutes * 60):
            whole_command(seconds, args.rounds, args.ref)


if __name__ == "__main__":
    main()

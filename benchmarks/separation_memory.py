"""Peak memory of `keras-sep separate` on long songs: it should not grow with the length.

Generates a 44.1 kHz stereo 16-bit wav of each length (toy songs one after another),
separates it with `keras-sep separate` (the bundled model unless --model) in a fresh
process, and prints that process's peak resident memory, from the kernel's accounting
of the child (wait4), and its wall time. Target: the 1-hour song within 1.5x of the
10-minute one.

    nice -n 15 python benchmarks/separation_memory.py [--minutes 10 60] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from keras_sep.data import toy

RATE = 44100
SONG_SECONDS = 60.0


def write_long_song(path: Path, minutes: float, songs: list) -> None:
    """Write ``minutes`` of audio, one minute-long toy song after another, without holding it."""
    frames = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 2, "PCM_16") as f:
        written = 0
        while written < frames:
            song = songs[(written // len(songs[0])) % len(songs)]
            f.write(song[: frames - written])
            written += min(len(song), frames - written)


def separate(song: Path, out: Path, model: str | None) -> tuple[float, float]:
    """Peak RSS in MiB and wall seconds of one `keras-sep separate` process."""
    cli = shutil.which("keras-sep") or sys.exit("keras-sep is not on PATH: pip install -e .")
    argv = [cli, "separate", str(song), "-o", str(out), *(["--model", model] if model else [])]
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 gives this child's own peak, unlike RUSAGE_CHILDREN (the maximum over all).
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"separating {song} failed:\n{child.stderr.read().decode()}")
    return usage.ru_maxrss / 1024, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    p.add_argument("--model", help="model folder (default: the bundled demo model)")
    p.add_argument("--tmp", help="folder for the generated songs (default: the system's)")
    args = p.parse_args()

    songs = [sum(toy.generate_song(seed, SONG_SECONDS, RATE).values()) for seed in range(3)]
    peaks = []
    print("| song | wav size | peak RSS | wall | real-time factor |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for minutes in args.minutes:
            song = Path(tmp) / f"{minutes:g}min.wav"
            write_long_song(song, minutes, songs)
            peak, wall = separate(song, Path(tmp) / "out", args.model)
            peaks.append(peak)
            print(
                f"| {minutes:g} min | {song.stat().st_size / 2**20:.0f} MiB | {peak:.0f} MiB | "
                f"{wall:.0f} s | {wall / (minutes * 60):.3f} |",
                flush=True,
            )
            song.unlink()
            shutil.rmtree(Path(tmp) / "out")
    print(f"peak RSS, longest / shortest song: {peaks[-1] / peaks[0]:.2f}x (target: <= 1.5x)")


if __name__ == "__main__":
    main()

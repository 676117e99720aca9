"""Wall time of the whole ``keras-sep separate`` command, this tree beside another revision.

What a user waits for: start-up (imports, loading the bundled model), decoding, the model,
overlap-add and writing the stems, in a fresh process each time. Both trees separate the
same toy song in alternating rounds, so load from other work on the machine hits both
alike; the medians and their ratio are printed.

    python benchmarks/separate_command.py --ref e624c9e [--seconds 20] [--rounds 5]

``--ref`` is checked out into a temporary git worktree and imported from there (its
``keras_sep`` first on the path); run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
RATE = 44100


def run_once(tree: Path, song: Path, out: Path, extra: list[str]) -> float:
    """Seconds for one ``keras-sep separate`` in a fresh process importing ``tree``."""
    code = (
        "import sys; from keras_sep.cli import main; "
        f"sys.exit(main(['separate', {str(song)!r}, '-o', {str(out)!r}] + "
        f"{extra!r}))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="git revision to compare with")
    parser.add_argument("--seconds", type=float, default=20.0, help="song length")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tta", default="4", help="--tta for both (default 4, the CLI's)")
    args = parser.parse_args()

    from keras_sep.data import toy

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref = tmp / "ref"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(ref), args.ref],
            check=True,
            capture_output=True,
        )
        try:
            song = tmp / "song.wav"
            sf.write(song, sum(toy.generate_song(7, args.seconds, RATE).values()), RATE)
            extra = ["--tta", args.tta]
            trees = {"this tree": REPO, args.ref: ref}
            times: dict[str, list[float]] = {name: [] for name in trees}
            for k, tree in enumerate(trees.values()):  # untimed: warms the file cache
                run_once(tree, song, tmp / f"warm-{k}", extra)
            for i in range(args.rounds):
                order = list(trees.items()) if i % 2 == 0 else list(trees.items())[::-1]
                for k, (name, tree) in enumerate(order):
                    times[name].append(run_once(tree, song, tmp / f"out-{i}-{k}", extra))
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(ref)],
                capture_output=True,
            )
    print(
        f"keras-sep separate, {args.seconds:g} s of 44.1 kHz stereo, --tta {args.tta}, "
        f"{args.rounds} alternating rounds, fresh process each"
    )
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"{name:>12}: median {medians[name]:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in t)})"
        )
    this, ref_name = medians["this tree"], args.ref
    print(f"ratio this tree / {ref_name}: {this / medians[ref_name]:.3f}")


if __name__ == "__main__":
    main()

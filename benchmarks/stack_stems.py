"""Do two dependency stacks give the same stems? The bundled model on the demo song, compared.

`keras-sep demo` separates held-out toy song 0 (15 s, 44.1 kHz) with the bundled model.
Run this once on one stack to save its stems, then on the other to compare: it prints the
largest absolute sample difference per stem and exits 1 if any reaches the tolerance.
.ci/run saves on the oldest stack (constraints/oldest.txt) and compares on the newest.

    python benchmarks/stack_stems.py save /tmp/stems-oldest.npz
    python benchmarks/stack_stems.py compare /tmp/stems-oldest.npz
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

import numpy as np

import keras_sep
from keras_sep.data import toy
from keras_sep.data.tracks import Track
from keras_sep.demo import RATE
from keras_sep.separate import separate_waveform

TOLERANCE = 1e-4
PACKAGES = ("keras", "tensorflow", "numpy")


def demo_stems(seconds: float = 15.0) -> dict[str, np.ndarray]:
    """The bundled Keras model's stems of the demo song (`keras-sep demo` runs its ONNX copy,
    keras_sep/warm_start.py; this compares what each stack's TensorFlow and Keras compute)."""
    model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    references = toy.generate_song(toy.song_seed(toy.HELD_OUT_SEED, 0), seconds, RATE)
    track = Track(toy.song_name(0), RATE, {s: references[s] for s in model.sources})
    return separate_waveform(model, track.mixture, RATE, progress=False).stems


def stack() -> str:
    return ", ".join(f"{p} {version(p)}" for p in PACKAGES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "compare"])
    parser.add_argument("file", help="the .npz of stems to write (save) or to read (compare)")
    args = parser.parse_args(argv)
    stems = demo_stems()
    if args.action == "save":
        np.savez(args.file, stack=stack(), **stems)
        print(f"saved the demo song's stems ({stack()}) to {args.file}")
        return 0
    saved = np.load(args.file)
    print(f"this stack:  {stack()}\nsaved stack: {saved['stack']}")
    worst = 0.0
    for source, audio in stems.items():
        diff = float(np.abs(audio - saved[source]).max())
        worst = max(worst, diff)
        print(f"{source:<8} max abs difference {diff:.2e}")
    print(f"largest {worst:.2e} (tolerance {TOLERANCE:g})")
    return 0 if worst < TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())

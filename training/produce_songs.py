"""Make a produced copy of a MUSDB18-layout test set: every song mixed and mastered.

    python training/produce_songs.py data/corpus data/produced --subset test --seed 7

Each song's stems go through a mix engineer's chain for their role (keras_sep.data.
production.ROLE_EFFECTS: EQ, compression, saturation, modulation, delay, reverb, stereo
image), fixed per song by ``--seed`` and the song's name, then a glue compressor, a loud
master (-14 to -12 dBFS RMS by default) and a peak limiter on the bus. Stems and mixture
are written as 32-bit float wav, so mixture.wav is exactly the sum of the stems. This is
how keras-sep measures models on music that sounds produced (docs/separation.md).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: import the package, not this folder
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from keras_sep.audio import write_audio  # noqa: E402
from keras_sep.data.production import produce_song  # noqa: E402
from keras_sep.data.tracks import musdb_tracks  # noqa: E402
from keras_sep.errors import ArgumentParser, command  # noqa: E402


def song_rng(seed: int, name: str) -> np.random.Generator:
    """A generator fixed by the seed and the song's name, whatever order songs come in."""
    digest = hashlib.sha256(name.encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def produce_tree(
    source: str | Path,
    out: str | Path,
    subset: str = "test",
    seed: int = 7,
    loudness_db: tuple[float, float] = (-14.0, -12.0),
) -> list[str]:
    """Write the produced copy of ``source``'s ``subset`` under ``out``; returns song names."""
    names = []
    for track in musdb_tracks(source, subset):
        stems = produce_song(
            {k: np.asarray(v) for k, v in track.sources.items()},
            song_rng(seed, track.name),
            track.rate,
            loudness_db,
        )
        folder = Path(out) / subset / track.name
        for name, audio in stems.items():
            write_audio(folder / f"{name}.wav", audio, track.rate, "float")
        write_audio(
            folder / "mixture.wav", np.sum(list(stems.values()), axis=0), track.rate, "float"
        )
        names.append(track.name)
        print(f"{folder}: mixture {10 * np.log10(np.mean(sum(stems.values()) ** 2)):.1f} dBFS RMS")
    return names


@command
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="MUSDB18-layout root to read")
    p.add_argument("out", help="root to write the produced songs to")
    p.add_argument("--subset", default="test", choices=["train", "test"])
    p.add_argument("--seed", type=int, default=7, help="fixes every song's chain")
    p.add_argument("--loudness", type=float, nargs=2, default=[-14.0, -12.0], metavar="DB")
    args = p.parse_args(argv)
    names = produce_tree(args.source, args.out, args.subset, args.seed, tuple(args.loudness))
    print(f"produced {len(names)} songs into {Path(args.out) / args.subset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``keras-sep demo``: separate a synthetic song the model never saw, and show how well it did.

Writes the mixture, the estimated and reference stems, a spectrogram PNG (mixture,
then reference vs. estimate per source) and the SDR of each stem next to the two
trivial baselines (the mixture as the estimate, and silence, which scores 0 dB).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from keras_sep.audio import write_audio, write_stems
from keras_sep.baselines import MIXTURE, SILENCE, reference_estimates
from keras_sep.data import toy
from keras_sep.data.tracks import Track
from keras_sep.files import atomic_write_text, check_free
from keras_sep.spectrograms import plot_spectrograms

RATE = 44100


def run_demo(
    out_dir: str | os.PathLike,
    model_folder: str | os.PathLike | None = None,
    seconds: float = 15.0,
    song: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Generate held-out toy song ``song``, separate it, and write stems, a PNG and SDRs.

    Every output is checked before any work: a file in the way that keras-sep did not
    write is an ``OutputExistsError`` unless ``overwrite``.
    """
    import keras_sep
    from keras_sep.metrics import plain_sdr
    from keras_sep.separate import separate_waveform
    from keras_sep.warm_start import load_separator

    out = Path(out_dir)
    # A 15 s song: ONNX Runtime when the folder has its ONNX copy (keras_sep.warm_start).
    model = load_separator(model_folder or keras_sep.DEFAULT_MODEL, None, seconds=seconds)
    for path in output_files(out, model.sources):
        check_free(path, overwrite)
    references = toy.generate_song(toy.song_seed(toy.HELD_OUT_SEED, song), seconds, RATE)
    track = Track(toy.song_name(song), RATE, {s: references[s] for s in model.sources})
    references, mixture = dict(track.sources), track.mixture
    started = time.time()
    separation = separate_waveform(
        model, mixture, RATE, batch_size=batch_size, progress="separating" if progress else False
    )
    elapsed = time.time() - started
    estimates = separation.stems

    systems = {"model": estimates}
    systems.update({name: reference_estimates(name, track) for name in (MIXTURE, SILENCE)})
    rows = {
        source: {name: plain_sdr(references[source], est[source]) for name, est in systems.items()}
        for source in model.sources
    }
    write_stems(out / "estimates", estimates, RATE, overwrite=overwrite)
    write_stems(out / "references", references, RATE, overwrite=overwrite)
    write_audio(out / "mixture.wav", mixture, RATE, overwrite=overwrite)
    plot_spectrograms(
        out / "spectrograms.png",
        mixture,
        estimates,
        RATE,
        references=references,
        notes={s: sdr_note(r) for s, r in rows.items()},
        title=f"{track.name}: each estimate on its reference's dB scale",
        overwrite=overwrite,
    )
    summary = {
        "model": str(model_folder or keras_sep.DEFAULT_MODEL),
        "song": f"{toy.song_name(song)} (toy seed {toy.HELD_OUT_SEED}, not used in training)",
        "seconds": seconds,
        "separation_seconds": elapsed,
        "real_time_factor": elapsed / seconds,
        "sdr_db": rows,
        "metric": "plain whole-signal SDR, 10 log10 |s|^2 / |s - estimate|^2",
    }
    atomic_write_text(out / "sdr.json", json.dumps(summary, indent=2) + "\n", overwrite)
    return summary


def output_files(out: Path, sources) -> list[Path]:
    """Every file ``run_demo`` writes into ``out``."""
    stems = [out / folder / f"{s}.wav" for folder in ("estimates", "references") for s in sources]
    return [*stems, out / "mixture.wav", out / "spectrograms.png", out / "sdr.json"]


def sdr_note(row: dict) -> str:
    """An estimate's SDR next to the baselines', for its title in the figure."""
    return f"SDR {row['model']:.1f} dB (mixture {row['mixture']:.1f}, silence {row['silence']:.1f})"


def format_table(rows: dict) -> str:
    """The per-stem SDR table as aligned text."""
    lines = [f"{'source':<8} {'model':>8} {'mixture':>8} {'silence':>8}   (SDR, dB)"]
    for source, r in rows.items():
        lines.append(f"{source:<8} {r['model']:8.2f} {r['mixture']:8.2f} {r['silence']:8.2f}")
    return "\n".join(lines)

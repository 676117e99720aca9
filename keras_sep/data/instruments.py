"""Instruments beyond the SoundFonts: our own synthesizers and Hydrogen's recorded drum kits.

A model trained on three General MIDI SoundFonts leans on their timbres (issue 26: about
0.8 dB lost on instruments it never heard). These render the same note lists the corpus
composes, with other sound sources:

- Synthesizers, pure numpy, parameters drawn from a seed: ``fm`` (two-operator FM with a
  decaying index), ``pluck`` (Karplus-Strong string), ``subtractive`` (saw, square or pulse
  through a resonant low-pass that closes after the attack), ``wavetable`` (two random
  single-cycle tables morphing through the note, detuned unison) and ``mallet`` (the
  inharmonic partials of a struck bar).
- Hydrogen drum kits (Debian ``hydrogen-drumkits``): real recorded kits, read from their
  ``drumkit.xml``; General MIDI drum notes map to a kit's instruments by their names.

``TRAIN_SYNTHS`` / ``TRAIN_KITS`` may be used for training, ``HELD_OUT_SYNTHS`` /
``HELD_OUT_KITS`` only for the held-out songs that measure instruments training never used.
"""

from __future__ import annotations

import functools
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SYNTHS = ("fm", "pluck", "subtractive", "wavetable", "mallet")
TRAIN_SYNTHS = ("fm", "pluck", "subtractive")
HELD_OUT_SYNTHS = ("wavetable", "mallet")
HYDROGEN_DIR = Path("/usr/share/hydrogen/data/drumkits")
HELD_OUT_KITS = ("The Black Pearl 1.0", "ForzeeStereo", "HardElectro1", "VariBreaks")
TRAIN_KITS = (
    "Audiophob",
    "BJA_Pacific",
    "ColomboAcousticDrumkit",
    "ElectricEmpireKit",
    "Gimme A Hand 1.0",
    "Millo-Drums_v.1",
    "Millo_MultiLayered2",
    "Millo_MultiLayered3",
    "circAfrique v4",
    "rumpf_kit_z01_h2",
)

# General MIDI drum notes -> kinds, and the words that name a kind in a kit, best first;
# a kit without a kind falls back along FALLBACK.
GM_DRUMS = {
    35: "kick", 36: "kick", 37: "stick", 38: "snare", 39: "clap", 40: "snare",
    41: "tom_lo", 42: "hat", 43: "tom_lo", 44: "pedal", 45: "tom_mid", 46: "open",
    47: "tom_mid", 48: "tom_hi", 49: "crash", 50: "tom_hi", 51: "ride", 54: "perc",
    56: "perc", 57: "crash", 62: "perc", 63: "perc", 64: "perc", 69: "perc", 70: "perc",
    75: "perc",
}  # fmt: skip
KIND_WORDS = {
    "kick": ("kick", "bass drum", "bassdrum", "bd", "thump", "dununba", "bass"),
    "snare": ("snare", "slap", "clap", "snap"),
    "stick": ("stick", "rim", "click", "clave", "woodblock"),
    "clap": ("clap", "snap"),
    "hat": ("closed", "hh", "hat", "maraca", "shaker", "tamb"),
    "pedal": ("pedal", "closed", "hh", "hat"),
    "open": ("open", "op", "semi", "hat", "hh"),
    "tom_lo": ("floor", "low tom", "tom low", "tom lo", "tom 3", "low", "tom"),
    "tom_mid": ("mid", "tom 2", "tom"),
    "tom_hi": ("high", "hi tom", "tom hi", "tom 1", "tom"),
    "crash": ("crash", "splash", "china", "cymbal", "ride"),
    "ride": ("ride", "bell", "cymbal", "crash"),
    "perc": ("cowbell", "tamb", "conga", "bongo", "clave", "shaker", "perc", "block", "djembe"),
}
FALLBACK = {
    "hat": "perc", "stick": "snare", "clap": "snare", "pedal": "hat", "open": "hat",
    "tom_lo": "kick", "tom_mid": "snare", "tom_hi": "snare", "crash": "open", "ride": "hat",
    "perc": "stick",
}  # fmt: skip


def midi_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _pan_gains(pan: int) -> np.ndarray:
    """Equal-power (left, right) gains of a MIDI pan (0 left, 64 centre, 127 right)."""
    x = min(max((pan - 64) / 63, -1.0), 1.0)
    return np.array([math.sqrt(0.5 * (1 - x)), math.sqrt(0.5 * (1 + x))], np.float32)


def _velocity_gain(velocity: int) -> float:
    return (velocity / 127) ** 1.6


def _adsr(n: int, held: int, attack: float, decay: float, sustain: float, release: float, sr):
    """An envelope of n samples: attack, exponential decay to ``sustain`` while held
    (``held`` samples), then an exponential release."""
    t = np.arange(n) / sr
    env = sustain + (1 - sustain) * np.exp(-np.maximum(t - attack, 0) / max(decay, 1e-3))
    env *= np.minimum(1.0, t / max(attack, 1e-4))
    if held < n:
        tail = np.exp(-(t[held:] - t[held]) / max(release / 4.6, 1e-3))
        env[held:] = env[held] * tail
    return env


# ----------------------------------------------------------------------------- synthesizers


def synth_params(kind: str, seed: int) -> dict:
    """The random parameters of synth ``kind`` for ``seed``: one instrument per seed."""
    if kind not in SYNTHS:
        raise ValueError(f"unknown synth {kind!r}; use one of {list(SYNTHS)}")
    rng = np.random.default_rng([SYNTHS.index(kind), seed])
    u = rng.uniform
    if kind == "fm":
        return {
            "ratio": float(rng.choice([0.5, 1.0, 1.0, 2.0, 3.0, 3.5, 4.0, 7.0])),
            "index": u(0.5, 6.0),
            "index_end": u(0.0, 1.5),
            "index_tau": u(0.05, 0.8),
            "feedback": u(0.0, 0.3),
            "attack": u(0.002, 0.05),
            "decay": u(0.2, 2.0),
            "sustain": u(0.0, 0.8),
            "release": u(0.05, 0.4),
        }
    if kind == "pluck":
        return {
            "damping": u(0.2, 0.5),  # weight of the previous sample in the loop filter
            "decay": u(0.5, 4.0),  # seconds to -60 dB at 220 Hz
            "brightness": u(0.3, 1.0),  # the excitation's share of white (vs. smoothed) noise
            "release": u(0.03, 0.15),
        }
    if kind == "subtractive":
        return {
            "wave": str(rng.choice(["saw", "square", "pulse"])),
            "width": u(0.1, 0.4),
            "cutoff": u(2.0, 8.0),  # x f0 after the sweep
            "sweep": u(1.0, 12.0),  # the cutoff starts this many times higher
            "sweep_tau": u(0.03, 0.4),
            "resonance": u(0.0, 12.0),  # dB at the cutoff
            "attack": u(0.002, 0.2),
            "decay": u(0.1, 1.5),
            "sustain": u(0.2, 1.0),
            "release": u(0.05, 0.5),
            "detune": u(0.0, 15.0),  # cents between two voices
        }
    if kind == "wavetable":
        return {
            "tables": rng.uniform(0, 1, (2, 48)) / np.arange(1, 49) ** u(0.5, 1.5),
            "morph_tau": u(0.1, 1.5),
            "voices": int(rng.integers(1, 4)),
            "detune": u(3.0, 20.0),
            "attack": u(0.005, 0.3),
            "decay": u(0.2, 2.0),
            "sustain": u(0.3, 1.0),
            "release": u(0.05, 0.6),
        }
    # mallet: a struck bar's partials (marimba, vibraphone, glockenspiel-like)
    ratios = np.array([1.0, 3.93, 9.54]) if rng.random() < 0.5 else np.array([1.0, 2.76, 5.40])
    return {
        "ratios": ratios * u(0.98, 1.02, 3),
        "weights": np.array([1.0, u(0.1, 0.6), u(0.02, 0.3)]),
        "decay": u(0.3, 2.5),
        "tremolo": u(0.0, 0.3),
        "tremolo_hz": u(3.0, 7.0),
        "release": u(0.05, 0.3),
    }


def _band_limited(shape: np.ndarray, f0: float, phase: np.ndarray, sr: int) -> np.ndarray:
    """Harmonics ``shape`` (weights of 1, 2, ...) of ``phase`` (cycles), those below 0.45 sr,
    read from a wavetable (the toy songs' tables)."""
    from keras_sep.data.toy import _lookup, _table

    count = int(min(len(shape), max(1, 0.45 * sr // f0)))
    return _lookup(_table(shape[:count]), phase).astype(np.float64)


def synth_note(
    kind: str, params: dict, pitch: float, seconds: float, velocity: int, sr: int
) -> np.ndarray:
    """One mono note of ``seconds`` held, plus its release tail."""
    p = params
    f0 = midi_hz(pitch)
    held = max(1, round(seconds * sr))
    n = held + round(p["release"] * sr)
    t = np.arange(n) / sr
    if kind == "fm":
        index = p["index_end"] + (p["index"] - p["index_end"]) * np.exp(-t / p["index_tau"])
        mod = np.sin(2 * np.pi * f0 * p["ratio"] * t)
        y = np.sin(2 * np.pi * f0 * t + index * mod + p["feedback"] * mod**2)
        y *= _adsr(n, held, p["attack"], p["decay"], p["sustain"], p["release"], sr)
    elif kind == "pluck":
        y = _karplus_strong(p, f0, n, sr, seed=round(pitch * 1000) + velocity)
        y *= _adsr(n, held, 0.0005, 1e3, 1.0, p["release"], sr)
    elif kind == "subtractive":
        k = np.arange(1, 200, dtype=np.float64)
        if p["wave"] == "saw":
            shape = 1 / k
        elif p["wave"] == "square":
            shape = np.where(k % 2 == 1, 1 / k, 0.0)
        else:
            shape = np.abs(np.sin(np.pi * k * p["width"])) / k
        y = np.zeros(n)
        for cents in (0.0, p["detune"]) if p["detune"] > 3 else (0.0,):
            f = f0 * 2 ** (cents / 1200)
            y += _swept_lowpass(shape, f, t, p, sr)
        y *= _adsr(n, held, p["attack"], p["decay"], p["sustain"], p["release"], sr)
    elif kind == "wavetable":
        morph = 1 - np.exp(-t / p["morph_tau"])
        y = np.zeros(n)
        for v in range(p["voices"]):
            cents = 0.0 if p["voices"] == 1 else p["detune"] * (v / (p["voices"] - 1) - 0.5)
            f = f0 * 2 ** (cents / 1200)
            phase = f * t + v / 7
            a, b = (_band_limited(table, f, phase, sr) for table in p["tables"])
            y += (1 - morph) * a + morph * b
        y *= _adsr(n, held, p["attack"], p["decay"], p["sustain"], p["release"], sr)
    else:  # mallet
        y = np.zeros(n)
        for ratio, weight in zip(p["ratios"], p["weights"], strict=True):
            if f0 * ratio < 0.45 * sr:
                tau = p["decay"] / ratio**0.7  # higher partials die sooner
                y += weight * np.sin(2 * np.pi * f0 * ratio * t) * np.exp(-t / tau)
        y *= 1 + p["tremolo"] * np.sin(2 * np.pi * p["tremolo_hz"] * t)
        y *= _adsr(n, held, 0.001, 1e3, 1.0, p["release"], sr)
    peak = float(np.max(np.abs(y))) or 1.0
    return (y / peak * _velocity_gain(velocity)).astype(np.float32)


def _swept_lowpass(shape: np.ndarray, f0: float, t: np.ndarray, p: dict, sr: int) -> np.ndarray:
    """Harmonics through a resonant low-pass whose cutoff falls from bright to its rest
    value: a crossfade of the bright and the dull spectrum, as the filter closes."""
    phase = f0 * t
    k = np.arange(1, len(shape) + 1)

    def through(cutoff: float) -> np.ndarray:
        ratio = k * f0 / (cutoff * f0)
        q = 10 ** (p["resonance"] / 20)
        gain = 1 / np.sqrt((1 - ratio**2) ** 2 + (ratio / max(q, 0.7)) ** 2)
        return _band_limited(shape * gain, f0, phase, sr)

    dull = through(p["cutoff"])
    bright = through(p["cutoff"] * p["sweep"])
    fade = np.exp(-t / p["sweep_tau"])
    return fade * bright + (1 - fade) * dull


def _karplus_strong(p: dict, f0: float, n: int, sr: int, seed: int) -> np.ndarray:
    """A plucked string: a noise burst circulating in a delay line with a low-pass loop."""
    rng = np.random.default_rng(seed)
    period = max(2, round(sr / f0))
    burst = rng.uniform(-1, 1, period)
    smooth = np.convolve(burst, np.ones(4) / 4, mode="same")
    burst = p["brightness"] * burst + (1 - p["brightness"]) * smooth
    # Loop gain per period for a -60 dB decay in p["decay"] seconds at 220 Hz, scaled to f0.
    seconds = p["decay"] * (220.0 / f0) ** 0.5
    loop = 10 ** (-3 / max(1.0, seconds * f0))
    periods = math.ceil(n / period) + 1
    y = np.zeros(periods * period)
    y[:period] = burst
    d = p["damping"]
    for i in range(1, periods):
        prev = y[(i - 1) * period : i * period]
        shifted = np.concatenate(
            [y[(i - 1) * period - 1 : (i - 1) * period] if i > 1 else [0.0], prev[:-1]]
        )
        y[i * period : (i + 1) * period] = loop * ((1 - d) * prev + d * shifted)
    return y[:n]


def render_synth_part(
    kind: str, seed: int, notes: Sequence, seconds: float, sr: int, pan: int = 64, volume=100
) -> np.ndarray:
    """(round(seconds * sr), 2) float32: ``notes`` (start, length, pitch, velocity) played
    by synth ``kind`` with ``seed``'s parameters, panned and scaled like MIDI CC10 and CC7."""
    params = synth_params(kind, seed)
    n = round(seconds * sr)
    mono = np.zeros(n, np.float32)
    cache: dict[tuple, np.ndarray] = {}
    for note in notes:
        key = (note.pitch, round(note.length, 3), note.velocity)
        if key not in cache:
            cache[key] = synth_note(kind, params, note.pitch, note.length, note.velocity, sr)
        _add(mono, cache[key], round(note.start * sr))
    return mono[:, None] * (_pan_gains(pan) * (volume / 127) ** 2)[None, :]


def _add(out: np.ndarray, x: np.ndarray, start: int) -> None:
    if start >= len(out):
        return
    end = min(len(out), start + len(x))
    out[start:end] += x[: end - start]


# ----------------------------------------------------------------------------- drum kits


def kit_names(root: str | os.PathLike = HYDROGEN_DIR) -> list[str]:
    """The Hydrogen kits installed under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "drumkit.xml").is_file())


@functools.lru_cache(maxsize=4)
def load_kit(name: str, sr: int, root: str = str(HYDROGEN_DIR)) -> dict:
    """Kit ``name`` at ``sr``: {kind: [(velocity max, stereo sample, gain), ...]} for every
    kind in KIND_WORDS that the kit has or falls back to."""
    import soundfile as sf

    from keras_sep.audio import resample

    folder = Path(root) / name
    xml = ET.parse(folder / "drumkit.xml").getroot()
    ns = {"h": xml.tag.split("}")[0].strip("{")} if xml.tag.startswith("{") else {}
    prefix = "h:" if ns else ""
    instruments = []
    for inst in xml.iter(f"{{{ns['h']}}}instrument" if ns else "instrument"):
        label = (inst.findtext(f"{prefix}name", "", ns) or "").strip().lower()
        volume = float(inst.findtext(f"{prefix}volume", "1", ns) or 1)
        # Old kits name one sample on the instrument itself, newer ones a layer per velocity.
        own = inst.findtext(f"{prefix}filename", "", ns)
        layers = [(1.0, folder / own, volume)] if own and (folder / own).is_file() else []
        for layer in inst.iter(f"{{{ns['h']}}}layer" if ns else "layer"):
            file = layer.findtext(f"{prefix}filename", "", ns)
            if not file or not (folder / file).is_file():
                continue
            top = float(layer.findtext(f"{prefix}max", "1", ns) or 1)
            gain = float(layer.findtext(f"{prefix}gain", "1", ns) or 1)
            layers.append((top, folder / file, gain * volume))
        if label and layers:
            instruments.append((label, sorted(layers)))

    def find(kind: str):
        for word in KIND_WORDS[kind]:
            pattern = re.compile(rf"(^|[^a-z]){re.escape(word)}")
            for label, layers in instruments:
                if pattern.search(label) and not (kind != "snare" and "roll" in label):
                    return layers
        return None

    kit: dict[str, list] = {}
    for kind in KIND_WORDS:
        layers = find(kind)
        if layers is not None:
            loaded = []
            for top, path, gain in layers:
                audio, rate = sf.read(path, dtype="float32", always_2d=True)
                audio = audio[:, :2] if audio.shape[1] >= 2 else np.repeat(audio[:, :1], 2, 1)
                if rate != sr:
                    audio = resample(audio, rate, sr)
                loaded.append((top, audio.astype(np.float32), gain))
            kit[kind] = loaded
    for _ in range(2):  # a fallback may itself have fallen back
        for kind, other in FALLBACK.items():
            if kind not in kit and other in kit:
                kit[kind] = kit[other]
    if "kick" not in kit and "snare" not in kit:
        raise ValueError(f"Hydrogen kit {name!r} has no kick or snare that its names show")
    return kit


def render_kit_part(
    name: str, notes: Sequence, seconds: float, sr: int, root: str | os.PathLike = HYDROGEN_DIR
) -> np.ndarray:
    """(round(seconds * sr), 2) float32: General MIDI drum ``notes`` played on Hydrogen kit
    ``name``; a note's velocity picks the sample layer and scales it."""
    kit = load_kit(name, sr, str(root))
    out = np.zeros((round(seconds * sr), 2), np.float32)
    for note in notes:
        kind = GM_DRUMS.get(note.pitch)
        layers = kit.get(kind) if kind else None
        if not layers:
            continue
        level = note.velocity / 127
        top, audio, gain = next((x for x in layers if level <= x[0] + 1e-6), layers[-1])
        start = round(note.start * sr)
        if start < len(out):
            end = min(len(out), start + len(audio))
            out[start:end] += audio[: end - start] * (gain * _velocity_gain(note.velocity))
    return out

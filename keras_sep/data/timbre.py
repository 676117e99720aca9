"""Timbre augmentation and missing stems: change what an instrument sounds like, and which
instruments play, rather than how the song is mixed.

A model trained on a few sound sources learns their timbres: on instruments it never heard
it loses about 0.8 dB (issue 26). These per-stem changes move a stem's spectrum and
harmonics away from what the training instruments sound like, at the stem's own level:

- ``pitch_shift``: the stem played faster or slower (-4 .. +4 semitones), so pitch and
  formants (body resonances, vowel formants) move together, like a tape at another speed.
- ``filter_bank``: a random smooth gain curve over frequency (4-12 bands, +-12 dB) plus
  up to three narrow resonances: another body, another microphone, another vowel.
- ``waveshaping``: tube-like drive, asymmetric (even-harmonic) bending or wave folding.
- ``downsampling``: sample-rate tricks: a sample-and-hold at a lower rate (aliased, gritty
  highs) or a band limit at a lower rate (dull, telephone-like).

Missing stems teach silence: real songs often have no vocals, or no bass in a section, and
a model that never heard that leaks the other stems into the empty one. ``missing`` gives
each source a probability of being silent, for the whole segment (half the time) or for
one section of it (with 10 ms fades); the mixture is still the sum of the targets.

Everything here is a pure function of its inputs and an ``np.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from keras_sep.data.production import varispeed
from keras_sep.errors import ConfigError

TIMBRE_EFFECTS = ("pitch_shift", "filter_bank", "waveshaping", "downsampling")
# How often each effect is drawn per stem.
DEFAULT_TIMBRE_PROBABILITY = {
    "pitch_shift": 0.2,
    "filter_bank": 0.35,
    "waveshaping": 0.15,
    "downsampling": 0.1,
}
MAX_SEMITONES = 4.0
SILENT_RMS = 1e-5  # a stem this quiet is left as it is


@dataclass(frozen=True)
class StemPlan:
    """The draws for one stem of one example (all neutral: the stem unchanged)."""

    speed: float = 1.0  # pitch_shift: read this many source samples per output sample
    bands: tuple = ()  # filter_bank: ((hz, gain dB), ...) of the smooth curve
    peaks: tuple = ()  # filter_bank: ((hz, gain dB, Q), ...) narrow resonances
    shape: tuple = ()  # waveshaping: (kind, amount, wet)
    rate_trick: tuple = ()  # downsampling: (kind, factor, wet)
    silent: tuple | None = None  # missing: (start, stop) as fractions of the segment


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def filter_curve(bands, peaks, freqs: np.ndarray) -> np.ndarray:
    """The filter bank's linear gain at ``freqs`` (Hz): the bands' dB values interpolated
    over log frequency, times each resonance's peak (a 2nd-order peaking response)."""
    log_f = np.log(np.maximum(freqs, 1.0))
    db = np.zeros_like(freqs, dtype=np.float64)
    if bands:
        hz, gains = np.array(bands, np.float64).T
        db += np.interp(log_f, np.log(hz), gains)
    for hz, gain_db, q in peaks:
        # A resonance of ``gain_db`` at ``hz``, half of it (in dB) at hz * (1 +- 1/(2q)).
        distance = (np.log(np.maximum(freqs, 1.0) / hz) * q * 2.885) ** 2
        db += gain_db / (1.0 + distance)
    return 10 ** (db / 20)


def apply_filter(x: np.ndarray, bands, peaks, sample_rate: int) -> np.ndarray:
    """``x`` (time, channels) through the filter bank: zero-phase, by FFT, padded so the
    circular wrap of the short response stays out of the result."""
    n = len(x)
    size = 1 << int(np.ceil(np.log2(n + 4096)))
    spec = np.fft.rfft(x, size, axis=0)
    gain = filter_curve(bands, peaks, np.fft.rfftfreq(size, 1.0 / sample_rate))
    return np.fft.irfft(spec * gain[:, None], size, axis=0)[:n]


def waveshape(x: np.ndarray, kind: str, amount: float) -> np.ndarray:
    """``x`` (peak-normalised inside) through a static curve that adds harmonics."""
    peak = float(np.max(np.abs(x))) or 1.0
    u = x / peak
    if kind == "drive":  # symmetric: odd harmonics, like a tube pushed hard
        y = np.tanh(amount * u) / np.tanh(amount)
    elif kind == "bend":  # asymmetric: even harmonics; the DC it makes is removed
        y = u + 0.25 * amount * u * u
        y -= y.mean(axis=0, keepdims=True)
    else:  # "fold": a wave folder, bright and metallic
        y = np.sin(0.5 * np.pi * amount * u)
    return y * peak


def rate_trick(x: np.ndarray, kind: str, factor: int) -> np.ndarray:
    """``x`` as if recorded at 1/``factor`` of the sample rate: held (aliased) or band-limited."""
    n = len(x)
    if kind == "hold":
        return np.repeat(x[::factor], factor, axis=0)[:n]
    spec = np.fft.rfft(x, axis=0)
    spec[len(spec) // factor :] = 0  # nothing above the lower rate's Nyquist frequency
    return np.fft.irfft(spec, n, axis=0)


def silence_mask(n: int, span: tuple[float, float], sample_rate: int) -> np.ndarray:
    """(n,) gains: 0 over ``span`` (fractions of n), 1 elsewhere, with 10 ms linear fades."""
    a, b = round(span[0] * n), round(span[1] * n)
    mask = np.ones(n, np.float32)
    mask[a:b] = 0.0
    fade = max(1, sample_rate // 100)
    ramp = np.linspace(1.0, 0.0, fade + 2, dtype=np.float32)[1:-1]
    if a > 0:  # fade out into the gap
        lo = max(0, a - len(ramp))
        mask[lo:a] = ramp[len(ramp) - (a - lo) :]
    if b < n:  # and back in after it
        hi = min(n, b + len(ramp))
        mask[b:hi] = ramp[::-1][: hi - b]
    return mask


@dataclass(frozen=True)
class Alteration:
    """Which timbre effects to draw per stem, how often, and which stems may be missing.

    ``effects``: names from ``TIMBRE_EFFECTS``; ``probability`` overrides
    ``DEFAULT_TIMBRE_PROBABILITY``; ``missing``: source name -> probability that the stem is
    silent in an example (whole segment or a section).
    """

    effects: tuple[str, ...] = ()
    probability: Mapping[str, float] = field(default_factory=dict)
    missing: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.effects) - set(TIMBRE_EFFECTS))
        unknown += sorted(set(self.probability) - set(TIMBRE_EFFECTS))
        if unknown:
            raise ConfigError(f"unknown timbre effect(s) {unknown}; valid: {list(TIMBRE_EFFECTS)}")
        for name, table in (("timbre probabilities", self.probability), ("missing", self.missing)):
            bad = {k: v for k, v in table.items() if not 0 <= v <= 1}
            if bad:
                raise ConfigError(f"{name} must be in [0, 1], got {bad}")
        object.__setattr__(self, "effects", tuple(self.effects))

    def __bool__(self) -> bool:
        return bool(self.effects) or any(p > 0 for p in self.missing.values())

    def chance(self, name: str) -> float:
        if name not in self.effects:
            return 0.0
        return float(self.probability.get(name, DEFAULT_TIMBRE_PROBABILITY[name]))

    def plan(self, rng: np.random.Generator, sources: Sequence[str]) -> tuple[StemPlan, ...]:
        """Draw every stem's changes for one example."""
        return tuple(self._plan_stem(rng, name) for name in sources)

    def _plan_stem(self, rng: np.random.Generator, source: str) -> StemPlan:
        speed, bands, peaks, shape, trick, silent = 1.0, (), (), (), (), None
        if rng.random() < self.chance("pitch_shift"):
            speed = float(2 ** (rng.uniform(-MAX_SEMITONES, MAX_SEMITONES) / 12))
        if rng.random() < self.chance("filter_bank"):
            count = int(rng.integers(4, 13))
            hz = np.exp(np.sort(rng.uniform(np.log(40), np.log(10000), count)))
            bands = tuple((float(f), float(rng.uniform(-12, 12))) for f in hz)
            peaks = tuple(
                (
                    float(np.exp(rng.uniform(np.log(150), np.log(5000)))),
                    float(rng.uniform(4, 14)),
                    float(rng.uniform(2, 10)),
                )
                for _ in range(int(rng.integers(0, 4)))
            )
        if rng.random() < self.chance("waveshaping"):
            kind = str(rng.choice(["drive", "bend", "fold"]))
            amount = {"drive": rng.uniform(1.5, 6), "bend": rng.uniform(0.5, 2)}.get(
                kind, rng.uniform(1.2, 3)
            )
            shape = (kind, float(amount), float(rng.uniform(0.4, 1.0)))
        if rng.random() < self.chance("downsampling"):
            kind = str(rng.choice(["hold", "band"]))
            trick = (kind, int(rng.integers(2, 7)), float(rng.uniform(0.5, 1.0)))
        if rng.random() < self.missing.get(source, 0.0):
            if rng.random() < 0.5:
                silent = (0.0, 1.0)
            else:  # a section: a gap from somewhere inside to the end, or from the start
                cut = float(rng.uniform(0.2, 0.8))
                silent = (cut, 1.0) if rng.random() < 0.5 else (0.0, cut)
        return StemPlan(speed, bands, peaks, shape, trick, silent)

    @staticmethod
    def read_length(stem: StemPlan, length: int) -> int:
        """Source samples to read for ``length`` output samples of ``stem``."""
        return int(np.ceil((length - 1) * stem.speed)) + 2

    @staticmethod
    def apply(source: np.ndarray, stem: StemPlan, length: int, sample_rate: int) -> np.ndarray:
        """One stem's changes: ``source`` (read_length, channels) in, (length, channels) out,
        at the source's RMS level (timbre changes move no faders)."""
        x = source.astype(np.float64)
        if stem.speed != 1.0:
            x = varispeed(x, stem.speed, length)
        x = x[:length]
        level = _rms(x)
        if level >= SILENT_RMS:
            y = x
            if stem.bands or stem.peaks:
                y = apply_filter(y, stem.bands, stem.peaks, sample_rate)
            if stem.shape:
                kind, amount, wet = stem.shape
                y = wet * waveshape(y, kind, amount) + (1 - wet) * y
            if stem.rate_trick:
                kind, factor, wet = stem.rate_trick
                y = wet * rate_trick(y, kind, factor) + (1 - wet) * y
            if y is not x:
                y = y * (level / max(_rms(y), SILENT_RMS))
            x = y
        return x.astype(np.float32)

    @staticmethod
    def silence(targets: np.ndarray, plan: Sequence[StemPlan], sample_rate: int) -> np.ndarray:
        """Mute the missing stems of ``targets`` (sources, segment, channels) over their span,
        after any production, as a mute on the desk would (reverb tails go too)."""
        out = targets
        for k, stem in enumerate(plan):
            if stem.silent is not None:
                if out is targets:
                    out = targets.copy()
                out[k] *= silence_mask(out.shape[1], stem.silent, sample_rate)[:, None]
        return out

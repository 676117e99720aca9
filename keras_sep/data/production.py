"""Production augmentation: stems processed the way records are, so models hear produced music.

Real songs are mixed and mastered: each stem is equalised, compressed, saturated, sent to
reverbs and delays, widened and panned, and the mix bus is glued by a compressor, pushed
into a limiter and brought to a loud master. A model trained only on dry stems fails on
that (issue 14: 0.1 dB SDR on produced songs, 3.6 dB on dry ones), so training examples
go through a random chain of such effects.

The DSP is Spotify's ``pedalboard`` (JUCE filters, compressor, limiter, distortion,
chorus, delay, reverb). The mix bus is the exception: a bus compressor and limiter must
apply ONE gain curve, computed from the mixture, to every stem, so that the mixture is
still exactly the sum of the targets. pedalboard's dynamics plug-ins do not expose their
gain curve, so the bus gain computers are a few lines of scipy (an RMS detector and a
look-ahead peak limiter) on top of the same envelope ideas.

Effects need context: a reverb tail or a compressor's attack at the start of a segment
comes from the audio before it. ``Production.process`` therefore works on a window that
starts ``context`` samples before the segment and crops at the end.

Everything here is a pure function of its inputs and an ``np.random.Generator``, so the
sampler's examples stay a function of (seed, shard, index).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from keras_sep.errors import ConfigError, require

# Per-stem effects, in the order a mixing engineer would insert them, then the bus.
STEM_EFFECTS = ("eq", "saturation", "compression", "modulation", "delay", "reverb", "stereo")
EXAMPLE_EFFECTS = ("speed",)  # all stems together, so they stay aligned
BUS_EFFECTS = ("glue", "master")
EFFECTS = STEM_EFFECTS + EXAMPLE_EFFECTS + BUS_EFFECTS

# How often each effect is drawn (per stem for the stem effects, per example otherwise).
DEFAULT_PROBABILITY = {
    "eq": 0.7,
    "saturation": 0.25,
    "compression": 0.5,
    "modulation": 0.2,
    "delay": 0.2,
    "reverb": 0.5,
    "stereo": 0.5,
    "speed": 0.3,
    "glue": 0.6,
    "master": 0.9,
}

SILENT_RMS = 1e-5  # -100 dBFS: a stem this quiet is left untouched (and so stays silent)


def _db(x: float) -> float:
    return float(20 * np.log10(max(x, 1e-12)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _pedalboard():
    return require("pedalboard", "production augmentation")


# ----------------------------------------------------------------------------- stem chains
# Each builder draws its random parameters and returns pedalboard plug-ins. ``level_db`` is
# the stem's RMS level, so thresholds sit relative to the material and really engage.


def eq_plugins(rng: np.random.Generator, level_db: float) -> list:
    """High/low pass, shelves and peaks: one to four bands."""
    pb = _pedalboard()
    plugins = []
    if rng.random() < 0.5:
        plugins.append(pb.HighpassFilter(float(np.exp(rng.uniform(np.log(25), np.log(300))))))
    if rng.random() < 0.4:
        plugins.append(pb.LowShelfFilter(float(rng.uniform(80, 400)), float(rng.uniform(-8, 8))))
    for _ in range(int(rng.integers(0, 3))):
        hz = float(np.exp(rng.uniform(np.log(150), np.log(6000))))
        plugins.append(pb.PeakFilter(hz, float(rng.uniform(-10, 10)), float(rng.uniform(0.5, 4))))
    if rng.random() < 0.4:
        plugins.append(
            pb.HighShelfFilter(float(rng.uniform(2500, 8000)), float(rng.uniform(-8, 8)))
        )
    if rng.random() < 0.3:
        plugins.append(pb.LowpassFilter(float(np.exp(rng.uniform(np.log(2500), np.log(10000))))))
    return plugins


def saturation_plugins(rng: np.random.Generator, level_db: float) -> list:
    """Tube-like drive or hard clipping (bass and guitar amps, tape)."""
    pb = _pedalboard()
    if rng.random() < 0.7:
        return [pb.Distortion(float(rng.uniform(4, 28)))]
    return [pb.Clipping(float(level_db + rng.uniform(0, 9)))]


def compression_plugins(rng: np.random.Generator, level_db: float) -> list:
    """A compressor, and sometimes a limiter after it (drums and vocals are often limited)."""
    pb = _pedalboard()
    plugins = [
        pb.Compressor(
            threshold_db=float(level_db - rng.uniform(0, 15)),
            ratio=float(rng.uniform(1.5, 10)),
            attack_ms=float(np.exp(rng.uniform(np.log(0.5), np.log(40)))),
            release_ms=float(rng.uniform(30, 400)),
        )
    ]
    if rng.random() < 0.35:
        plugins.append(pb.Limiter(float(level_db + rng.uniform(0, 8)), float(rng.uniform(30, 300))))
    return plugins


def modulation_plugins(rng: np.random.Generator, level_db: float) -> list:
    """Chorus, or a flanger (short delay with feedback), or a phaser."""
    pb = _pedalboard()
    kind = rng.random()
    if kind < 0.5:
        return [
            pb.Chorus(
                rate_hz=float(rng.uniform(0.2, 3)),
                depth=float(rng.uniform(0.1, 0.6)),
                centre_delay_ms=float(rng.uniform(5, 20)),
                feedback=float(rng.uniform(0, 0.3)),
                mix=float(rng.uniform(0.2, 0.6)),
            )
        ]
    if kind < 0.8:
        return [
            pb.Chorus(
                rate_hz=float(rng.uniform(0.05, 1)),
                depth=float(rng.uniform(0.2, 0.9)),
                centre_delay_ms=float(rng.uniform(0.7, 4)),
                feedback=float(rng.uniform(0.2, 0.7)),
                mix=float(rng.uniform(0.3, 0.6)),
            )
        ]
    return [
        pb.Phaser(
            rate_hz=float(rng.uniform(0.1, 2)),
            depth=float(rng.uniform(0.3, 1)),
            feedback=float(rng.uniform(0, 0.6)),
            mix=float(rng.uniform(0.3, 0.7)),
        )
    ]


def delay_plugins(rng: np.random.Generator, level_db: float) -> list:
    """A feedback echo, slap-back to long."""
    pb = _pedalboard()
    return [
        pb.Delay(
            delay_seconds=float(rng.uniform(0.06, 0.6)),
            feedback=float(rng.uniform(0, 0.55)),
            mix=float(rng.uniform(0.1, 0.4)),
        )
    ]


def reverb_plugins(rng: np.random.Generator, level_db: float) -> list:
    """A send to a room ... hall, with pre-delay: the wet signal is added to the dry one."""
    pb = _pedalboard()
    wet = pb.Pedalboard(
        [
            pb.Delay(delay_seconds=float(rng.uniform(0.0, 0.08)), feedback=0.0, mix=1.0),
            pb.Reverb(
                room_size=float(rng.uniform(0.2, 0.97)),
                damping=float(rng.uniform(0.1, 0.9)),
                wet_level=float(rng.uniform(0.1, 0.6)),
                dry_level=0.0,
                width=float(rng.uniform(0.3, 1.0)),
            ),
        ]
    )
    return [pb.Mix([pb.Pedalboard([]), wet])]


def stereo_image(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random stereo width (mid/side) and a constant-power pan. ``audio``: (channels, time)."""
    if audio.shape[0] != 2:
        return audio
    mid, side = (audio[0] + audio[1]) / 2, (audio[0] - audio[1]) / 2
    side = side * float(rng.uniform(0.0, 1.8))
    left, right = mid + side, mid - side
    angle = float(rng.uniform(-0.35, 0.35)) * np.pi / 2 + np.pi / 4  # centre: pi / 4
    return np.stack([left * np.cos(angle), right * np.sin(angle)]) * np.sqrt(2)


BUILDERS = {
    "eq": eq_plugins,
    "saturation": saturation_plugins,
    "compression": compression_plugins,
    "modulation": modulation_plugins,
    "delay": delay_plugins,
    "reverb": reverb_plugins,
}


def process_stem(
    audio: np.ndarray,
    rng: np.random.Generator,
    sample_rate: int,
    probability: Mapping[str, float],
    builders: Mapping[str, object] = BUILDERS,
) -> np.ndarray:
    """One stem (time, channels) through a random chain; silence stays silence.

    Each enabled effect is drawn with its probability; the chain keeps the stem's RMS level
    (production changes its sound, the mix balance is the gain augmentation's job).
    """
    level = _rms(audio)
    if level < SILENT_RMS:
        return audio
    plugins = []
    for name in STEM_EFFECTS:
        if name in builders and rng.random() < probability.get(name, 0.0):
            plugins += builders[name](rng, _db(level))
    x = np.ascontiguousarray(audio.T, dtype=np.float32)
    if plugins:
        x = _pedalboard().Pedalboard(plugins)(x, sample_rate)
    if rng.random() < probability.get("stereo", 0.0):
        x = stereo_image(x, rng)
    out = x.T * (level / max(_rms(x), SILENT_RMS))
    return np.nan_to_num(out).astype(np.float32)


# ----------------------------------------------------------------------------- mix bus


def _one_pole(x: np.ndarray, ms: float, sample_rate: int) -> np.ndarray:
    """A one-pole low-pass along the last axis with time constant ``ms``."""
    from scipy.signal import lfilter

    a = np.exp(-1000.0 / (max(ms, 1e-3) * sample_rate))
    return lfilter([1 - a], [1, -a], x, axis=-1)


def glue_gain(
    mixture: np.ndarray,
    sample_rate: int,
    threshold_db: float,
    ratio: float,
    detector_ms: float,
    smoothing_ms: float,
) -> np.ndarray:
    """A bus compressor's gain curve (time,) from the mixture (time, channels): RMS detector,
    hard-knee gain computer, smoothed gain."""
    power = _one_pole(
        np.mean(np.square(mixture, dtype=np.float64), axis=1), detector_ms, sample_rate
    )
    level_db = 10 * np.log10(power + 1e-12)
    over = np.maximum(level_db - threshold_db, 0.0)
    gain_db = -over * (1 - 1 / ratio)
    return (10 ** (_one_pole(gain_db, smoothing_ms, sample_rate) / 20)).astype(np.float32)


def limiter_gain(
    mixture: np.ndarray, sample_rate: int, ceiling: float, lookahead_ms: float, hold_ms: float
) -> np.ndarray:
    """A look-ahead peak limiter's gain curve (time,): the mixture times it never exceeds
    ``ceiling``.

    The needed gain min(1, ceiling / |x|) is held (minimum over ``hold_ms``) and then
    averaged over ``lookahead_ms`` <= ``hold_ms``: every sample averaged at time t has t in
    its hold window, so the result is at most the gain needed at t (no overshoot).
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    peak = np.max(np.abs(mixture), axis=1)
    needed = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    average = max(1, int(lookahead_ms * sample_rate / 1000)) | 1
    hold = max(average, int(hold_ms * sample_rate / 1000) | 1)
    held = minimum_filter1d(needed, hold, mode="nearest")
    gain = uniform_filter1d(held, average, mode="nearest")
    return np.minimum(gain, needed).astype(np.float32)  # guard against rounding


# ----------------------------------------------------------------------------- speed


def varispeed(window: np.ndarray, factor: float, length: int) -> np.ndarray:
    """Play ``window`` (..., time, channels) ``factor`` times faster: ``length`` samples out.

    Pitch and tempo move together, like a tape machine; the same factor for every stem
    keeps them aligned. Needs ``window`` at least ``ceil((length - 1) * factor) + 1`` long.
    """
    positions = np.arange(length) * factor
    left = np.floor(positions).astype(int)
    frac = (positions - left).astype(np.float32)[:, None]
    right = np.minimum(left + 1, window.shape[-2] - 1)
    return window[..., left, :] * (1 - frac) + window[..., right, :] * frac


# ----------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class Production:
    """Which production effects to draw, how often, and with how much context.

    ``effects``: names from ``EFFECTS``; ``probability`` overrides ``DEFAULT_PROBABILITY``;
    ``context``: samples of audio before the segment that the effects see; ``loudness_db``:
    the mastered RMS level range of the mixture; ``max_speed``: the largest relative speed
    change; ``dry_fraction``: the share of examples that skip production altogether (a
    model should still separate dry recordings).
    """

    effects: tuple[str, ...] = EFFECTS
    probability: Mapping[str, float] = field(default_factory=dict)
    context: int = 11025
    loudness_db: tuple[float, float] = (-24.0, -10.0)
    max_speed: float = 0.06
    dry_fraction: float = 0.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.effects) - set(EFFECTS))
        unknown += sorted(set(self.probability) - set(EFFECTS))
        if unknown:
            raise ConfigError(f"unknown production effect(s) {unknown}; valid: {list(EFFECTS)}")
        bad = {k: v for k, v in self.probability.items() if not 0 <= v <= 1}
        if bad:
            raise ConfigError(f"effect probabilities must be in [0, 1], got {bad}")
        low, high = self.loudness_db
        if not low <= high < 0:
            raise ConfigError(f"loudness_db must be [low, high] dBFS below 0, got {[low, high]}")
        if self.context < 0 or not 0 <= self.max_speed < 0.5:
            raise ConfigError("context must be >= 0 samples and max_speed in [0, 0.5)")
        if not 0 <= self.dry_fraction <= 1:
            raise ConfigError(f"dry_fraction must be in [0, 1], got {self.dry_fraction}")
        object.__setattr__(self, "effects", tuple(self.effects))

    def chance(self, name: str) -> float:
        if name not in self.effects:
            return 0.0
        return float(self.probability.get(name, DEFAULT_PROBABILITY[name]))

    def applies(self, rng: np.random.Generator) -> bool:
        """Draw whether an example is produced (else it stays dry)."""
        return rng.random() >= self.dry_fraction

    def window(self, rng: np.random.Generator, length: int) -> tuple[float, int, int]:
        """Draw the speed factor; return it with the samples to read before the segment start
        and the total window length to read (both in source samples)."""
        factor = 1.0
        if rng.random() < self.chance("speed"):
            factor = float(1 + rng.uniform(-self.max_speed, self.max_speed))
        before = int(np.ceil(self.context * factor))
        total = int(np.ceil((self.context + length - 1) * factor)) + 2
        return factor, before, total

    def process(
        self,
        window: np.ndarray,
        factor: float,
        length: int,
        rng: np.random.Generator,
        sample_rate: int,
    ) -> np.ndarray:
        """Produce stems (sources, window, channels) read with ``window()``'s plan; returns
        the (sources, length, channels) targets. Their sum is the produced mixture."""
        stems = varispeed(window, factor, self.context + length) if factor != 1.0 else window
        stems = stems[:, : self.context + length]
        probability = {name: self.chance(name) for name in STEM_EFFECTS}
        stems = np.stack([process_stem(s, rng, sample_rate, probability) for s in stems])
        stems = self.mix_bus(stems, rng, sample_rate, measure=slice(self.context, None))
        return np.ascontiguousarray(stems[:, self.context :], dtype=np.float32)

    def mix_bus(
        self, stems: np.ndarray, rng: np.random.Generator, sample_rate: int, measure=slice(None)
    ) -> np.ndarray:
        """Glue compression, mastered loudness and a peak limiter, as one gain curve applied
        to every stem. ``measure``: the part whose loudness is set (the segment)."""
        mixture = stems.sum(axis=0)
        level = _rms(mixture[measure])
        if level < SILENT_RMS:
            return stems
        gain = np.ones(stems.shape[1], np.float32)
        if rng.random() < self.chance("glue"):
            gain = glue_gain(
                mixture,
                sample_rate,
                threshold_db=_db(level) - float(rng.uniform(0, 10)),
                ratio=float(rng.uniform(1.5, 4)),
                detector_ms=float(rng.uniform(5, 40)),
                smoothing_ms=float(rng.uniform(20, 200)),
            )
        ceiling = 1.0
        if rng.random() < self.chance("master"):
            target = 10 ** (float(rng.uniform(*self.loudness_db)) / 20)
            gain = gain * (target / max(_rms((mixture * gain[:, None])[measure]), SILENT_RMS))
            ceiling = 10 ** (float(rng.uniform(-1.0, -0.1)) / 20)
        mixture = mixture * gain[:, None]
        if np.max(np.abs(mixture)) > ceiling:
            gain = gain * limiter_gain(
                mixture,
                sample_rate,
                ceiling,
                lookahead_ms=float(rng.uniform(1, 5)),
                hold_ms=float(rng.uniform(5, 80)),
            )
        return stems * gain[None, :, None]


# ----------------------------------------------------------------------------- whole songs

# How a mix engineer treats each stem: the effects a held-out "produced" song gets on it.
ROLE_EFFECTS = {
    "drums": ("eq", "compression", "reverb"),
    "bass": ("eq", "saturation", "compression"),
    "other": ("eq", "saturation", "modulation", "delay", "reverb", "stereo"),
    "vocals": ("eq", "compression", "delay", "reverb"),
}


def produce_song(
    stems: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    sample_rate: int,
    loudness_db: tuple[float, float] = (-14.0, -12.0),
) -> dict[str, np.ndarray]:
    """Mix and master a whole song: each stem through its role's chain (``ROLE_EFFECTS``;
    unknown names get the ``other`` chain, and ``other`` draws saturation half the time),
    then glue compression, a loud master and the limiter on the bus. Returns the produced
    stems (time, channels) float32; their sum is the produced mixture."""
    names = list(stems)
    processed = []
    for name in names:
        role = ROLE_EFFECTS.get(name, ROLE_EFFECTS["other"])
        probability = {e: 1.0 for e in role}
        if "saturation" in role and name not in ("bass",):
            probability["saturation"] = 0.5
        processed.append(
            process_stem(np.asarray(stems[name], np.float32), rng, sample_rate, probability)
        )
    bus = Production(BUS_EFFECTS, {"glue": 1.0, "master": 1.0}, loudness_db=loudness_db)
    mixed = bus.mix_bus(np.stack(processed), rng, sample_rate)
    return {name: mixed[i].astype(np.float32) for i, name in enumerate(names)}

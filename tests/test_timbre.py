"""Timbre augmentation and missing stems (keras_sep.data.timbre) and the sampler using them."""

import numpy as np
import pytest

import keras_sep
from keras_sep.data.cache import cache_tracks
from keras_sep.data.sampler import Augmentation, SegmentSampler
from keras_sep.data.timbre import (
    TIMBRE_EFFECTS,
    Alteration,
    StemPlan,
    apply_filter,
    rate_trick,
    silence_mask,
    waveshape,
)
from keras_sep.data.tracks import toy_tracks
from keras_sep.errors import ConfigError

RATE = 22050
SEGMENT = 4096


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * hz * t)
    return np.stack([x, x], axis=1).astype(np.float32)


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x[:, 0] * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spec)])


def band_energy(x: np.ndarray, low: float, high: float) -> float:
    spec = np.abs(np.fft.rfft(x[:, 0])) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(spec[(f >= low) & (f < high)].sum())


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_pitch_shift_moves_the_pitch_by_the_speed_and_keeps_the_level():
    x = tone(440.0, 1.2)
    up = StemPlan(speed=2 ** (3 / 12))
    y = Alteration.apply(x[: Alteration.read_length(up, RATE)], up, RATE, RATE)
    assert y.shape == (RATE, 2)
    assert abs(peak_hz(y) - 440.0 * 2 ** (3 / 12)) < 3.0
    assert abs(rms(y) - rms(x)) < 0.01 * rms(x)


def test_filter_bank_boosts_and_cuts_where_its_bands_say():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((RATE, 2)) * 0.1
    bands = ((100.0, -12.0), (300.0, -12.0), (2000.0, 12.0), (8000.0, 12.0))
    y = apply_filter(noise, bands, (), RATE)
    ratio_low = band_energy(y, 100, 300) / band_energy(noise, 100, 300)
    ratio_high = band_energy(y, 2000, 8000) / band_energy(noise, 2000, 8000)
    assert ratio_low < 10 ** (-10 / 10) and ratio_high > 10 ** (10 / 10)
    # A resonance alone lifts its own band and leaves far bands alone.
    y = apply_filter(noise, (), ((1000.0, 12.0, 8.0),), RATE)
    assert band_energy(y, 980, 1020) > 10 * band_energy(noise, 980, 1020)
    assert band_energy(y, 4000, 6000) == pytest.approx(band_energy(noise, 4000, 6000), rel=0.05)


@pytest.mark.parametrize("kind", ["drive", "bend", "fold"])
def test_waveshaping_adds_harmonics_to_a_pure_tone(kind):
    x = tone(200.0)
    y = waveshape(x.astype(np.float64), kind, 3.0 if kind != "bend" else 1.5)
    harmonics = sum(band_energy(y, 200 * k - 5, 200 * k + 5) for k in (2, 3, 4, 5))
    assert harmonics > 1e-3 * band_energy(y, 195, 205)
    assert band_energy(x, 395, 1005) < 1e-6 * band_energy(x, 195, 205)
    assert abs(float(np.mean(y))) < 1e-3  # no DC offset


def test_rate_tricks_alias_or_dull_a_tone():
    x = tone(3000.0).astype(np.float64)
    held = rate_trick(x, "hold", 4)  # 5512 Hz: the 3 kHz tone aliases to 2512 Hz
    assert band_energy(held, 2500, 2525) > 0.05 * band_energy(held, 2990, 3010)
    dull = rate_trick(x, "band", 4)  # nothing above 2756 Hz survives
    assert rms(dull) < 1e-3 * rms(x)


def test_silence_mask_silences_its_span_and_fades():
    mask = silence_mask(1000, (0.5, 1.0), 10000)
    assert np.all(mask[500:] == 0) and np.all(mask[:400] == 1)
    assert 0 < mask[450] < 1 and np.all(np.diff(mask[:500]) <= 0)
    assert np.all(silence_mask(1000, (0.0, 1.0), 10000) == 0)


def test_alteration_checks_its_options():
    with pytest.raises(ConfigError, match="unknown timbre"):
        Alteration(("pitchshift",))
    with pytest.raises(ConfigError, match="missing"):
        Alteration(missing={"vocals": 1.5})
    assert not Alteration() and Alteration(missing={"vocals": 0.3})


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    return cache_tracks(
        toy_tracks(3, seed=7, seconds=2.0, sample_rate=RATE), tmp_path_factory.mktemp("c"), RATE
    )


def sampler(tracks, names, seed=3, **options):
    augmentation = Augmentation.from_names(["polarity", "remix", *names], **options)
    return SegmentSampler(tracks, keras_sep.SOURCES, SEGMENT, seed=seed, augmentation=augmentation)


@pytest.mark.parametrize("extra", [(), ("production",)])
def test_timbre_examples_sum_to_the_mixture_are_deterministic_and_differ(tracks, extra):
    every = {n: 1.0 for n in TIMBRE_EFFECTS}
    altered = sampler(tracks, ("timbre", *extra), timbre_probability=every)
    plain = sampler(tracks, extra)
    for n in range(4):
        mixture, targets = altered.example(n)
        assert targets.shape == (4, SEGMENT, 2) and targets.dtype == np.float32
        np.testing.assert_array_equal(mixture, targets.sum(axis=0, dtype=np.float32))
        np.testing.assert_array_equal(altered.example(n)[1], targets)
        assert not np.allclose(plain.example(n)[1], targets)


def test_missing_vocals_are_silent_targets_and_absent_from_the_mixture(tracks):
    always = sampler(tracks, ("production",), missing={"vocals": 1.0}, dry_fraction=0.5)
    vocals = keras_sep.SOURCES.index("vocals")
    whole = 0
    for n in range(12):
        mixture, targets = always.example(n)
        np.testing.assert_array_equal(mixture, targets.sum(axis=0, dtype=np.float32))
        level = np.sqrt(np.mean(targets[vocals] ** 2, axis=1)).max()
        quarter = SEGMENT // 4
        # Whole-segment gaps silence everything; a section gap silences a start or an end.
        edges = [np.abs(targets[vocals, :quarter]).max(), np.abs(targets[vocals, -quarter:]).max()]
        assert min(edges) == 0.0
        whole += level == 0.0
    assert 0 < whole < 12
    never = sampler(tracks, ("production",), missing={"bass": 1.0})
    assert np.abs(never.example(0)[1][vocals]).max() > 0

"""Production augmentation: each effect does what it should, and examples stay consistent."""

import numpy as np
import pytest

import keras_sep
from keras_sep.data.cache import CachedTrack, cache_tracks
from keras_sep.data.production import (
    BUILDERS,
    EFFECTS,
    Production,
    glue_gain,
    limiter_gain,
    process_stem,
    varispeed,
)
from keras_sep.data.sampler import Augmentation, SegmentSampler
from keras_sep.data.tracks import toy_tracks
from keras_sep.errors import ConfigError, DataError
from keras_sep.training import pipeline

RATE = 22050
SEGMENT = 4096


def only(name: str) -> dict:
    """Effect probabilities that draw ``name`` and nothing else."""
    return {n: 1.0 if n == name else 0.0 for n in EFFECTS}


def effect(name: str, audio: np.ndarray, seed: int = 0) -> np.ndarray:
    """``audio`` (time, channels) through the single stem effect ``name``."""
    builders = {name: BUILDERS[name]} if name in BUILDERS else {}
    return process_stem(audio, np.random.default_rng(seed), RATE, only(name), builders)


def band_db(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio.mean(axis=1))) ** 2
    f = np.fft.rfftfreq(len(audio), 1 / RATE)
    return 10 * np.log10(spectrum[(f >= low) & (f < high)].sum() + 1e-12)


def noise(seconds: float = 1.0, seed: int = 0, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((int(seconds * RATE), channels))).astype(np.float32)


def burst() -> np.ndarray:
    """0.2 s of noise, then 0.8 s of silence."""
    x = noise()
    x[int(0.2 * RATE) :] = 0
    return x


def short_term_db(audio: np.ndarray, window: int = 1024) -> np.ndarray:
    frames = audio[: len(audio) // window * window].reshape(-1, window, audio.shape[1])
    return 10 * np.log10(np.mean(frames**2, axis=(1, 2)) + 1e-12)


def test_eq_changes_the_spectrum_not_the_level():
    x = noise()
    bands = [(50, 200), (200, 800), (800, 3000), (3000, 10000)]
    for seed in range(5):
        y = effect("eq", x, seed)
        change = [abs(band_db(y, *b) - band_db(x, *b)) for b in bands]
        assert max(change) > 1.0, f"seed {seed}: band changes {change}"
        np.testing.assert_allclose(np.std(y), np.std(x), rtol=0.01)


def test_compression_narrows_the_dynamic_range():
    x = noise()
    x[: RATE // 2] *= 0.05  # a quiet half, then a loud half: 26 dB apart
    for seed in range(5):
        y = effect("compression", x, seed)
        before, after = short_term_db(x), short_term_db(y)
        assert np.ptp(after) < np.ptp(before) - 1.0


def test_saturation_adds_harmonics():
    t = np.arange(RATE) / RATE
    sine = np.repeat(0.3 * np.sin(2 * np.pi * 220 * t)[:, None], 2, axis=1).astype(np.float32)
    for seed in range(5):
        y = effect("saturation", sine, seed)
        harmonics = band_db(y, 400, 5000) - band_db(y, 200, 240)
        assert harmonics > band_db(sine, 400, 5000) - band_db(sine, 200, 240) + 20


@pytest.mark.parametrize("name", ["reverb", "delay"])
def test_reverb_and_delay_leave_a_tail_after_the_sound_stops(name):
    x = burst()
    tail = slice(int(0.35 * RATE), int(0.7 * RATE))
    for seed in range(5):
        y = effect(name, x, seed)
        assert np.mean(y[tail] ** 2) > 1e-4 * np.mean(y[: int(0.2 * RATE)] ** 2)


def test_modulation_changes_the_waveform():
    x = noise()
    for seed in range(5):
        y = effect("modulation", x, seed)
        correlation = np.corrcoef(x[:, 0], y[:, 0])[0, 1]
        assert correlation < 0.98


def test_stereo_changes_the_channel_correlation():
    mid, side = noise(channels=1, seed=1), noise(channels=1, seed=2)
    x = np.concatenate([mid + 0.3 * side, mid - 0.3 * side], axis=1)
    before = np.corrcoef(x.T)[0, 1]
    changes = [abs(np.corrcoef(effect("stereo", x, s).T)[0, 1] - before) for s in range(8)]
    assert max(changes) > 0.1


def test_varispeed_scales_frequency_and_keeps_stems_aligned():
    t = np.arange(2 * RATE) / RATE
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    stems = np.stack([np.stack([tone, tone], axis=1)] * 2)
    out = varispeed(stems, 1.05, RATE)
    np.testing.assert_array_equal(out[0], out[1])
    peak_hz = np.argmax(np.abs(np.fft.rfft(out[0, :, 0])))  # one second: bins are 1 Hz
    assert abs(peak_hz - 1050) <= 2


def test_glue_compresses_and_the_limiter_never_overshoots():
    x = noise() * 5
    x[: RATE // 2] *= 0.1
    gain = glue_gain(x, RATE, threshold_db=-20, ratio=4, detector_ms=10, smoothing_ms=50)
    assert gain.shape == (RATE,) and np.all(gain <= 1)
    assert np.ptp(short_term_db(x * gain[:, None])) < np.ptp(short_term_db(x)) - 3
    ceiling = 0.5
    limited = x * limiter_gain(x, RATE, ceiling, lookahead_ms=2, hold_ms=40)[:, None]
    assert np.max(np.abs(limited)) <= ceiling + 1e-6
    assert np.max(np.abs(limited)) > 0.9 * ceiling


def test_silent_stems_stay_silent_through_every_effect():
    x = np.zeros((RATE, 2), np.float32)
    for seed in range(3):
        all_on = {n: 1.0 for n in EFFECTS}
        assert not np.any(process_stem(x, np.random.default_rng(seed), RATE, all_on))


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    return cache_tracks(
        toy_tracks(3, seed=7, seconds=2.0, sample_rate=RATE), tmp_path_factory.mktemp("c"), RATE
    )


def produced(tracks, names=("production",), seed=3, **options):
    augmentation = Augmentation.from_names(["channel_swap", "polarity", "remix", *names], **options)
    return SegmentSampler(tracks, keras_sep.SOURCES, SEGMENT, seed=seed, augmentation=augmentation)


def test_produced_examples_sum_to_the_mixture_and_are_deterministic(tracks):
    sampler = produced(tracks, probability={n: 1.0 for n in EFFECTS})
    for n in range(6):
        mixture, targets = sampler.example(n)
        assert targets.shape == (4, SEGMENT, 2) and targets.dtype == np.float32
        np.testing.assert_array_equal(mixture, targets[0] + targets[1] + targets[2] + targets[3])
        assert np.max(np.abs(mixture)) <= 1.0
        again = sampler.example(n)
        np.testing.assert_array_equal(again[1], targets)
    assert not np.allclose(sampler.example(0)[0], sampler.example(1)[0])
    # Production is really on: the same draw without it gives other audio.
    dry = SegmentSampler(tracks, keras_sep.SOURCES, SEGMENT, seed=3)
    assert not np.allclose(dry.example(0)[0], mixture)


def test_mastered_loudness_lands_in_the_asked_range(tracks):
    sampler = produced(tracks, ["master"], probability={"master": 1.0}, loudness_db=(-16, -12))
    for n in range(8):
        mixture, _ = sampler.example(n)
        rms_db = 10 * np.log10(np.mean(mixture**2))
        # The limiter may take off a little after the loudness gain, never add.
        assert -19 < rms_db < -11.9, rms_db


def test_a_silent_stem_stays_silent_in_a_produced_example(tracks):
    silent = [
        CachedTrack(t.name, t.rate, {**t.sources, "bass": np.zeros_like(t.sources["bass"])})
        for t in tracks
    ]
    sampler = produced(silent, probability={n: 1.0 for n in EFFECTS})
    for n in range(4):
        _, targets = sampler.example(n)
        assert not np.any(targets[keras_sep.SOURCES.index("bass")])


def test_both_pipelines_draw_the_same_produced_batches(tracks):
    sampler = produced(tracks)
    tf_batches = list(pipeline.tf_dataset(sampler, 2, start_batch=1, num_batches=2))
    py_batches = pipeline.TrainBatches(sampler, 2, start_batch=1, num_batches=2)
    for (tf_x, tf_y), i in zip(tf_batches, range(2), strict=True):
        py_x, py_y = py_batches[i]
        np.testing.assert_array_equal(tf_x.numpy(), py_x)
        for source in keras_sep.SOURCES:
            np.testing.assert_array_equal(tf_y[source].numpy(), py_y[source])
    valid = SegmentSampler(
        tracks, keras_sep.SOURCES, SEGMENT, augmentation=Augmentation(production=Production())
    )
    first = valid.validation_example(0, 100)
    np.testing.assert_array_equal(valid.validation_example(0, 100)[0], first[0])
    dry = SegmentSampler(tracks, keras_sep.SOURCES, SEGMENT)
    assert not np.allclose(dry.validation_example(0, 100)[0], first[0])


def test_bad_production_settings_are_refused():
    with pytest.raises(DataError, match="unknown augmentation"):
        Augmentation.from_names(["reverbb"])
    with pytest.raises(ConfigError, match="unknown production effect"):
        Augmentation.from_names(["reverb"], probability={"chorus": 0.5})
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        Augmentation.from_names(["reverb"], probability={"reverb": 2})
    with pytest.raises(ConfigError, match="loudness"):
        Augmentation.from_names(["master"], loudness_db=(-10, 3))


@pytest.mark.slow
def test_a_produced_test_set_is_mastered_loud_and_sums_exactly(tmp_path):
    from keras_sep.audio import read_audio
    from keras_sep.data import toy
    from keras_sep.training.produce_songs import main

    dry = toy.write_musdb_tree(tmp_path / "dry", train=0, valid=0, test=2, seconds=3.0)
    assert main([str(dry), str(tmp_path / "wet"), "--seed", "5"]) == 0
    for i in range(2):
        folder = tmp_path / "wet" / "test" / toy.song_name(i)
        stems = {s: read_audio(folder / f"{s}.wav")[0] for s in keras_sep.SOURCES}
        mixture, rate = read_audio(folder / "mixture.wav")
        np.testing.assert_allclose(sum(stems.values()), mixture, atol=1e-6)
        rms_db = 10 * np.log10(np.mean(mixture**2))
        assert -16 < rms_db < -11.9 and np.max(np.abs(mixture)) <= 1.0
        dry_vocals = read_audio(dry / "test" / toy.song_name(i) / "vocals.wav")[0]
        assert not np.allclose(
            stems["vocals"] / np.std(stems["vocals"]), dry_vocals / np.std(dry_vocals), atol=0.05
        )
    # Fixed per song: a second run writes the same audio.
    assert main([str(dry), str(tmp_path / "again"), "--seed", "5"]) == 0
    a = read_audio(tmp_path / "wet" / "test" / toy.song_name(0) / "mixture.wav")[0]
    b = read_audio(tmp_path / "again" / "test" / toy.song_name(0) / "mixture.wav")[0]
    np.testing.assert_array_equal(a, b)


def test_dry_fraction_leaves_that_share_of_examples_dry(tracks):
    dry = produced(tracks, names=())  # the same gains, flips and remixes, no effects
    half = produced(tracks, dry_fraction=0.5)
    same = [np.array_equal(half.example(n)[0], dry.example(n)[0]) for n in range(40)]
    assert 8 <= sum(same) <= 32  # about half, and never all or none
    assert not any(
        np.array_equal(produced(tracks).example(n)[0], dry.example(n)[0]) for n in range(8)
    )

"""The built-in toy songs: deterministic, well-formed, four distinct stems, readable by musdb."""

import shutil

import numpy as np
import pytest
import soundfile as sf

from keras_sep.data import toy
from keras_sep.files import RECORD

RATE = 22050
SECONDS = 6.0
SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def songs() -> dict[int, dict[str, np.ndarray]]:
    return {seed: toy.generate_song(seed, SECONDS, RATE) for seed in SEEDS}


def band_share(x: np.ndarray, rate: int, low: float = 0.0, high: float = np.inf) -> float:
    """Share of the stem's energy between ``low`` and ``high`` Hz."""
    power = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / rate)
    return float(power[(f >= low) & (f < high)].sum() / power.sum())


def peak_concentration(x: np.ndarray, rate: int) -> float:
    """Share of the energy in the loudest 10% of 5 ms frames: high for hits that die away."""
    hop = rate // 200
    mono = x.mean(axis=1)
    energy = np.sort(np.mean(mono[: len(mono) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    return float(energy[-len(energy) // 10 :].sum() / energy.sum())


def envelope(x: np.ndarray, rate: int) -> np.ndarray:
    hop = rate // 20
    mono = x.mean(axis=1)
    return np.sqrt(np.mean(mono[: len(mono) // hop * hop].reshape(-1, hop) ** 2, axis=1))


def test_sources_and_names():
    assert toy.SOURCES == ("vocals", "drums", "bass", "other")
    assert toy.song_name(0) == "Toy Song 001"
    assert len({toy.song_name(i) for i in range(300)}) == 300


def test_same_seed_same_song_other_seed_other_song():
    a, b = toy.generate_song(5, 2.0, 8000), toy.generate_song(5, 2.0, 8000)
    c = toy.generate_song(6, 2.0, 8000)
    for name in toy.SOURCES:
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.allclose(a[name], c[name], atol=1e-3), name


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
@pytest.mark.parametrize("seconds", [0.5, 1.37])
def test_shapes_and_dtypes(rate, seconds):
    stems = toy.generate_song(11, seconds, rate)
    assert tuple(stems) == toy.SOURCES
    for name, x in stems.items():
        assert x.shape == (round(seconds * rate), 2), name
        assert x.dtype == np.float32, name
        assert x.flags.c_contiguous, name
        assert np.isfinite(x).all(), name


def test_same_music_at_any_rate():
    # The score does not depend on the rate: only the sampling does.
    low, high = toy.generate_song(2, 4.0, 16000), toy.generate_song(2, 4.0, 44100)
    for name in toy.SOURCES:
        r = np.corrcoef(envelope(low[name], 16000), envelope(high[name], 44100))[0, 1]
        assert r > 0.95, (name, r)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        toy.generate_song(0, seconds=0)
    with pytest.raises(ValueError, match="positive"):
        toy.generate_song(0, sample_rate=-1)
    with pytest.raises(ValueError, match="one sample"):
        toy.generate_song(0, seconds=1e-6, sample_rate=8000)


def test_levels_no_clipping_every_stem_present(songs):
    for seed, stems in songs.items():
        mixture = sum(stems.values())
        assert 0.5 < np.abs(mixture).max() <= 0.9 + 1e-6, seed
        rms = {name: float(np.sqrt(np.mean(x**2))) for name, x in stems.items()}
        for name, x in stems.items():
            assert np.abs(x).max() < 1.0, (seed, name)
            assert rms[name] > 0.25 * max(rms.values()), (seed, name, rms)
        # Panned stereo, not two copies of one channel.
        assert not np.allclose(mixture[:, 0], mixture[:, 1], atol=1e-3), seed


def test_stems_are_spectrally_distinct(songs):
    for seed, stems in songs.items():
        low = {name: band_share(x, RATE, high=250.0) for name, x in stems.items()}
        assert low["bass"] > 0.8, (seed, low)
        assert low["other"] < 0.25 and low["vocals"] < 0.6, (seed, low)
        assert band_share(stems["bass"], RATE, low=1000.0) < 0.02, seed
        # Vocals live where a voice's fundamentals and formants are: nothing below the melody.
        assert band_share(stems["vocals"], RATE, high=150.0) < 0.01, seed
        assert band_share(stems["vocals"], RATE, 150.0, 4000.0) > 0.9, seed
        # Hi-hats, snare wires and cymbals make the drums the broadband stem.
        high = {name: band_share(x, RATE, low=4000.0) for name, x in stems.items()}
        assert high["drums"] > 0.02, (seed, high)
        assert high["drums"] > 3 * max(v for k, v in high.items() if k != "drums"), (seed, high)


def test_drums_are_the_most_transient(songs):
    mean = {
        name: np.mean([peak_concentration(stems[name], RATE) for stems in songs.values()])
        for name in toy.SOURCES
    }
    assert mean["drums"] > 1.2 * max(v for k, v in mean.items() if k != "drums"), mean


def test_songs_vary_with_the_seed(songs):
    # Tempo, key and timbres change: the stems' spectra differ clearly between songs.
    centroids = []
    for stems in songs.values():
        x = stems["other"].mean(axis=1)
        power = np.abs(np.fft.rfft(x)) ** 2
        centroids.append(float((power * np.fft.rfftfreq(len(x), 1.0 / RATE)).sum() / power.sum()))
    assert max(centroids) > 1.3 * min(centroids), centroids


@pytest.mark.slow
def test_musdb_reads_a_written_tree(tmp_path):
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("musdb needs ffmpeg and ffprobe on PATH")
    musdb = pytest.importorskip("musdb")
    rate, seconds, seed = 44100, 3.0, 7
    root = toy.write_musdb_tree(
        tmp_path / "toy", train=2, valid=1, test=1, seconds=seconds, sample_rate=rate, seed=seed
    )
    assert root == tmp_path / "toy"
    expected = {
        ("train", "train"): [toy.song_name(0), toy.song_name(1)],
        ("train", "valid"): [toy.song_name(2)],
        ("test", None): [toy.song_name(3)],
    }
    tracks = []
    for (subset, split), names in expected.items():
        db = musdb.DB(
            root=str(root), is_wav=True, subsets=subset, split=split, setup_file="setup.yaml"
        )
        assert [t.name for t in db.tracks] == names, (subset, split)
        tracks += db.tracks
    for track in tracks:
        assert track.rate == rate
        assert track.samples == round(seconds * rate)
        assert sorted(track.sources) == sorted(toy.SOURCES)

    # musdb decodes each file with an ffmpeg process (slow): decode one song through it.
    track = tracks[2]
    mixture, *stems = track.stems  # the mixture, then the sources in musdb's stem order
    names = sorted(track.sources, key=lambda name: track.sources[name].stem_id)
    assert mixture.shape == (round(seconds * rate), 2)
    np.testing.assert_allclose(mixture, sum(stems), rtol=0, atol=1.5 / 32768)
    # Song 2 of the tree is generate_song(seed * 1000 + 2), rounded to 16 bits.
    generated = toy.generate_song(seed * 1000 + 2, seconds, rate)
    for name, audio in zip(names, stems, strict=True):
        np.testing.assert_allclose(audio, generated[name], rtol=0, atol=0.51 / 32768)

    # Every song: the 16-bit mixture is exactly the sum of the 16-bit stems.
    for path in root.glob("*/*/mixture.wav"):
        folder = path.parent
        mixture = sf.read(path, dtype="int16")[0].astype(np.int32)
        total = sum(sf.read(folder / f"{n}.wav", dtype="int16")[0].astype(np.int32) for n in names)
        np.testing.assert_array_equal(mixture, total)
    # Nothing hidden but keras-sep's records of what it wrote (no temporary files).
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".") and p.name != RECORD]
    assert not leftovers, leftovers


def test_missing_stems_are_silent_per_seed_and_leave_the_rest_alone():
    plain = {seed: toy.generate_song(seed, 4.0, 8000) for seed in range(12)}
    dropped = {seed: toy.generate_song(seed, 4.0, 8000, missing=0.5) for seed in range(12)}
    no_vocals = bass_rests = 0
    for seed, stems in dropped.items():
        # Deterministic per seed, and the other stems are the song without the option (up
        # to the one gain that keeps the mixture's peak).
        again = toy.generate_song(seed, 4.0, 8000, missing=0.5)
        for name in toy.SOURCES:
            np.testing.assert_array_equal(stems[name], again[name])
        scale = np.abs(plain[seed]["drums"]).max() / np.abs(stems["drums"]).max()
        np.testing.assert_allclose(stems["drums"] * scale, plain[seed]["drums"], atol=1e-5)
        no_vocals += not np.any(stems["vocals"])
        gap = envelope(stems["bass"], 8000) == 0
        bass_rests += bool(gap.sum() >= 15)  # a section of at least 0.75 s (a quarter song)
        if not gap.any():
            np.testing.assert_allclose(stems["bass"] * scale, plain[seed]["bass"], atol=1e-5)
    assert 0 < no_vocals < 12 and 0 < bass_rests < 12
    assert all(np.any(s["vocals"]) for s in plain.values())
    always = toy.generate_song(3, 2.0, 8000, missing=1.0)
    assert not np.any(always["vocals"]) and np.any(always["drums"])

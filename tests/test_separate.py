"""The overlap-add routine, audio I/O and their errors."""

import os

import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep.audio import read_audio, resample, write_audio, write_stems
from keras_sep.config import DilatedConfig, WaveUNetConfig
from keras_sep.errors import AudioError
from keras_sep.separate import separate, separate_waveform, window

SEGMENT = 1024


class Scaler:
    """An identity-like model: source k is (k + 1) x the input, any batch of segments."""

    def __init__(self, cfg):
        self.arch_config = cfg
        self.calls = []

    def predict_on_batch(self, x):
        self.calls.append(x.shape)
        return {s: x * (k + 1) for k, s in enumerate(self.arch_config.sources)}


@pytest.fixture
def scaler():
    return Scaler(WaveUNetConfig.preset("tiny", segment_length=SEGMENT))


@pytest.mark.parametrize("length", [1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 10 * SEGMENT + 1])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_identity_like_model_reconstructs_any_length(scaler, length, overlap):
    x = np.random.default_rng(length).uniform(-1, 1, (length, 2)).astype("float32")
    y = separate(scaler, x, overlap=overlap, batch_size=3)
    for k, source in enumerate(scaler.arch_config.sources):
        assert y[source].shape == x.shape
        np.testing.assert_allclose(y[source], x * (k + 1), atol=1e-5)
    # Every batch has the same shape, so a compiled model never retraces.
    assert {shape for shape in scaler.calls} == {(3, SEGMENT, 2)}


def test_window_is_positive_and_crossfades():
    w = window(100, 20)
    assert w.min() > 0 and w.max() == 1
    np.testing.assert_allclose(w[:20] + w[-20:], 1.0, atol=1e-6)  # overlapping ramps sum to 1


def test_segments_are_rounded_to_valid_lengths(scaler):
    separate(scaler, np.full((5000, 2), 0.1, "float32"), segment=1000, batch_size=1)
    assert scaler.calls[0] == (1, 1008, 2)  # tiny Wave-U-Net lengths are multiples of 16


def test_real_model_outputs_still_sum_to_the_mixture():
    model = keras_sep.build("dilated", preset="tiny", segment_length=2048)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (7000, 2)).astype("float32")
    y = separate(model, x, batch_size=2)
    assert list(y) == list(model.sources)
    # Overlap-add is linear with weights summing to one: energy conservation survives it.
    np.testing.assert_allclose(sum(y.values()), x, atol=1e-5)


def test_mono_in_mono_out_and_rate_round_trip(scaler):
    rate = 32000
    t = np.arange(int(0.5 * rate)) / rate
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32")[:, None]
    result = separate_waveform(scaler, mono, rate)
    assert result.sample_rate == rate and result.stems["vocals"].shape == mono.shape
    # 32 kHz -> 22.05 kHz -> 32 kHz keeps a 440 Hz tone (away from the filter's edges).
    middle = slice(1000, -1000)
    np.testing.assert_allclose(result.stems["vocals"][middle], mono[middle], atol=2e-3)
    np.testing.assert_allclose(result.stems["drums"][middle], 2 * mono[middle], atol=4e-3)


def test_resample_lengths_and_identity():
    x = np.random.default_rng(0).standard_normal((44100, 2)).astype("float32")
    assert resample(x, 44100, 22050).shape == (22050, 2)
    assert resample(x, 44100, 44100) is x


def test_separate_rejects_wrong_channels(scaler):
    with pytest.raises(ValueError, match="mixture must be"):
        separate(scaler, np.zeros((100, 3), "float32"))


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_read_formats(tmp_path, ext):
    x = (0.3 * np.sin(np.linspace(0, 2000, 22050))).astype("float32")
    sf.write(tmp_path / f"a.{ext}", np.stack([x, -x], 1), 22050)
    audio, rate = read_audio(tmp_path / f"a.{ext}")
    assert rate == 22050 and audio.shape[1] == 2 and audio.dtype == np.float32
    assert abs(audio.shape[0] - 22050) < 2000  # mp3 pads with encoder delay


def test_tensorflow_io_decoder_matches_soundfile(tmp_path):
    """tensorflow-io's ops load and decode with the pinned TensorFlow (FACTS.md)."""
    pytest.importorskip("tensorflow_io")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (4000, 2)).astype("float32")
    write_audio(tmp_path / "a.flac", x, 16000)
    ours, _ = read_audio(tmp_path / "a.flac")
    theirs, rate = read_audio(tmp_path / "a.flac", decoder="tfio")
    assert rate == 16000
    np.testing.assert_allclose(theirs, ours, atol=1e-6)


def _write(path, data):
    path.write_bytes(data) if isinstance(data, bytes) else sf.write(path, *data)
    return path


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("empty.wav", b"", "empty"),
        ("text.wav", b"not audio at all" * 10, "can decode"),
        ("nan.wav", (np.full((2000, 2), np.nan, "float32"), 22050, "FLOAT"), "NaN"),
        ("short.wav", (np.zeros((50, 2), "float32"), 22050), "too short"),
    ],
)
def test_bad_audio_errors(tmp_path, name, data, message):
    with pytest.raises(AudioError, match=message):
        read_audio(_write(tmp_path / name, data))


def test_missing_file_and_too_many_channels(tmp_path, scaler):
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="6 channels"):
        separate_waveform(scaler, np.zeros((22050, 6), "float32"), 22050)


def test_writes_are_atomic(tmp_path):
    good = np.zeros((1000, 2), "float32")
    write_stems(tmp_path / "song", {"vocals": good, "drums": good}, 22050)
    before = sorted(p.name for p in (tmp_path / "song").iterdir())
    umask = os.umask(0)
    os.umask(umask)
    # Temporary files are private; the published ones get the usual permissions.
    assert (tmp_path / "song" / "vocals.wav").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "song").stat().st_mode & 0o777 == 0o777 & ~umask
    with pytest.raises(ValueError):  # the second stem cannot be written (3-D array)
        write_stems(tmp_path / "song", {"vocals": good, "drums": np.zeros((2, 2, 2))}, 22050)
    # The previous complete set is untouched and nothing partial is left anywhere.
    assert sorted(p.name for p in (tmp_path / "song").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]
    with pytest.raises(AudioError, match="bit depths"):
        write_audio(tmp_path / "x.flac", good, 22050, bit_depth="float")
    assert not (tmp_path / "x.flac").exists()


def test_pcm_output_is_clipped_not_wrapped(tmp_path):
    loud = np.full((100, 1), 1.5, "float32")
    write_audio(tmp_path / "loud.wav", loud, 22050)
    audio, _ = sf.read(tmp_path / "loud.wav", dtype="float32")
    assert audio.min() > 0.99


def test_dilated_model_takes_any_segment_length():
    cfg = DilatedConfig.preset("tiny", segment_length=1000)
    assert cfg.valid_length(1001) == 1001

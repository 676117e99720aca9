"""The overlap-add routine, audio I/O and their errors."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep.audio import (
    BLOCK_FRAMES,
    Resampler,
    read_audio,
    resample,
    sound_format,
    wav_data_frames,
    write_audio,
    write_stems,
)
from keras_sep.config import DilatedConfig, WaveUNetConfig
from keras_sep.errors import AudioError, AudioWarning, MissingDependencyError
from keras_sep.separate import (
    predict_views,
    separate,
    separate_file,
    separate_to_folder,
    separate_waveform,
    tta_views,
    views_together,
    window,
)

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
    # Every call has the same shape, so a compiled model never retraces: a Wave-U-Net's
    # four TTA views of a batch of 3 go through the model in one call (views_together).
    assert {shape for shape in scaler.calls} == {(3 * 4, SEGMENT, 2)}


class Lopsided(Scaler):
    """Neither swap- nor sign-symmetric: the channels are weighted 1 and 2, plus a bias."""

    def predict_on_batch(self, x):
        y = super().predict_on_batch(x)
        return {s: v * np.array([1.0, 2.0], "float32") + 0.01 for s, v in y.items()}


@pytest.mark.parametrize("tta", [2, 3, 4])
def test_tta_averages_the_stems_of_swapped_and_inverted_mixtures(tta):
    model = Lopsided(WaveUNetConfig.preset("tiny", segment_length=SEGMENT))
    x = np.random.default_rng(tta).uniform(-1, 1, (5 * SEGMENT + 7, 2)).astype("float32")
    got = separate(model, x, overlap=0.25, batch_size=2, tta=tta)
    calls = list(model.calls)
    # The same by hand: one pass per view, each transformed back, then the mean.
    views = []
    for swap, invert in [(False, False), (True, False), (False, True), (True, True)][:tta]:
        y = x[:, ::-1] if swap else x
        y = separate(
            model, np.ascontiguousarray(-y if invert else y), overlap=0.25, batch_size=2, tta=1
        )
        y = {s: -v if invert else v for s, v in y.items()}
        views.append({s: v[:, ::-1] if swap else v for s, v in y.items()})
    # The views of a batch went through the model in one call: as many segments as the
    # tta single passes, in 1/tta as many calls.
    assert {shape[0] for shape in calls} == {2 * tta}
    assert len(calls) * tta == len(model.calls) - len(calls)
    for source in model.arch_config.sources:
        np.testing.assert_allclose(got[source], np.mean([v[source] for v in views], 0), atol=1e-5)
    # The views differ, so the average is not any single pass.
    assert not np.allclose(got["vocals"], views[0]["vocals"], atol=1e-3)


def test_views_in_one_call_equal_views_one_by_one():
    """The bundled model (a Wave-U-Net) takes its views in one call; one call per view
    gives the same stems, and the dilated models keep one call per view."""
    model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    assert views_together(model.arch_config)
    assert not views_together(DilatedConfig.preset("tiny"))
    segment = model.arch_config.valid_length(model.arch_config.segment_length)
    batch = np.random.default_rng(0).uniform(-0.5, 0.5, (2, segment, 2)).astype("float32")
    views = tta_views(2, 4)
    one_call = predict_views(model, batch, views, together=True)
    one_by_one = predict_views(model, batch, views, together=False)
    for source, stem in one_by_one.items():
        np.testing.assert_allclose(one_call[source], stem, atol=1e-6, rtol=0)


def test_default_batch_is_four_segments_for_wave_u_net_and_two_for_dilated_models():
    """Without ``batch_size``, a Wave-U-Net's 4 segments x 4 views share one call of 16;
    a dilated model runs its views one by one, 2 segments a call; full batches either way."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (5 * SEGMENT, 2)).astype("float32")
    wave_u_net = Scaler(WaveUNetConfig.preset("tiny", segment_length=SEGMENT))
    dilated = Scaler(DilatedConfig.preset("tiny", segment_length=SEGMENT))
    for model, call in [(wave_u_net, 16), (dilated, 2)]:
        y = separate(model, x, overlap=0.0)
        assert {shape[0] for shape in model.calls} == {call}
        np.testing.assert_allclose(y[model.arch_config.sources[0]], x, atol=1e-6)
    assert len(wave_u_net.calls) == 2 and len(dilated.calls) == 3 * 4  # 5 segments, 4 views


def test_batch_size_does_not_change_a_dilated_models_stems():
    """The default batch of 2 gives a real dilated model the stems of batch 4."""
    model = keras_sep.build("dilated_dense", preset="tiny")
    segment = model.arch_config.valid_length(model.arch_config.segment_length)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (5 * segment, 2)).astype("float32")
    default, four = separate(model, x, tta=2), separate(model, x, tta=2, batch_size=4)
    for source, stem in four.items():
        np.testing.assert_allclose(default[source], stem, atol=1e-6, rtol=0)


def test_tta_views_fit_the_channel_count():
    assert tta_views(2, 4) == [(False, False), (True, False), (False, True), (True, True)]
    assert tta_views(1, 2) == [(False, False), (False, True)]
    for channels, tta in [(1, 3), (2, 5), (2, 0)]:
        with pytest.raises(ValueError, match="tta must be from 1 to"):
            tta_views(channels, tta)


def test_window_is_positive_and_crossfades():
    w = window(100, 20)
    assert w.min() > 0 and w.max() == 1
    np.testing.assert_allclose(w[:20] + w[-20:], 1.0, atol=1e-6)  # overlapping ramps sum to 1


def test_segments_are_rounded_to_valid_lengths(scaler):
    separate(scaler, np.full((5000, 2), 0.1, "float32"), segment=1000, batch_size=1, tta=1)
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


@pytest.mark.parametrize(
    "rates",
    [(44100, 22050), (22050, 44100), (48000, 22050), (22050, 48000), (8000, 22050), (44099, 22050)],
)
def test_resample_is_scipys_polyphase_filter(rates):
    # Our NumPy products against scipy's own resample_poly, short and long inputs; the last
    # pair has 22050 output phases, more than MAX_PHASES, and goes to scipy itself.
    from math import gcd

    from scipy.signal import resample_poly

    up, down = rates[1] // gcd(*rates), rates[0] // gcd(*rates)
    for length in (1, 3, 40, 30011):
        x = np.random.default_rng(length).uniform(-1, 1, (length, 2)).astype("float32")
        got = resample(x, *rates)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, resample_poly(x, up, down, axis=0), atol=1e-6)


def test_resampling_does_not_import_scipy_signal():
    # Its import takes most of a second, which every separate would wait for.
    code = (
        "import sys, numpy as np\n"
        "from keras_sep.audio import resample\n"
        "x = np.ones((44100, 2), np.float32)\n"
        "resample(resample(x, 44100, 22050), 22050, 48000)\n"
        "assert 'scipy.signal' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_separate_command_starts_without_scipy_fft():
    # The soft mask imports it on its first frames, beside the model's calls.
    code = "import sys, keras_sep.cli\nassert 'scipy.fft' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


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


@pytest.mark.slow
def test_tensorflow_io_decoder_matches_soundfile(tmp_path):
    """tensorflow-io's ops load and decode with the pinned TensorFlow (FACTS.md)."""
    pytest.importorskip("tensorflow_io")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (4000, 2)).astype("float32")
    write_audio(tmp_path / "a.flac", x, 16000)
    ours, _ = read_audio(tmp_path / "a.flac")
    theirs, rate = read_audio(tmp_path / "a.flac", decoder="tfio")
    assert rate == 16000
    np.testing.assert_allclose(theirs, ours, atol=1e-6)


def test_tfio_decoder_without_tensorflow_io_says_which_extra(tmp_path, monkeypatch):
    """The base install leaves tensorflow-io out; asking for it names the extra to install."""
    monkeypatch.setitem(sys.modules, "tensorflow_io", None)  # as if not installed
    write_audio(tmp_path / "a.wav", np.zeros((4000, 2), "float32"), 16000)
    with pytest.raises(MissingDependencyError) as raised:
        read_audio(tmp_path / "a.wav", decoder="tfio")
    message = str(raised.value)
    assert 'pip install "keras-sep[tfio]"' in message and "\n" not in message


def test_tfio_decoder_refuses_a_tensorflow_it_was_not_built_for(tmp_path, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    monkeypatch.setitem(sys.modules, "tensorflow_io", types.ModuleType("tensorflow_io"))
    monkeypatch.setattr(tf, "__version__", "2.21.0")
    write_audio(tmp_path / "a.wav", np.zeros((4000, 2), "float32"), 16000)
    with pytest.raises(MissingDependencyError, match=r"needs TensorFlow 2\.17 .*not 2\.21\.0"):
        read_audio(tmp_path / "a.wav", decoder="tfio")


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


@pytest.mark.parametrize("rates", [(44100, 22050), (48000, 22050), (22050, 44100), (8000, 22050)])
def test_streaming_resampler_equals_whole_signal_resampling(rates):
    x = np.random.default_rng(0).uniform(-1, 1, (30011, 2)).astype("float32")
    expected = resample(x, *rates)
    stream, at, blocks = Resampler(*rates), 0, []
    for size in [
        1,
        7,
        5000,
        333,
        12000,
        2,
        8000,
        9000,
    ]:  # uneven blocks, some shorter than the filter
        blocks.append(stream(x[at : at + size], last=at + size >= len(x)))
        at += size
    assert at > len(x)
    got = np.concatenate(blocks)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)


class BiasedScaler(Scaler):
    """Source k is (k + 1) x the input plus a constant: like a real model, loud on silence."""

    def predict_on_batch(self, x):
        return {s: v + 0.01 for s, v in super().predict_on_batch(x).items()}


def test_silent_segments_give_silence_and_music_is_unchanged():
    model = BiasedScaler(WaveUNetConfig.preset("tiny", segment_length=SEGMENT))
    music = np.random.default_rng(3).uniform(-0.5, 0.5, (20 * SEGMENT + 5, 2)).astype("float32")
    # Music with no silent segment: the biased model's output everywhere, to float precision
    # (one pass: inverting the polarity would cancel the bias).
    y = separate(model, music, overlap=0.25, batch_size=3, tta=1)
    for k, source in enumerate(model.arch_config.sources):
        np.testing.assert_allclose(y[source], music * (k + 1) + 0.01, atol=1e-5)
    # Silence, and a song with a silent gap: the gap is silent, the music around it is not
    # touched, and batches of silence never reach the model.
    calls = len(model.calls)
    assert all(not v.any() for v in separate(model, np.zeros_like(music)).values())
    assert len(model.calls) == calls
    gapped = music.copy()
    gapped[5 * SEGMENT : 12 * SEGMENT] = 0
    y = separate(model, gapped, overlap=0.25, batch_size=3, tta=1)
    gap, before, after = (
        slice(7 * SEGMENT, 10 * SEGMENT),
        slice(0, 4 * SEGMENT),
        slice(13 * SEGMENT, None),
    )
    for k, source in enumerate(model.arch_config.sources):
        assert not y[source][gap].any()
        for part in (before, after):
            np.testing.assert_allclose(y[source][part], gapped[part] * (k + 1) + 0.01, atol=1e-5)


def test_bundled_model_gives_silence_for_silence():
    model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    silence = np.zeros((3 * 44100, 2), "float32")
    segment = np.zeros((1, model.arch_config.segment_length, 2), "float32")
    # The model itself makes noise out of silence (its biases), which the gate removes.
    assert max(np.abs(v).max() for v in model.predict_on_batch(segment).values()) > 1e-3
    stems = separate_waveform(model, silence, 44100).stems
    assert max(np.abs(v).max() for v in stems.values()) < 10 ** (-90 / 20)


@pytest.mark.parametrize("rate,channels", [(44100, 2), (16000, 1)])
def test_streaming_to_files_equals_separating_in_memory(tmp_path, scaler, rate, channels):
    x = np.random.default_rng(4).uniform(-0.5, 0.5, (3 * BLOCK_FRAMES + 17, channels))
    sf.write(tmp_path / "song.wav", x.astype("float32"), rate, subtype="FLOAT")
    # A scale of 1/8 keeps every stem within full scale, so nothing is clipped.
    scaler.predict_on_batch = lambda b: {s: b / 8 * (k + 1) for k, s in enumerate("vbdo")}
    scaler.arch_config = WaveUNetConfig.preset(
        "tiny", segment_length=SEGMENT, sources=("v", "b", "d", "o")
    )
    in_memory = separate_file(scaler, tmp_path / "song.wav", batch_size=8).stems
    written = separate_to_folder(
        scaler, tmp_path / "song.wav", tmp_path / "out", fmt="wav", bit_depth="float", batch_size=8
    )
    assert written.files == {s: tmp_path / "out" / f"{s}.wav" for s in "vbdo"}
    for source, stem in in_memory.items():
        assert stem.shape == x.shape
        streamed, file_rate = read_audio(written.files[source])
        assert file_rate == rate
        np.testing.assert_allclose(streamed, stem, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "song.wav"]


def test_nan_midway_leaves_no_output(tmp_path, scaler):
    x = np.full((3 * BLOCK_FRAMES, 2), 0.1, "float32")
    x[2 * BLOCK_FRAMES + 5] = np.nan  # in the third block read: after stems were written
    sf.write(tmp_path / "song.wav", x, 22050, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        separate_to_folder(scaler, tmp_path / "song.wav", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


def test_truncated_wav_warns_with_the_length_read(tmp_path):
    sf.write(tmp_path / "full.wav", np.full((44100, 2), 0.1, "float32"), 44100)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 4 * 11025])  # a quarter of the frames
    assert wav_data_frames(tmp_path / "full.wav") == wav_data_frames(tmp_path / "cut.wav") == 44100
    with pytest.warns(AudioWarning, match=r"promises 1.00 s but the file holds 0.25 s"):
        audio, _ = read_audio(tmp_path / "cut.wav")
    assert len(audio) == 11025


def test_leftover_temporary_files_of_dead_runs_are_removed(tmp_path):
    song = tmp_path / "song"
    song.mkdir()
    dead = song / ".ks-999999999-abc.tmp"  # no such process
    live = song / f".ks-{os.getppid()}-xyz.tmp"  # a running process
    for path in (dead, live):
        path.write_bytes(b"half")
    write_stems(song, {"vocals": np.zeros((100, 2))}, 22050)
    assert sorted(p.name for p in song.iterdir()) == sorted(
        [".keras-sep-record", "vocals.wav", live.name]
    )


@pytest.mark.parametrize(
    "fmt,bit_depth,subtype",
    [
        ("wav", "24", "PCM_24"),
        ("flac", None, "PCM_16"),
        ("ogg", None, "VORBIS"),
        ("mp3", None, "MPEG_LAYER_III"),
    ],
)
def test_every_output_format_round_trips(tmp_path, fmt, bit_depth, subtype):
    t = np.arange(44100) / 44100
    x = 0.5 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], 1)
    path = write_audio(tmp_path / f"a.{fmt}", x, 44100, bit_depth)
    assert sf.info(path).subtype == subtype
    y, rate = read_audio(path)
    assert rate == 44100 and y.shape == x.shape
    # Lossless within the bit depth; lossy within a small fraction of the signal's power.
    error = np.mean((y - x) ** 2) / np.mean(x**2)
    assert error < (1e-8 if fmt in ("wav", "flac") else 0.02), error


def test_lossy_formats_have_no_bit_depth():
    assert sound_format("mp3") == ("MP3", "MPEG_LAYER_III")
    with pytest.raises(AudioError, match="lossy format without a bit depth"):
        sound_format("ogg", "16")
    with pytest.raises(AudioError, match=r"flac supports bit depths \['16', '24'\]"):
        sound_format("flac", "float")


def test_truncated_flac_is_a_one_line_error(tmp_path):
    sf.write(tmp_path / "full.flac", np.random.default_rng(0).uniform(-0.3, 0.3, (88200, 2)), 44100)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut.flac cannot be decoded after 0.00 s .* truncated"):
        read_audio(tmp_path / "cut.flac")

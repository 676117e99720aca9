"""Short jobs start on the ONNX copy of a model folder, without TensorFlow (warm_start)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep import warm_start
from keras_sep.cli import main
from keras_sep.data import toy
from keras_sep.export.onnx_model import write_onnx_copy
from keras_sep.separate import separate_waveform
from keras_sep.serving import OnnxRunner

RATE = 44100


@pytest.fixture(scope="module")
def mixture():
    return sum(toy.generate_song(3, 2.0, RATE).values())


@pytest.fixture(scope="module")
def keras_stems(mixture):
    model = keras_sep.load(keras_sep.DEFAULT_MODEL, precision="float32")
    return separate_waveform(model, mixture, RATE).stems


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[s] - b[s]))) for s in a)


def test_the_bundled_onnx_copy_separates_as_the_keras_model_does(mixture, keras_stems):
    runner = warm_start.onnx_runner(keras_sep.DEFAULT_MODEL)
    assert isinstance(runner, OnnxRunner) and runner.parallel_calls
    assert largest_difference(separate_waveform(runner, mixture, RATE).stems, keras_stems) < 1e-5
    assert max(float(np.max(np.abs(v))) for v in keras_stems.values()) > 0.05  # not silence


def test_load_separator_picks_onnx_where_it_pays(monkeypatch):
    folder = keras_sep.DEFAULT_MODEL
    # Where Keras would compute in bfloat16 (or may use a GPU): ONNX for short jobs only.
    monkeypatch.setattr(warm_start, "keras_float32_on_cpu", lambda precision: False)
    assert isinstance(warm_start.load_separator(folder, "auto", seconds=30), OnnxRunner)
    assert isinstance(warm_start.load_separator(folder, None, seconds=30), OnnxRunner)
    for precision, seconds in (("auto", warm_start.KERAS_AFTER), ("bfloat16", 30)):
        model = warm_start.load_separator(folder, precision, seconds=seconds)
        assert not isinstance(model, OnnxRunner) and model.count_params() > 0
    # Where Keras would compute in float32 on the CPU: ONNX for any length.
    monkeypatch.setattr(warm_start, "keras_float32_on_cpu", lambda precision: True)
    assert isinstance(warm_start.load_separator(folder, "auto", seconds=1e6), OnnxRunner)
    assert not isinstance(warm_start.load_separator(folder, "bfloat16", seconds=30), OnnxRunner)


def test_keras_float32_on_cpu_reads_the_cpu_flags_and_gpu_devices(tmp_path, monkeypatch):
    from keras_sep import precision

    def cpu(*flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))

    monkeypatch.setattr(warm_start, "GPU_DEVICES", (str(tmp_path / "nvidiactl"),))
    cpu("avx2", "fma")
    assert warm_start.keras_float32_on_cpu("auto")
    cpu("avx2", "avx512_bf16")
    assert not warm_start.keras_float32_on_cpu("auto")
    assert warm_start.keras_float32_on_cpu("float32") and warm_start.keras_float32_on_cpu(None)
    (tmp_path / "nvidiactl").touch()  # a GPU Keras may compute on
    cpu("avx2", "fma")
    assert not warm_start.keras_float32_on_cpu("auto")
    assert not warm_start.keras_float32_on_cpu("float32")


def test_separate_help_gives_the_switch_length(capsys):
    with pytest.raises(SystemExit):
        main(["separate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"under {warm_start.KERAS_AFTER / 60:g} minutes of audio" in text


def test_an_onnx_copy_of_other_weights_or_a_damaged_one_is_not_used(tmp_path, model_folder):
    other = tmp_path / "other"  # the bundled model's architecture, other weights
    model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    model.set_weights([w * 1.01 for w in model.get_weights()])
    keras_sep.save(model, other)
    shutil.copy(f"{keras_sep.DEFAULT_MODEL}/{warm_start.ONNX_FILE}", other)
    damaged = tmp_path / "damaged"
    shutil.copytree(keras_sep.DEFAULT_MODEL, damaged)
    (damaged / warm_start.ONNX_FILE).write_bytes(b"not an onnx model")
    for folder in (other, damaged, model_folder):  # the tiny model has no copy at all
        assert warm_start.onnx_runner(folder) is None
        model = warm_start.load_separator(folder, seconds=1)
        assert not isinstance(model, OnnxRunner) and model.count_params() > 0


def test_write_onnx_makes_a_copy_that_matches_its_folder(tmp_path, model_folder, mixture):
    folder = tmp_path / "tiny"
    shutil.copytree(model_folder, folder)
    write_onnx_copy(folder)
    runner = warm_start.onnx_runner(folder)
    assert isinstance(runner, OnnxRunner)
    stems = separate_waveform(runner, mixture, RATE).stems
    expected = separate_waveform(keras_sep.load(folder), mixture, RATE).stems
    assert largest_difference(stems, expected) < 1e-5


def test_separate_runs_a_short_song_without_loading_keras(tmp_path, mixture, monkeypatch, capsys):
    def no_keras(*args, **kwargs):
        raise AssertionError("a short job loaded the Keras model")

    monkeypatch.setattr(keras_sep, "load", no_keras)
    sf.write(tmp_path / "song.wav", mixture, RATE, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "song.wav"), "-o", str(out), "-q"]) == 0
    assert f"precision: float32 ({warm_start.ONNX_NOTE})" in capsys.readouterr().err
    vocals, rate = sf.read(out / "song" / "vocals.wav")
    assert rate == RATE and vocals.shape == mixture.shape and np.abs(vocals).max() > 0.01


def test_separate_loads_keras_for_a_long_job(tmp_path, mixture, monkeypatch):
    loads = []
    load = keras_sep.load

    def spy(*args, **kwargs):
        loads.append(args)
        return load(*args, **kwargs)

    monkeypatch.setattr(keras_sep, "load", spy)
    monkeypatch.setattr(warm_start, "KERAS_AFTER", 1.0)  # the 2 s song counts as long
    monkeypatch.setattr(warm_start, "keras_float32_on_cpu", lambda precision: False)
    sf.write(tmp_path / "song.wav", mixture, RATE)
    assert main(["separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert loads == [(keras_sep.DEFAULT_MODEL,)]


def test_a_short_separate_imports_neither_tensorflow_nor_keras(tmp_path, mixture):
    sf.write(tmp_path / "song.wav", mixture, RATE)
    argv = ["separate", str(tmp_path / "song.wav"), "-o", str(tmp_path / "out"), "-q"]
    code = (
        "import sys; from keras_sep.cli import main\n"
        f"code = main({[*argv, '--threads', '1']!r})\n"
        "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["0", "False", "False"], out.stderr
    assert (tmp_path / "out" / "song" / "vocals.wav").is_file()


def test_audio_seconds_reads_headers_then_ffprobe_and_is_infinite_when_both_fail(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros((RATE, 2)), RATE)
    sf.write(tmp_path / "b.flac", np.zeros((RATE // 2, 2)), RATE)
    assert warm_start.audio_seconds([tmp_path / "a.wav", tmp_path / "b.flac"]) == 1.5
    m4a = tmp_path / "c.m4a"  # AAC: libsndfile cannot read it, ffprobe can
    ffmpeg = ["ffmpeg", "-v", "error", "-i", str(tmp_path / "a.wav"), "-c:a", "aac", str(m4a)]
    subprocess.run(ffmpeg, check=True)
    assert warm_start.audio_seconds([m4a]) == pytest.approx(1.0, abs=0.05)
    (tmp_path / "d.xyz").write_bytes(b"?")
    assert warm_start.audio_seconds([tmp_path / "a.wav", tmp_path / "d.xyz"]) == float("inf")

"""The keras-sep command: subcommands called through main([...]), as a user would."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep.audio import resample
from keras_sep.cli import main
from keras_sep.data import toy
from keras_sep.files import RECORD
from keras_sep.gate import Gate, model_gate
from keras_sep.mask import SoftMask, model_mask
from keras_sep.metrics import plain_sdr


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("songs") / "my song.flac"
    sf.write(path, sum(toy.generate_song(123, 3.0, 44100).values()), 44100)
    return path


def test_help_for_every_command(capsys):
    for argv in ([], ["demo"], ["separate"], ["evaluate"], ["export"], ["make-toy-data"]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0
    assert "real-time" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    assert "--musdb-root" in capsys.readouterr().out


def test_separate_writes_stems_per_track(tmp_path, model_folder, song, capsys):
    out = tmp_path / "out"
    assert main(["separate", str(song), "--model", str(model_folder), "-o", str(out)]) == 0
    files = sorted(p.name for p in (out / "my song").iterdir() if p.name != RECORD)
    assert files == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    info = sf.info(out / "my song" / "vocals.wav")
    assert info.samplerate == 44100 and info.channels == 2 and info.frames == 3 * 44100
    assert "real-time factor" in capsys.readouterr().out


@pytest.mark.slow
def test_separate_options(tmp_path, model_folder, song):
    out = tmp_path / "out"
    args = [str(song), "--model", str(model_folder), "-o", str(out)]
    assert (
        main(
            [
                "separate",
                *args,
                "--two-stems",
                "vocals",
                "--format",
                "flac",
                "--bit-depth",
                "24",
                "--segment",
                "0.5",
                "--overlap",
                "0.5",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (out / "my song").iterdir() if p.name != RECORD) == [
        "no_vocals.flac",
        "vocals.flac",
    ]
    assert sf.info(out / "my song" / "vocals.flac").subtype == "PCM_24"
    vocals, _ = sf.read(out / "my song" / "vocals.flac")
    rest, _ = sf.read(out / "my song" / "no_vocals.flac")
    mixture, _ = sf.read(song, dtype="float32")
    # The stems sum to the mixture as the 22.05 kHz model hears it (band-limited to 11 kHz).
    heard = resample(resample(mixture, 44100, 22050), 22050, 44100)[: len(mixture)]
    unclipped = (np.abs(vocals) < 0.999) & (np.abs(rest) < 0.999)  # PCM output is clipped
    np.testing.assert_allclose((vocals + rest)[unclipped], heard[unclipped], atol=1e-3)
    assert main(["separate", *args, "--stems", "bass,drums"]) == 0
    # A rerun with other options adds its stems; the earlier ones stay.
    assert sorted(p.name for p in (out / "my song").iterdir() if p.name != RECORD) == [
        "bass.wav",
        "drums.wav",
        "no_vocals.flac",
        "vocals.flac",
    ]


def test_separate_bad_inputs_are_one_line_errors(tmp_path, model_folder, song, capsys):
    empty = tmp_path / "empty.wav"
    empty.touch()
    out = tmp_path / "out"
    argv = [
        "separate",
        str(tmp_path / "missing.mp3"),
        str(empty),
        str(song),
        "--model",
        str(model_folder),
        "-o",
        str(out),
    ]
    assert main(argv) == 1  # some files failed, the others were processed
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 2 and "no such file" in errors[0] and "empty" in errors[1]
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in out.iterdir()) == ["my song"]

    assert main(["separate", str(song), "--model", str(tmp_path)]) == 1
    assert "not a model folder" in capsys.readouterr().err
    assert main(["separate", str(song), "--model", str(model_folder), "--stems", "kazoo"]) == 2
    assert "unknown source(s) ['kazoo']" in capsys.readouterr().err


def test_make_toy_data(tmp_path, capsys):
    root = tmp_path / "toy"
    assert (
        main(
            [
                "make-toy-data",
                str(root),
                "--songs",
                "1",
                "--valid",
                "1",
                "--test",
                "1",
                "--seconds",
                "1",
            ]
        )
        == 0
    )
    assert len(list((root / "train").iterdir())) == 2 and (root / "setup.yaml").is_file()
    assert main(["make-toy-data", str(root), "--songs", "-1"]) == 2


def test_train_subcommand_forwards_its_arguments(capsys):
    assert main(["train", "--config", "dilated", "--quiet"]) == 1
    assert "no training data" in capsys.readouterr().err


def test_bundled_model_is_a_model_folder():
    model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    info = keras_sep.folder.read_info(keras_sep.DEFAULT_MODEL)
    assert model.sources == keras_sep.SOURCES and model.sample_rate == 22050
    assert info["training"]["data"][0] == "toy"  # trained on synthetic songs, and says so


def _strings(value):
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_bundled_model_carries_no_machine_paths_and_stays_small():
    folder = Path(keras_sep.DEFAULT_MODEL)
    info = keras_sep.folder.read_info(folder)
    absolute = [s for s in _strings(info) if os.path.isabs(s) or s.startswith("~")]
    assert not absolute, absolute
    assert sum(f.stat().st_size for f in folder.iterdir()) < 25 * 2**20


def test_bundling_a_run_strips_its_paths(tmp_path):
    from keras_sep.export.bundle_model import main as bundle_main

    run = tmp_path / "run"
    recorded = {"data": ["toy", "/home/me/data/corpus"], "held_out": {"/srv/x/songs": ["a"]}}
    keras_sep.save(keras_sep.build("wave_u_net", preset="tiny"), run, {"training": recorded})
    assert bundle_main([str(run), "--dest", str(tmp_path / "demo")]) == 0
    info = keras_sep.folder.read_info(tmp_path / "demo")
    assert info["training"] == {"data": ["toy", "data/corpus"], "held_out": {"x/songs": ["a"]}}
    weights = [(p / "model.weights.h5").read_bytes() for p in (run, tmp_path / "demo")]
    assert weights[0] == weights[1]
    assert "gate" not in info and "mask" not in info
    argv = [str(run), "--dest", str(tmp_path / "gated"), "--gate-db", "-14", "--mask-power", "1.5"]
    assert bundle_main(argv) == 0
    post_filtered = keras_sep.load(tmp_path / "gated")
    assert model_gate(post_filtered) == Gate(threshold_db=-14.0)
    assert model_mask(post_filtered) == SoftMask(power=1.5)
    argv = [str(run), "--dest", str(tmp_path / "spatial"), "--mask-power", "1.25", "--mask-spatial"]
    assert bundle_main(argv) == 0
    assert model_mask(keras_sep.load(tmp_path / "spatial")) == SoftMask(power=1.25, spatial=True)


@pytest.mark.slow
def test_bundled_model_beats_the_mixture_and_silence_on_an_unseen_song():
    from keras_sep.separate import separate_waveform

    model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    stems = toy.generate_song(2000 + 7, 10.0, 44100)  # toy seed 2: never used in training
    mixture = sum(stems.values())
    estimates = separate_waveform(model, mixture, 44100).stems
    for source in model.sources:
        sdr = plain_sdr(stems[source], estimates[source])
        assert sdr > plain_sdr(stems[source], mixture) + 3, source
        assert sdr > 0, source  # beats silence, which scores exactly 0 dB


@pytest.mark.slow
def test_demo_command(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--seconds", "5"]) == 0
    printed = capsys.readouterr()
    assert "bundled demo model" in printed.err
    assert "silence" in printed.out and "real-time factor" in printed.out
    summary = json.loads((out / "sdr.json").read_text())
    assert set(summary["sdr_db"]) == set(keras_sep.SOURCES)
    assert (out / "spectrograms.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "estimates").iterdir() if p.name != RECORD) == sorted(
        f"{s}.wav" for s in keras_sep.SOURCES
    )
    assert (out / "mixture.wav").is_file()

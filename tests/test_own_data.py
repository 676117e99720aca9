"""Training on your own songs: MUSDB-layout trees without a validation list, folders of stems."""

import shutil

import numpy as np
import pytest
import yaml
from test_training import SMALL

import keras_sep
from keras_sep.audio import write_audio
from keras_sep.data import toy
from keras_sep.data.tracks import hold_out, stems_tracks
from keras_sep.errors import DataError
from keras_sep.training.config import load_config
from keras_sep.training.train import main

RATE = 22050


def run_args(tmp_path, *data):
    """A tiny one-epoch train.py command line on ``data``."""
    small = [x for s in [*SMALL, "steps_per_epoch=2"] for x in ("--set", s)]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    return ["--config", "dilated_dense", "--epochs", "1", *small, *cache, "--quiet", *data]


def test_hold_out_is_deterministic_and_keeps_songs_for_training():
    names = [f"song {i}" for i in range(10)]
    chosen = hold_out(names, 0.15)
    assert len(chosen) == 2 and set(chosen) <= set(names)
    assert hold_out(list(reversed(names)), 0.15) == chosen  # order does not matter
    assert len(hold_out(names[:3], 0.15)) == 1  # at least one
    assert len(hold_out(names[:2], 0.9)) == 1  # never all
    with pytest.raises(DataError, match="at least 2 songs, got 1"):
        hold_out(names[:1], 0.15)


@pytest.mark.slow
def test_a_tree_without_a_validation_list_trains(tmp_path, capsys):
    """The done-when of issue 16: a MUSDB18-HQ-layout tree with only train/ songs."""
    root = toy.write_musdb_tree(tmp_path / "tree", train=3, valid=0, test=0, seconds=3.0)
    (root / "setup.yaml").unlink(missing_ok=True)
    out = tmp_path / "run"
    assert main([*run_args(tmp_path, "--musdb-root", str(root)), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: {root} has no validation songs; holding out 1 of 3 songs" in err
    recorded = yaml.safe_load((out / "train_config.yaml").read_text())
    songs = [toy.song_name(i) for i in range(3)]
    assert recorded["held_out"] == {str(root): hold_out(songs, 0.15)}
    assert recorded["device"] == "CPU" and recorded["backend"] == "tensorflow"
    assert keras_sep.load(out).count_params() > 0
    # The recorded config reads back as a config (run records are ignored).
    assert load_config(str(out / "train_config.yaml")).valid_fraction == 0.15


def write_song(
    folder, seed, formats=("wav", "flac", "wav", "wav"), mono=(), short=(), mixture=True
):
    """A toy song as a plain stem folder (drums as flac, the rest as wav); ``mono`` /
    ``short`` stems are written mono / shorter."""
    stems = toy.generate_song(seed, 3.0, RATE)
    for name, audio in stems.items():
        ext = "flac" if name == "drums" else "wav"
        audio = audio[:, :1] if name in mono else audio
        audio = audio[: RATE * 2] if name in short else audio
        write_audio(folder / f"{name}.{ext}", audio, RATE)
    if mixture:
        write_audio(folder / "mixture.wav", sum(stems.values()), RATE)
    return stems


def test_stem_folders_read_as_tracks(tmp_path):
    stems = write_song(tmp_path / "b song", 1, mono=("bass",), short=("drums",), mixture=False)
    write_song(tmp_path / "a song", 2)
    (tmp_path / "notes.txt").write_text("not a song")
    tracks = stems_tracks(tmp_path, keras_sep.SOURCES)
    assert [t.name for t in tracks] == ["a song", "b song"]
    track = tracks[1]
    assert track.rate == RATE and track.length == 3 * RATE
    assert all(track.sources[s].shape == (3 * RATE, 2) for s in keras_sep.SOURCES)
    np.testing.assert_array_equal(track.sources["drums"][2 * RATE :], 0)  # padded
    bass = track.sources["bass"]
    np.testing.assert_array_equal(bass[:, 0], bass[:, 1])  # mono duplicated
    np.testing.assert_allclose(track.sources["vocals"], stems["vocals"], atol=1 / 32768)

    (tmp_path / "a song" / "bass.wav").unlink()
    with pytest.raises(DataError, match=r"a song has no stem file for \['bass'\]"):
        stems_tracks(tmp_path, keras_sep.SOURCES)
    with pytest.raises(DataError, match="does not exist"):
        stems_tracks(tmp_path / "missing", keras_sep.SOURCES)


@pytest.mark.slow
def test_a_folder_of_stems_trains(tmp_path, capsys):
    root = tmp_path / "my songs"
    for i in range(3):
        write_song(root / f"song {i}", 10 + i, mixture=i == 0)
    out = tmp_path / "run"
    assert main([*run_args(tmp_path, "--stems-root", str(root)), "--out", str(out)]) == 0
    assert "holding out 1 of 3 songs" in capsys.readouterr().err
    recorded = yaml.safe_load((out / "train_config.yaml").read_text())
    assert recorded["data"] == [f"stems:{root}"]
    assert recorded["held_out"] == {str(root): hold_out([f"song {i}" for i in range(3)], 0.15)}

    # One song cannot be split into training and validation songs.
    one = tmp_path / "one"
    shutil.copytree(root / "song 0", one / "song 0")
    assert main([*run_args(tmp_path, "--stems-root", str(one)), "--out", str(out / "x")]) == 1
    # Found when the songs are listed, after the device line: one line says what is wrong.
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "training on tensorflow, device: CPU" and len(lines) == 2, lines
    assert lines[1].startswith("error: holding out validation songs needs at least 2 songs, got 1")
    # A MUSDB tree passed as a stems root says which flag it needs.
    tree = toy.write_musdb_tree(tmp_path / "tree", train=1, valid=0, test=0, seconds=1.0)
    assert main([*run_args(tmp_path, "--stems-root", str(tree)), "--out", str(out / "y")]) == 1
    assert "use --musdb-root" in capsys.readouterr().err


def test_a_missing_root_fails_in_one_line_before_anything_else(tmp_path, capsys):
    for flag in ("--musdb-root", "--stems-root"):
        args = run_args(tmp_path, flag, str(tmp_path / "missing"))
        assert main([*args, "--out", str(tmp_path / "run")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "missing does not exist" in err
    assert not (tmp_path / "run").exists()

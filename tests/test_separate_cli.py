"""``keras-sep separate`` through ``main([...])``: options, batches, naming, odd inputs.

Each bad case checks the exit code, a one-line ``error:`` naming the culprit, that no
traceback is printed and that no output (not even an empty or hidden folder) is left.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep.audio import read_audio, resample
from keras_sep.cli import main
from keras_sep.data import toy
from keras_sep.errors import UsageError
from keras_sep.files import RECORD

RATE = 44100


def song(path, seconds=2.0, seed=0, channels=2):
    """Write a toy mixture (music, never silent) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mixture = sum(toy.generate_song(seed, seconds, RATE).values())
    sf.write(path, mixture[:, :channels], RATE)
    return path


def separate(capsys, *argv):
    """Run ``keras-sep separate``; returns (exit code, stdout lines, stderr lines)."""
    code = main(["separate", *map(str, argv)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out.splitlines(), captured.err.splitlines()


def tree(folder):
    """Every path under ``folder``, hidden ones included (keras-sep's records aside)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != RECORD)


@pytest.mark.parametrize(
    "option,culprit",
    [
        (["--segment", "nan"], "--segment must be from 0.1 to 60 seconds, got nan"),
        (["--segment", "0"], "--segment must be from 0.1 to 60 seconds, got 0.0"),
        (["--segment", "-1"], "--segment must be from 0.1 to 60 seconds, got -1.0"),
        (["--segment", "0.001"], "--segment must be from 0.1 to 60 seconds, got 0.001"),
        (["--overlap", "nan"], "--overlap must be a fraction from 0 to 0.9, got nan"),
        (["--overlap", "1"], "--overlap must be a fraction from 0 to 0.9, got 1.0"),
        (["--overlap", "-0.1"], "--overlap must be a fraction from 0 to 0.9"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--tta", "5"], "argument --tta: invalid choice: 5 (choose from 1, 2, 3, 4)"),
        (["--stems", ""], "--stems needs comma-separated source names"),
        (["--stems", "vocals,,bass"], "--stems needs comma-separated source names"),
        (["--format", "flac", "--bit-depth", "float"], "flac supports bit depths ['16', '24']"),
        (["--format", "mp3", "--bit-depth", "16"], "mp3 is a lossy format without a bit depth"),
        (["--format", "ogg", "--bit-depth", "24"], "ogg is a lossy format without a bit depth"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, model_folder, option, culprit):
    wav = song(tmp_path / "in" / "a.wav", seconds=0.5)
    out = tmp_path / "out"
    code, _, err = separate(capsys, wav, "--model", model_folder, "-o", out, *option)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and culprit in err[0], err
    assert not out.exists()


def test_bad_output_locations_are_refused_before_any_work(tmp_path, capsys, model_folder):
    wav = song(tmp_path / "a.wav", seconds=0.5)
    (tmp_path / "file").write_text("x")
    for out, culprit in [
        (tmp_path / "file", "is an existing file"),
        (tmp_path / "file" / "sub", "which is a file"),
    ]:
        code, _, err = separate(capsys, wav, "--model", model_folder, "-o", out)
        assert code == 2 and len(err) == 1 and culprit in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "file"]


def test_unknown_and_clashing_stem_options(tmp_path, capsys, model_folder):
    wav = song(tmp_path / "a.wav", seconds=0.5)
    out = tmp_path / "out"
    for option, culprit in [
        (["--two-stems", ""], "unknown source(s) ['']"),
        (["--stems", "vocals", "--two-stems", "bass"], "either --stems or --two-stems"),
    ]:
        code, _, err = separate(capsys, wav, "--model", model_folder, "-o", out, *option)
        assert code == 2 and len(err) == 1 and culprit in err[0], err
    assert not out.exists()


@pytest.mark.slow
def test_folder_with_a_bad_file_in_the_middle(tmp_path, capsys, model_folder):
    album = tmp_path / "album"
    song(album / "1 first.wav", seed=1)
    (album / "2 broken.wav").write_bytes(b"not audio" * 100)
    song(album / "3 third.flac", seed=3)
    song(album / "disc 2" / "4 fourth.ogg", seed=4)
    (album / "cover.jpg").write_bytes(b"\xff\xd8 not a song")
    (album / ".DS_Store").write_bytes(b"hidden")
    out = tmp_path / "out"
    code, lines, err = separate(capsys, album, "--model", model_folder, "-o", out)
    assert code == 1
    assert [e for e in err if e.startswith("error:")] == [
        e for e in err if "2 broken.wav" in e and e.startswith("error:")
    ]
    assert any("cover.jpg: not an audio file" in e for e in err)
    assert any("disc 2: a folder; pass -r" in e for e in err)
    assert lines[-2].startswith(
        "separated 2, skipped 2 (not audio: 1, folders without -r: 1), failed 1"
    )
    assert "failed: " in lines[-1] and "2 broken.wav" in lines[-1]
    stems = ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert tree(out) == [
        "album",
        "album/1 first",
        *(f"album/1 first/{s}" for s in stems),
        "album/3 third",
        *(f"album/3 third/{s}" for s in stems),
    ]
    # With -r the subfolder is separated too, keeping its place in the layout.
    code, lines, _ = separate(capsys, album, "-r", "--model", model_folder, "-o", out)
    assert code == 1 and lines[-2].startswith("separated 3, skipped 1 (not audio: 1), failed 1")
    assert (
        sorted(
            p.name for p in (out / "album" / "disc 2" / "4 fourth").iterdir() if p.name != RECORD
        )
        == stems
    )


@pytest.mark.slow
def test_skip_existing_does_no_work_the_second_time(tmp_path, capsys, model_folder):
    inputs = [song(tmp_path / "in" / f"{name}.wav", seconds=1.0) for name in ("a", "b")]
    out = tmp_path / "out"
    argv = [*inputs, "--model", model_folder, "-o", out, "--skip-existing", "--format", "flac"]
    code, lines, _ = separate(capsys, *argv)
    assert code == 0 and lines[-1].startswith("separated 2, skipped 0, failed 0")
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}
    assert len(written) == 8
    # An incomplete folder (a stem deleted by hand) is separated again.
    (out / "b" / "drums.flac").unlink()
    code, lines, err = separate(capsys, *argv)
    assert code == 0 and lines[-1].startswith(
        "separated 1, skipped 1 (already separated: 1), failed 0"
    )
    assert any("skipping" in e and "a.wav" in e and "already holds its stems" in e for e in err)
    code, lines, err = separate(capsys, *argv)
    assert code == 0 and lines == ["separated 0, skipped 2 (already separated: 2), failed 0"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.flac") if p.parent.name == "a"} == {
        p: t for p, t in written.items() if p.parent.name == "a"
    }


def test_songs_that_would_share_a_folder_get_distinct_ones(tmp_path, capsys, model_folder):
    a = song(tmp_path / "song.wav", seconds=0.5, seed=1)
    b = tmp_path / "song.mp3"
    sf.write(b, np.full((RATE // 2, 2), 0.1, "float32"), RATE)
    song(tmp_path / "x" / "Song.flac", seconds=0.5, seed=2)
    song(tmp_path / "y" / "song.flac", seconds=0.5, seed=3)
    out = tmp_path / "out"
    argv = [a, b, a, tmp_path / "x", tmp_path / "y", "--model", model_folder, "-o", out]
    code, lines, _ = separate(capsys, *argv, "--stems", "vocals")
    assert code == 0 and lines[-1].startswith("separated 4, skipped 0, failed 0")
    assert tree(out) == [
        "song.mp3",
        "song.mp3/vocals.wav",
        "song.wav",
        "song.wav/vocals.wav",
        "x",
        "x/Song",
        "x/Song/vocals.wav",
        "y",
        "y/song",
        "y/song/vocals.wav",
    ]
    # Each folder holds its own song's stems: nothing was overwritten.
    first, _ = read_audio(out / "song.wav" / "vocals.wav")
    second, _ = read_audio(out / "song.mp3" / "vocals.wav")
    assert not np.allclose(first[: len(second)], second[: len(first)], atol=1e-3)


def test_songs_left_on_one_folder_are_refused_before_any_work(tmp_path, capsys, model_folder):
    one = song(tmp_path / "a" / "live" / "song.wav", seconds=0.5)
    two = song(tmp_path / "b" / "live" / "song.wav", seconds=0.5)
    out = tmp_path / "out"
    argv = [one.parent, two.parent, "--model", model_folder, "-o", out]
    code, _, err = separate(capsys, *argv)
    assert code == 2 and len(err) == 1, err
    assert "would all be written to the same folder live/song.wav.stems/" in err[0]
    assert str(one) in err[0] and str(two) in err[0]
    assert not out.exists()


def test_folder_without_audio_is_a_one_line_error(tmp_path, capsys, model_folder):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("x")
    code, _, err = separate(capsys, tmp_path / "docs", "--model", model_folder)
    assert code == 2
    assert err[-1] == f"error: no audio files in {tmp_path / 'docs'}; pass -r to look in subfolders"


@pytest.mark.parametrize(
    "fmt,bit_depth,subtype",
    [
        ("wav", "float", "FLOAT"),
        ("flac", "24", "PCM_24"),
        ("ogg", None, "VORBIS"),
        ("mp3", None, "MPEG_LAYER_III"),
    ],
)
def test_each_output_format_round_trips(tmp_path, capsys, model_folder, fmt, bit_depth, subtype):
    wav = song(tmp_path / "in" / "a.wav", seconds=1.0, channels=1)
    out = tmp_path / "out"
    depth = ["--bit-depth", bit_depth] if bit_depth else []
    code, _, _ = separate(capsys, wav, "--model", model_folder, "-o", out, "--format", fmt, *depth)
    assert code == 0
    files = sorted(p.name for p in (out / "a").iterdir() if p.name != RECORD)
    assert files == [f"{s}.{fmt}" for s in ("bass", "drums", "other", "vocals")]
    stems = [read_audio(out / "a" / name) for name in files]
    assert all(sf.info(out / "a" / name).subtype == subtype for name in files)
    assert all(rate == RATE and audio.shape == (RATE, 1) for audio, rate in stems)
    mixture, _ = read_audio(wav)
    # The stems sum to the mixture as the model heard it, band-limited to 11 kHz (roughly,
    # for lossy formats).
    mixture = resample(resample(mixture, RATE, 22050), 22050, RATE)
    total = sum(audio for audio, _ in stems)
    error = np.mean((total - mixture) ** 2) / np.mean(mixture**2)
    assert error < (1e-8 if fmt in ("wav", "flac") else 0.05), error


def test_silence_in_gives_silence_out_with_the_bundled_model(tmp_path, capsys):
    sf.write(tmp_path / "silence.flac", np.zeros((2 * RATE, 2)), RATE)
    code, _, _ = separate(capsys, tmp_path / "silence.flac", "-o", tmp_path / "out")
    assert code == 0
    for stem in (tmp_path / "out" / "silence").glob("*.wav"):
        audio, _ = read_audio(stem)
        assert audio.shape == (2 * RATE, 2) and np.abs(audio).max() < 10 ** (-90 / 20)


def test_truncated_wav_gets_a_one_line_warning(tmp_path, capsys, model_folder):
    full = song(tmp_path / "full.wav", seconds=2.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 4 * RATE // 2])  # header + 0.5 s of 16-bit stereo
    # --quiet: no progress line on the captured stderr; the warning is printed even so.
    args = [cut, "--model", model_folder, "-o", tmp_path / "out", "--quiet"]
    code, _, err = separate(capsys, *args)
    assert code == 0
    assert err == [
        f"warning: {cut} is truncated: its header promises 2.00 s but the file holds "
        "0.50 s; using the 0.50 s read"
    ]
    assert sf.info(tmp_path / "out" / "cut" / "vocals.wav").frames == RATE // 2


def test_a_killed_runs_temporary_files_are_cleaned_by_the_next_run(tmp_path, capsys, model_folder):
    wav = song(tmp_path / "a.wav", seconds=0.5)
    out = tmp_path / "out"
    leftover = out / "a" / ".ks-999999999-x1y2.tmp"  # its process is gone
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\0" * 1000)
    code, _, _ = separate(capsys, wav, "--model", model_folder, "-o", out)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["a"]
    stems = ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert sorted(p.name for p in (out / "a").iterdir()) == [".keras-sep-record", *stems]


@pytest.mark.slow
def test_output_inside_an_input_folder_is_not_separated_again(
    tmp_path, capsys, model_folder, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    song(tmp_path / "a.wav", seconds=0.5)
    for _ in range(2):
        code, lines, _ = separate(capsys, ".", "-r", "--model", model_folder, "-o", "separated")
        assert code == 0 and lines[-1].startswith("separated 1, skipped 0, failed 0"), lines
    assert os.listdir(tmp_path / "separated") == [tmp_path.name]


def test_tta_beyond_a_mono_models_views_is_a_usage_error():
    from keras_sep.cli import check_tta
    from keras_sep.config import WaveUNetConfig

    class Mono:
        arch_config = WaveUNetConfig.preset("tiny", channels=1)

    check_tta(2, [Mono()])
    with pytest.raises(UsageError, match="--tta: tta must be from 1 to 2 for 1 channel"):
        check_tta(3, [Mono()])


def test_a_folders_gate_applies_unless_no_gate(tmp_path, capsys, model_folder):
    import json
    import shutil

    gated = tmp_path / "gated"
    shutil.copytree(model_folder, gated)
    config = json.loads((gated / "config.json").read_text())
    # A gate so strict that no vocals pass: the vocals stem must come out silent.
    config["gate"] = {"stems": ["vocals"], "threshold_db": 20.0, "window": 0.5}
    (gated / "config.json").write_text(json.dumps(config))
    mixture = song(tmp_path / "in" / "a.wav")
    for option, out in (([], "on"), (["--no-gate"], "off")):
        code, _, _ = separate(capsys, mixture, "--model", gated, "-o", tmp_path / out, *option)
        assert code == 0
    vocals = {k: read_audio(tmp_path / k / "a" / "vocals.wav")[0] for k in ("on", "off")}
    assert not np.any(vocals["on"]) and np.abs(vocals["off"]).max() > 1e-3
    others = {k: read_audio(tmp_path / k / "a" / "other.wav")[0] for k in ("on", "off")}
    np.testing.assert_allclose(others["on"], others["off"] + vocals["off"], atol=2 / 2**15)


def test_a_folders_mask_applies_unless_no_mask(tmp_path, capsys, model_folder):
    import json
    import shutil

    masked = tmp_path / "masked"
    shutil.copytree(model_folder, masked)
    config = json.loads((masked / "config.json").read_text())
    config["mask"] = {"window": 0.1, "power": 2.0}
    (masked / "config.json").write_text(json.dumps(config))
    mixture = song(tmp_path / "in" / "a.wav")
    stems = {}
    runs = ((masked, [], "on"), (masked, ["--no-mask"], "off"), (model_folder, [], "plain"))
    for folder, option, out in runs:
        code, _, _ = separate(capsys, mixture, "--model", folder, "-o", tmp_path / out, *option)
        assert code == 0
        stems[out] = {
            s: read_audio(tmp_path / out / "a" / f"{s}.wav")[0] for s in keras_sep.SOURCES
        }
    assert all(np.array_equal(stems["off"][s], stems["plain"][s]) for s in keras_sep.SOURCES)
    assert max(np.abs(stems["on"][s] - stems["off"][s]).max() for s in keras_sep.SOURCES) > 1e-3
    # Either way the stems sum to the same mixture (to 16-bit rounding).
    sums = [sum(stems[k].values()) for k in ("on", "off")]
    np.testing.assert_allclose(sums[0], sums[1], atol=4 / 2**15)


@pytest.mark.parametrize("key, bad", [("gate", {"window": -1}), ("mask", {"power": 0})])
def test_a_bad_post_filter_in_the_folder_fails_before_any_work(
    tmp_path, capsys, model_folder, key, bad
):
    import json
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(model_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config[key] = bad
    (folder / "config.json").write_text(json.dumps(config))
    mixture = song(tmp_path / "in" / "a.wav")
    code, _, err = separate(capsys, mixture, "--model", folder, "-o", tmp_path / "out")
    assert code == 1 and len(err) == 1 and f'bad "{key}"' in err[0], err
    assert not (tmp_path / "out").exists()

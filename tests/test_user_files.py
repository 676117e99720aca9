"""A run deletes nothing and replaces only what keras-sep itself wrote, through the real
entry points: every case a user found, plus a property test over random trees of songs,
user files, name clashes and symlinks (``keras_sep.files`` states the rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import yaml

import keras_sep
from keras_sep import warm_start
from keras_sep.cli import main
from keras_sep.data import toy
from keras_sep.files import RECORD, written_by_keras_sep
from keras_sep.training.train import BACKUP_DIR
from keras_sep.training.train import main as train_main

RATE = 22050
STEMS = ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]


def song(path: Path, seconds: float = 0.3, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mixture = sum(toy.generate_song(seed, seconds, RATE).values())
    sf.write(path, mixture, RATE)
    return path


def run(capsys, *argv) -> tuple[int, list[str], list[str]]:
    code = main([*map(str, argv)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out, captured.err
    return code, captured.out.splitlines(), captured.err.splitlines()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != RECORD)


def snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file under ``root`` (not following symlinks), by path."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                out[str(path.relative_to(root))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def fast_model(model_folder, monkeypatch):
    """The tiny model, loaded once: these tests are about files, not about the network."""
    model = keras_sep.load(model_folder)
    loads = []

    def load(*args, **kwargs):
        loads.append(args)
        return model

    monkeypatch.setattr(keras_sep, "load", load)
    # Not the bundled model's ONNX copy either, which short jobs would run.
    monkeypatch.setattr(warm_start, "onnx_separator", lambda *args, **kwargs: None)
    return loads


def test_a_song_beside_a_user_folder_of_its_name_leaves_that_folder_alone(
    tmp_path, capsys, fast_model, monkeypatch
):
    lib = tmp_path / "lib3"
    song(lib / "Bonus.wav")
    song(lib / "Bonus" / "bonus track.wav", seed=1)
    (lib / "Bonus" / "notes.txt").write_text("mine")
    before = snapshot(lib)
    monkeypatch.chdir(tmp_path)
    code, lines, err = run(capsys, "separate", "lib3", "-o", ".", "--tta", "1")
    assert code == 0, err
    assert any("lib3/Bonus/ is a folder of yours" in e for e in err), err
    assert snapshot(lib).items() >= before.items()  # nothing of the user's changed
    assert names(lib / "Bonus") == ["bonus track.wav", "notes.txt"]
    assert any("lib3/Bonus.wav is a file" in e for e in err), err  # the song itself
    assert names(lib / "Bonus.wav.stems") == STEMS


def test_a_song_and_a_folder_of_its_name_under_r_get_two_folders(tmp_path, capsys, fast_model):
    song(tmp_path / "clash" / "song.wav")
    song(tmp_path / "clash" / "song" / "x.wav", seed=1)
    out = tmp_path / "out"
    code, lines, _ = run(capsys, "separate", tmp_path / "clash", "-r", "-o", out, "--tta", "1")
    assert code == 0 and lines[-1].startswith("separated 2,")
    assert names(out / "clash" / "song.wav") == STEMS
    assert names(out / "clash" / "song" / "x") == STEMS


def test_a_plain_file_where_the_stems_folder_goes_is_kept(tmp_path, capsys, fast_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "short").write_text("the user's")
    wav = song(tmp_path / "in" / "short.wav")
    code, lines, err = run(capsys, "separate", wav, "-o", out, "--tta", "1")
    assert code == 0 and (out / "short").read_text() == "the user's"
    assert f"note: {wav} goes to {out / 'short.wav'}/ ({out / 'short'} is a file)" in err
    assert names(out / "short.wav") == STEMS
    # A file where a parent folder of the stems would go is refused before the model loads.
    (out / "album").write_text("the user's")
    fast_model.clear()
    code, lines, err = run(capsys, "separate", wav, "-o", out / "album" / "x")
    assert code == 2 and "lies under" in err[-1] and str(out / "album") in err[-1], err
    assert fast_model == [] and (out / "album").read_text() == "the user's"


def test_the_readme_commands_in_order_lose_nothing(tmp_path, capsys, fast_model):
    mix = song(tmp_path / "mixture.wav", seconds=0.5)
    out = tmp_path / "separated"
    folder = out / "mixture"
    assert run(capsys, "separate", mix, "-o", out)[0] == 0
    (folder / "notes.txt").write_text("the user's")
    assert run(capsys, "separate", mix, "-o", out, "--two-stems", "vocals")[0] == 0
    assert (
        run(capsys, "separate", mix, "-o", out, "--stems", "vocals,drums", "--format", "flac")[0]
        == 0
    )
    assert names(folder) == sorted(
        [*STEMS, "no_vocals.wav", "notes.txt", "vocals.flac", "drums.flac"]
    )
    wav = {p: p.read_bytes() for p in folder.glob("*.wav")}
    code, lines, _ = run(
        capsys, "separate", mix, "-o", out, "--format", "flac", "--skip-existing", "--tta", "1"
    )
    assert code == 0 and {p: p.read_bytes() for p in folder.glob("*.wav")} == wav
    assert (folder / "notes.txt").read_text() == "the user's"


def test_a_stem_file_of_the_users_is_refused_unless_overwrite(tmp_path, capsys, fast_model):
    mix = song(tmp_path / "a.wav")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "vocals.wav").write_bytes(b"")  # 0 bytes: --skip-existing must not trust it
    code, lines, err = run(capsys, "separate", mix, "-o", out, "--skip-existing")
    assert code == 1 and (out / "a" / "vocals.wav").read_bytes() == b""
    assert any("vocals.wav exists and was not written by keras-sep" in e for e in err), err
    assert lines[-2].startswith("separated 0, skipped 0, failed 1")
    code, _, _ = run(capsys, "separate", mix, "-o", out, "--overwrite")
    assert code == 0 and sf.info(out / "a" / "vocals.wav").frames > 0
    assert written_by_keras_sep(out / "a" / "vocals.wav")


def test_skip_existing_decides_before_the_model_loads(tmp_path, capsys, fast_model):
    mix = song(tmp_path / "a.wav")
    assert run(capsys, "separate", mix, "-o", tmp_path / "out")[0] == 0
    fast_model.clear()
    code, lines, _ = run(capsys, "separate", mix, "-o", tmp_path / "out", "--skip-existing")
    assert code == 0 and lines == ["separated 0, skipped 1 (already separated: 1), failed 0"]
    assert fast_model == []


def test_output_inside_or_equal_to_the_input_never_becomes_input(tmp_path, capsys, fast_model):
    album = tmp_path / "album"
    song(album / "a.wav")
    for out in (album, album / "stems"):
        for _ in range(2):
            code, lines, _ = run(capsys, "separate", album, "-r", "-o", out, "--tta", "1")
            assert code == 0 and lines[-1].startswith("separated 1,"), lines
    stems = sorted(str(p.relative_to(album)) for p in album.rglob("vocals.wav"))
    assert stems == ["album/a/vocals.wav", "stems/album/a/vocals.wav"]


def test_a_song_keras_sep_wrote_is_separated_and_its_stems_are_not(tmp_path, capsys, fast_model):
    """The README's ``keras-sep separate demo_output``: the demo's mixture.wav is a song."""
    from keras_sep.audio import write_audio, write_stems

    demo = tmp_path / "demo_output"
    mixture = sum(toy.generate_song(3, 0.3, RATE).values())
    write_audio(demo / "mixture.wav", mixture, RATE)
    write_stems(demo / "estimates", {"vocals": mixture, "drums": mixture}, RATE)
    code, lines, err = run(capsys, "separate", demo, "-r", "-o", tmp_path / "out", "--tta", "1")
    assert code == 0 and lines[-1].startswith(
        "separated 1, skipped 2 (keras-sep's own stems: 2), failed 0"
    ), (lines, err)
    assert names(tmp_path / "out" / "demo_output" / "mixture") == STEMS


def test_symlink_loops_and_links_to_a_parent_never_hang(tmp_path, capsys, fast_model):
    lib = tmp_path / "lib"
    song(lib / "sub" / "a.wav")
    (lib / "up1").symlink_to("..")
    (lib / "sub" / "up2").symlink_to("../..")
    (lib / "loop").symlink_to("loop")
    (lib / "x.wav").symlink_to("y.wav")
    (lib / "y.wav").symlink_to("x.wav")
    code, lines, err = run(capsys, "separate", lib, "-r", "-o", tmp_path / "out", "--tta", "1")
    assert code == 0, (lines, err)
    assert lines[-1].startswith("separated 1, skipped 3 (unreadable: 3), failed 0"), lines
    assert [
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("vocals.wav")
    ] == ["lib/sub/a/vocals.wav"]
    assert any("loop: a symlink loop" in e for e in err), err
    assert any("x.wav: a symlink loop" in e for e in err), err


def test_a_full_disk_stops_the_batch_with_its_summary(tmp_path, capsys, fast_model, monkeypatch):
    import errno

    from keras_sep import audio

    songs = [song(tmp_path / "in" / f"{n}.wav") for n in "abc"]
    real = audio._open_for_writing

    def full(path, *args):
        closing, write = real(path, *args)

        def failing(block):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent))

        return closing, failing

    monkeypatch.setattr(audio, "_open_for_writing", full)
    code, lines, err = run(capsys, "separate", *songs, "-o", tmp_path / "out", "--tta", "1")
    assert code == 1
    assert lines[0].startswith("separated 0, skipped 0, failed 2"), lines
    assert "no space left on device" in lines[1] and "2 later song(s) not tried" in lines[2]
    assert not list((tmp_path / "out").rglob("*.wav"))  # nothing half-written


def test_a_really_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, fast_model):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)])
    if mounted.returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); the simulated test covers it")
    try:
        songs = [song(tmp_path / "in" / f"{n}.wav", seconds=2.0) for n in "ab"]
        code, lines, err = run(capsys, "separate", *songs, "-o", disk, "--tta", "1")
        assert code == 1 and "no space left on device" in lines[1], (lines, err)
        assert not list(disk.rglob("*.wav")) and not list(disk.rglob(".ks-*"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_odd_names_and_options(tmp_path, capsys, fast_model, monkeypatch):
    long_name = "x" * 251 + ".wav"  # 255 bytes: the stems' folder name fits, and so must staging
    code, _, err = run(capsys, "separate", song(tmp_path / long_name), "-o", tmp_path / "o")
    assert code == 0, err
    assert names(tmp_path / "o" / ("x" * 251)) == STEMS
    code, _, err = run(capsys, "separate", tmp_path / long_name, "-o", "")
    assert code == 2 and err == ["error: -o is empty; give a folder (. for the current one)"]
    code, lines, _ = run(capsys, "separate", tmp_path / "nope.wav", "-o", tmp_path / "o")
    assert code == 1 and str(tmp_path / "nope.wav") in lines[-1]
    code, _, err = run(capsys, "demo", "--song", "-5")
    assert code == 2 and "--song" in err[0] and "must be 0 or more" in err[0]


def test_demo_refuses_a_users_file_before_any_work(tmp_path, capsys, model_folder):
    out = tmp_path / "userdir"
    out.mkdir()
    (out / "mixture.wav").write_bytes(b"the user's")
    code, _, err = run(capsys, "demo", "-o", out, "--model", model_folder, "--seconds", "1")
    assert code == 2 and "mixture.wav exists and was not written by keras-sep" in err[-1]
    assert names(out) == ["mixture.wav"] and (out / "mixture.wav").read_bytes() == b"the user's"
    code, _, _ = run(capsys, "demo", "-o", out, "--model", model_folder, "--seconds", "1")
    assert code == 2  # still the user's
    assert (
        run(capsys, "demo", "-o", out, "--model", model_folder, "--seconds", "1", "--overwrite")[0]
        == 0
    )
    assert run(capsys, "demo", "-o", out, "--model", model_folder, "--seconds", "1")[0] == 0


def test_make_toy_data_keeps_a_users_tree(tmp_path, capsys):
    tree = tmp_path / "musdb"
    (tree / "train" / "Theirs").mkdir(parents=True)
    (tree / "setup.yaml").write_text("validation_tracks: [Theirs]\n")
    before = snapshot(tree)
    argv = [
        "make-toy-data",
        tree,
        "--songs",
        "1",
        "--valid",
        "0",
        "--test",
        "0",
        "--seconds",
        "0.2",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "setup.yaml exists and was not written by keras-sep" in err[-1]
    assert snapshot(tree) == before and not (tree / "train" / "Toy Song 000").exists()
    # Its own tree it rewrites freely; with --overwrite the user's setup.yaml too.
    mine = tmp_path / "mine"
    assert run(capsys, *[mine if a == tree else a for a in argv])[0] == 0
    assert run(capsys, *[mine if a == tree else a for a in argv])[0] == 0
    assert run(capsys, *argv, "--overwrite")[0] == 0
    assert (tree / "train" / "Theirs").is_dir()


def musdb_tree(root: Path, drop: str | None = None) -> Path:
    toy.write_musdb_tree(root, train=2, valid=1, test=1, seconds=1.0, sample_rate=RATE)
    if drop:
        (root / "train" / toy.song_name(1) / f"{drop}.wav").unlink()
    return root


def test_a_song_missing_a_stem_is_found_before_any_work(tmp_path, capsys):
    root = musdb_tree(tmp_path / "musdb", drop="vocals")
    song_folder = root / "train" / toy.song_name(1)
    code, _, err = run(
        capsys, "evaluate", "--musdb-root", root, "--subset", "train", "-o", tmp_path / "r"
    )
    assert code == 1 and f"{song_folder} has no vocals.wav" in err[-1], err
    assert not (tmp_path / "r").exists()
    code = train_main(
        ["--config", "wave_u_net", "--musdb-root", str(root), "--set", "preset=tiny"]
        + ["--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 1 and f"{song_folder} has no vocals.wav" in err, err
    assert not (tmp_path / "run").exists()
    code, _, err = run(capsys, "study", "fig3a", "--musdb-root", root, "-o", tmp_path / "study")
    assert code == 1 and f"{song_folder} has no vocals.wav" in err[-1], err
    assert not (tmp_path / "study").exists()


def test_stems_of_different_lengths_are_found_before_any_work(tmp_path, capsys):
    root = musdb_tree(tmp_path / "musdb")
    bass = root / "test" / toy.song_name(3) / "bass.wav"  # songs 0-2 are train and valid
    audio, rate = sf.read(bass)
    sf.write(bass, audio[:-10], rate)
    code, _, err = run(capsys, "evaluate", "--musdb-root", root, "-o", tmp_path / "r")
    assert code == 1 and "its stems have different lengths" in err[-1], err


def test_a_mono_model_on_stereo_data_is_refused_before_any_work(tmp_path, capsys):
    code = train_main(
        ["--config", "wave_u_net", "--data", "toy", "--set", "preset=tiny"]
        + ["--set", "model.channels=1", "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "2-channel audio but the model takes 1" in err, err
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_config_lists_the_fields(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / BACKUP_DIR).mkdir(parents=True)
    (run_dir / BACKUP_DIR / "training_metadata.json").write_text(json.dumps({"epoch": 1}))
    from keras_sep.training.config import load_config

    old = load_config("wave_u_net", ["preset=tiny", "epochs=3"]).to_dict()
    (run_dir / "train_config.yaml").write_text(yaml.safe_dump(old))
    code = train_main(
        ["--config", "wave_u_net", "--data", "toy", "--set", "preset=tiny", "--set", "epochs=3"]
        + ["--set", "model.filters=7", "--set", "learning_rate=0.01", "--out", str(run_dir)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"cannot resume {run_dir}: its config differs" in err
    assert "learning_rate" in err and "model" in err and "{" not in err.split("differs")[0]


# --- the property test ---------------------------------------------------------------------


def random_tree(rng: random.Random, root: Path) -> None:
    """Songs, user files, folders named like songs, clashes and symlinks, a few levels deep."""
    folders = [root]
    for i in range(rng.randint(1, 4)):
        parent = rng.choice(folders)
        folder = parent / rng.choice(["disc", "Bonus", "song", "live", f"f{i}"])
        folder.mkdir(exist_ok=True)
        folders.append(folder)
    for i in range(rng.randint(1, 5)):
        folder = rng.choice(folders)
        stem = rng.choice(["song", "Bonus", "a", "disc", "live", f"t{i}"])
        ext = rng.choice([".wav", ".flac", ".WAV"])
        if not (folder / f"{stem}{ext}").exists():
            song(folder / f"{stem}{ext}", seconds=0.05, seed=i)
    for i in range(rng.randint(0, 3)):
        folder = rng.choice(folders)
        name = rng.choice(["notes.txt", "cover.jpg", "vocals.wav", "mixture.wav", f"u{i}.txt"])
        path = folder / name
        if not path.exists():
            if name.endswith(".wav"):
                song(path, seconds=0.05, seed=100 + i)
            else:
                path.write_text(f"user {i}")
    for i in range(rng.randint(0, 2)):
        folder = rng.choice(folders)
        link = folder / f"link{i}"
        target = rng.choice([Path(".."), Path("."), Path(f"link{i}"), rng.choice(folders)])
        link.symlink_to(target)


def stem_sets(root: Path) -> list[Path]:
    """Folders holding a stem that keras-sep wrote (one per separated song)."""
    found = set()
    for dirpath, _, files in os.walk(root):  # does not follow symlinks
        for name in files:
            stem = name.split(".")[0] in {"vocals", "bass", "drums", "other", "no_vocals"}
            if stem and written_by_keras_sep(Path(dirpath) / name):
                found.add(Path(dirpath).resolve())
    return sorted(found)


def check_random_tree(tmp_path: Path, seed: int, capsys) -> None:
    """Three ``separate -r`` runs with varied options: no file that existed before changes
    or vanishes, and every song separated has its stems in exactly one folder of its own."""
    rng = random.Random(seed)
    root = tmp_path / f"tree{seed}"
    lib = root / "lib"
    lib.mkdir(parents=True)
    random_tree(rng, lib)
    before = snapshot(root)
    out = rng.choice([root / "out", lib, lib / "sep", lib / "song"])
    folders: dict[str, set[str]] = {}
    for _ in range(3):
        options = rng.choice(
            [[], ["--two-stems", "vocals"], ["--stems", "vocals,bass"], ["--format", "flac"]]
        ) + rng.choice([[], ["--skip-existing"]])
        code, lines, err = run(capsys, "separate", lib, "-r", "-o", out, "--tta", "1", *options)
        assert code in (0, 1, 2), (code, err)
        after = snapshot(root)
        lost = {p: h for p, h in before.items() if after.get(p) != h}
        assert not lost, (seed, out, options, lost, err)
        for line in lines:  # "<song>: <stems> -> <folder>/ (...)"
            if " -> " in line:
                path, rest = line.split(": ", 1)
                folders.setdefault(path, set()).add(rest.split(" -> ")[1].split("/ (")[0])
    assert all(len(f) == 1 for f in folders.values()), (seed, folders)
    written = [next(iter(f)) for f in folders.values()]
    assert len(written) == len(set(written)), (seed, folders)  # no two songs share one
    assert stem_sets(root) == sorted(Path(f).resolve() for f in written), (seed, folders)


@pytest.mark.parametrize("seed", range(5))
def test_random_trees_lose_nothing(tmp_path, capsys, fast_model, seed):
    check_random_tree(tmp_path, seed, capsys)


@pytest.mark.slow
def test_random_trees_lose_nothing_200(tmp_path, capsys, fast_model):
    for seed in range(5, 205):
        check_random_tree(tmp_path, seed, capsys)


def test_every_writing_command_refuses_a_users_file_before_any_work(tmp_path, capsys, model_folder):
    from keras_sep.export.cli import main as export_main

    def users_file(folder: Path, name: str) -> Path:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("the user's")
        return folder / name

    mine = users_file(tmp_path / "report", "report.md")
    code, _, err = run(
        capsys,
        "evaluate",
        "--model",
        model_folder,
        "--data",
        "toy",
        "--tracks",
        "1",
        "-o",
        tmp_path / "report",
    )
    assert code == 2 and f"{mine} exists and was not written by keras-sep" in err[-1], err
    assert names(tmp_path / "report") == ["report.md"]

    mine = users_file(tmp_path / "artifacts", "model.onnx")
    code = export_main(
        [str(model_folder), "--out", str(tmp_path / "artifacts"), "--formats", "onnx"]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{mine} exists and was not written by keras-sep" in err, err
    assert names(tmp_path / "artifacts") == ["model.onnx"]

    mine = users_file(tmp_path / "run", "history.csv")
    code = train_main(
        [
            "--config",
            "wave_u_net",
            "--data",
            "toy",
            "--set",
            "preset=tiny",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{mine} exists and was not written by keras-sep" in err, err
    assert names(tmp_path / "run") == ["history.csv"]

    mine = users_file(tmp_path / "study", "report.md")
    code, _, err = run(capsys, "study", "fig3a", "-o", tmp_path / "study")
    assert code == 2 and f"{mine} exists and was not written by keras-sep" in err[-1], err
    assert names(tmp_path / "study") == ["report.md"]
    assert all(p.read_text() == "the user's" for p in tmp_path.rglob("*.*") if p.is_file())

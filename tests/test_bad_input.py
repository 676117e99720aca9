"""Bad input, through the real entry points: one ``error:`` line naming the culprit, the
documented exit code (2: a bad option or value, 1: a file or step that failed), no
traceback and nothing left behind. ``separate``'s own options are in test_separate_cli.py.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep.cli import main
from keras_sep.errors import FAILURE, USAGE, command
from keras_sep.export.cli import main as export_main
from keras_sep.files import RECORD
from keras_sep.training.config import load_config
from keras_sep.training.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys, *culprits: str) -> str:
    """The error printed by the last command: exactly one line, naming every culprit."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Warning" not in err, err
    for culprit in culprits:
        assert culprit in err, (culprit, err)
    return err


def run_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model folder, its .keras file, broken variants and a one-second song."""
    root = tmp_path_factory.mktemp("bad")
    model = keras_sep.build("dilated", preset="tiny", segment_length=4096)
    folder = keras_sep.save(model, root / "model")
    model.save(root / "ours.keras")

    def variant(name: str, **config) -> Path:
        copy = root / name
        shutil.copytree(folder, copy)
        info = json.loads((copy / "config.json").read_text())
        info["config"].update(config)
        (copy / "config.json").write_text(json.dumps(info))
        return copy

    plain = keras.Sequential([keras.Input((None, 2)), keras.layers.Dense(2)])
    plain.save(root / "plain.keras")
    lam = keras.Sequential([keras.Input((None, 2)), keras.layers.Lambda(lambda x: 2 * x)])
    lam.save(root / "lambda.keras")
    (root / "garbage.keras").write_bytes(b"not a zip at all")
    (root / "a_file").write_text("I am a file")
    song = root / "song.wav"
    sf.write(song, np.random.default_rng(0).uniform(-0.3, 0.3, (22050, 2)), 22050)
    return {
        "root": root,
        "folder": folder,
        "keras": root / "ours.keras",
        "typed": variant("typed", num_blocks="ten"),
        "mismatch": variant("mismatch", filters=5),
        "plain": root / "plain.keras",
        "lambda": root / "lambda.keras",
        "garbage": root / "garbage.keras",
        "file": root / "a_file",
        "song": song,
    }


# --- the boundary itself -------------------------------------------------------------------


def test_an_os_error_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    @command
    def denied(argv=None):
        raise PermissionError(13, "Permission denied", "/srv/out")

    assert denied() == FAILURE
    one_line_error(capsys, "/srv/out: permission denied", "permissions")

    @command
    def bug(argv=None):
        raise RuntimeError("an internal slip")

    assert bug() == FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: an internal slip" in err
    assert err.strip().splitlines()[-1].startswith("error: this is a bug in keras-sep")


def test_help_and_usage_errors_do_not_import_keras():
    code = (
        "import sys\n"
        "from keras_sep.cli import main\n"
        "for argv in (['demo', '--seconds', '0'], ['evaluate', '--batch-size', '0']):\n"
        "    assert main(argv) == 2\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("error: ") == 2


# --- demo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,culprits",
    [
        (["--seconds", "0"], ["--seconds", "must be positive"]),
        (["--seconds", "nan"], ["--seconds"]),
        (["-o", "{file}"], ["{file}", "is an existing file"]),
        (["-o", "{file}/out"], ["{file}/out", "lies under", "which is a file"]),
        (["-o", "/sys/keras-sep-demo"], ["/sys/keras-sep-demo", "cannot write"]),
    ],
)
def test_demo_bad_options(files, tmp_path, capsys, argv, culprits):
    fill = {"file": files["file"]}
    argv = [a.format(**fill) for a in argv]
    out = [] if "-o" in argv else ["-o", str(tmp_path / "demo")]
    assert main(["demo", *argv, *out, "--model", str(files["folder"])]) == USAGE
    one_line_error(capsys, *[c.format(**fill) for c in culprits])
    assert not (tmp_path / "demo").exists()


# --- model files, the same in every command ------------------------------------------------


def commands(model: Path, tmp_path: Path, files) -> dict[str, list[str]]:
    out = str(tmp_path / "out")
    # float32: separate's default precision, auto, says which it chose in a line of its own.
    precision = ["--precision", "float32"]
    return {
        "separate": ["separate", str(files["song"]), "--model", str(model), "-o", out, *precision],
        "demo": ["demo", "--model", str(model), "--seconds", "1", "-o", out],
        "evaluate": ["evaluate", "--model", f"m={model}", "--data", "toy", "-o", out],
        "export": ["export", str(model), "--out", out],
    }


@pytest.mark.parametrize(
    "model,culprits",
    [
        ("typed", ["config.json", "num_blocks must be an integer, got 'ten'"]),
        ("mismatch", ["model.weights.h5", "does not fit", "expected a keras-sep model"]),
        ("plain", ["plain.keras", "plain Keras model (Sequential)", "expected a keras-sep model"]),
        ("lambda", ["lambda.keras", "plain Keras model (Sequential)"]),
        ("garbage", ["garbage.keras", "not a .keras archive"]),
        ("file", ["a_file", "is a file, not a model folder"]),
    ],
)
@pytest.mark.parametrize("name", ["separate", "demo", "evaluate", "export"])
def test_bad_model_is_one_line_in_every_command(files, tmp_path, capsys, model, culprits, name):
    argv = commands(files[model], tmp_path, files)[name]
    assert main(argv) == FAILURE
    one_line_error(capsys, *culprits)
    assert not (tmp_path / "out").exists()


def test_keras_sep_model_saved_as_keras_file_works(files, tmp_path, capsys):
    argv = commands(files["keras"], tmp_path, files)
    assert main(argv["separate"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "song").iterdir() if p.name != RECORD) == [
        f"{s}.wav" for s in sorted(keras_sep.SOURCES)
    ]
    assert main([*argv["demo"][:-1], str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "sdr.json").is_file()
    assert main([*argv["evaluate"][:-1], str(tmp_path / "report"), "--tracks", "1"]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
    loaded, folder = keras_sep.load(files["keras"]), keras_sep.load(files["folder"])
    for a, b in zip(loaded.get_weights(), folder.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert "error" not in capsys.readouterr().err


# --- evaluate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,culprits",
    [
        (["--batch-size", "0"], ["--batch-size", "must be positive, got '0'"]),
        (["--tracks", "-1"], ["--tracks"]),
        (["--jobs", "two"], ["--jobs", "expected an integer"]),
        (["-o", "{file}"], ["-o/--output", "is an existing file"]),
    ],
)
def test_evaluate_bad_options(files, tmp_path, capsys, argv, culprits):
    argv = [a.format(file=files["file"]) for a in argv]
    out = [] if "-o" in argv else ["-o", str(tmp_path / "report")]
    base = ["evaluate", "--data", "toy", "--model", str(files["folder"])]
    assert main([*base, *argv, *out]) == USAGE
    one_line_error(capsys, *culprits)
    assert not (tmp_path / "report").exists()  # no run.json either


# --- export --------------------------------------------------------------------------------


def test_export_bad_options(files, tmp_path, capsys):
    out = tmp_path / "export"
    assert export_main([str(files["folder"]), "--out", str(out), "--model-version", "0"]) == USAGE
    one_line_error(capsys, "model version must be a positive integer")
    assert export_main([str(files["folder"]), "--out", f"{files['file']}/x"]) == USAGE
    one_line_error(capsys, "lies under", str(files["file"]))
    assert not out.exists()


def test_python_m_export_reports_one_line(files, tmp_path):
    out = tmp_path / "export"
    result = run_script("-m", "export", str(files["typed"]), "--out", str(out))
    assert result.returncode == FAILURE
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "num_blocks must be an integer" in result.stderr and not out.exists()


# --- train.py ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,culprits",
    [
        (["model.filters=abc"], ["filters must be an integer, got 'abc'"]),
        (["learning_rate=-1"], ["learning_rate must be positive"]),
        (["learning_rate=fast"], ["learning_rate must be a finite number, got 'fast'"]),
        (["segment_length=8192"], ["segment_length", "set model.segment_length"]),
        (["model.segment_length=0"], ["segment_length must be positive, got 0"]),
        (["model.kernel=3"], ["unknown DilatedConfig field(s) ['kernel']; valid fields"]),
        (["augmentations=[kazoo]"], ["unknown augmentation(s) ['kazoo']"]),
        (["gain=[1, 0.5]"], ["gain"]),
        (["epochs=[1"], ["epochs=[1", "not valid YAML"]),
    ],
)
def test_train_bad_settings(tmp_path, capsys, overrides, culprits):
    # A tiny, one-step run: should a case ever be accepted, the test fails in seconds.
    argv = ["--config", "dilated", "--data", "toy", "--out", str(tmp_path / "run")]
    argv += ["--set", "preset=tiny", "--set", "toy_songs=1", "--set", "toy_seconds=1"]
    argv += ["--set", "steps_per_epoch=1", "--epochs", "1", "--cache-dir", str(tmp_path / "c")]
    argv += [arg for o in overrides for arg in ("--set", o)]
    assert train_main(argv) == USAGE
    one_line_error(capsys, *culprits)
    assert not (tmp_path / "run").exists()


def test_model_segment_length_reaches_the_model():
    cfg = load_config("dilated", ["model.segment_length=8192", "preset=tiny"])
    assert cfg.model_config().segment_length == 8192
    assert "segment_length" not in cfg.to_dict()  # one home: the model config


def test_train_broken_yaml_and_bad_out(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1\nbatch_size: 2\n")
    assert train_main(["--config", str(broken), "--data", "toy"]) == USAGE
    one_line_error(capsys, str(broken), "not valid YAML at line 2")
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- 1\n- 2\n")
    assert train_main(["--config", str(not_a_mapping), "--data", "toy"]) == USAGE
    one_line_error(capsys, str(not_a_mapping), "mapping")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert train_main(["--config", "dilated", "--data", "toy", "--out", str(a_file)]) == USAGE
    one_line_error(capsys, "--out", "is an existing file")


def test_train_script_reports_one_line(tmp_path):
    script = str(REPO / "training" / "train.py")
    argv = ["--config", "wave_u_net", "--data", "toy", "--set", "model.levels=ten"]
    result = run_script(script, *argv, cwd=tmp_path)
    assert result.returncode == USAGE
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "levels must be an integer, got 'ten'" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no runs/ folder


@pytest.mark.parametrize(
    "argv",
    [
        ["separate", "SONG", "-o", "OUT"],
        ["demo", "-o", "OUT"],
        ["evaluate", "--data", "toy", "-o", "OUT"],
        ["export", keras_sep.DEFAULT_MODEL, "--out", "OUT"],
        ["make-toy-data", "OUT"],
    ],
    ids=lambda argv: argv[0],
)
def test_an_unwritable_output_folder_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch, argv
):
    # Tests run as root, for whom no folder refuses a write; the OS's refusal is simulated
    # where the check probes the folder.
    import keras_sep.errors

    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((22050, 2)), 22050)
    out = tmp_path / "locked" / "out"
    out.parent.mkdir()

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(keras_sep.errors.tempfile, "TemporaryFile", refuse)
    argv = [str(song) if a == "SONG" else str(out) if a == "OUT" else a for a in argv]
    assert main(argv) == USAGE
    one_line_error(capsys, str(out), "cannot write", "permission denied")
    assert list(out.parent.iterdir()) == []

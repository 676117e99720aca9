"""--precision: detection of bfloat16 units, the auto choice, and bf16 loading and separation.

Closeness of bf16 to float32 on every architecture and backend is in the model battery
(tests/test_models.py, run per backend by tests/test_backends.py).
"""

import json

import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep import precision
from keras_sep.cli import main
from keras_sep.errors import ConfigError
from keras_sep.separate import separate

EPYC = (
    "processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
    "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
)
OLD_XEON = "processor\t: 0\nmodel name\t: Intel Xeon E5-2690 v4\nflags\t\t: fpu sse2 avx2 fma\n"
READ_FLAGS = precision.cpu_flags
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.fixture()
def fake_cpu(monkeypatch, tmp_path):
    """fake_cpu(cpuinfo_text): the process sees that CPU and no GPU."""

    def use(text: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(precision, "accelerator", lambda: None)
        monkeypatch.setattr(precision, "cpu_flags", lambda: READ_FLAGS(path))
        monkeypatch.setattr(precision, "cpu_name", lambda: "Fake CPU")
        precision.device.cache_clear()

    yield use
    precision.device.cache_clear()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return keras_sep.save(
        keras_sep.build("dilated_dense", preset="tiny"), tmp_path_factory.mktemp("m") / "tiny"
    )


def test_cpu_flags_and_name_from_cpuinfo(tmp_path):
    for text, flag in ((EPYC, "avx512_bf16"), (GRAVITON, "bf16")):
        (tmp_path / "cpuinfo").write_text(text)
        assert flag in precision.cpu_flags(tmp_path / "cpuinfo")
    assert precision.cpu_name(tmp_path / "cpuinfo") != "AMD EPYC 9R14"  # Graviton: no name line
    (tmp_path / "cpuinfo").write_text(EPYC)
    assert precision.cpu_name(tmp_path / "cpuinfo") == "AMD EPYC 9R14"
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "chosen"),
    [
        ({"avx2", "fma", "avx512f"}, "float32"),
        (set(), "float32"),
        ({"avx2", "avx512_bf16"}, "bfloat16"),
        ({"avx2", "amx_bf16"}, "bfloat16"),
        ({"asimd", "bf16"}, "bfloat16"),
    ],
)
def test_auto_picks_bfloat16_only_with_bf16_units(flags, chosen):
    device = precision.cpu_device(flags, name="Test CPU")
    assert device.native_bf16 == (chosen == "bfloat16")
    assert precision.choose("auto", device)[0] == chosen
    assert precision.choose("float32", device)[0] == "float32"


def test_gpu_needs_compute_capability_8():
    assert not precision._gpu_device("Tesla V100", (7, 0)).native_bf16
    assert precision._gpu_device("A100", (8, 0)).native_bf16
    assert precision._gpu_device("H100", (9, 0)).native_bf16


def test_faked_cpu_without_flags_loads_float32_and_says_why(fake_cpu, folder, capsys):
    fake_cpu(OLD_XEON)
    assert keras_sep.load(folder, precision="auto").precision == "float32"
    assert "precision: float32 (auto: Fake CPU has no bfloat16 units" in capsys.readouterr().err
    fake_cpu(EPYC)
    assert keras_sep.load(folder, precision="auto").precision == "bfloat16"
    assert "precision: bfloat16 (auto: Fake CPU has avx512_bf16)" in capsys.readouterr().err


def test_benchmarks_name_the_cpu_and_its_flags(fake_cpu):
    fake_cpu(EPYC)
    line = precision.describe_machine()
    assert "CPU Fake CPU" in line and "flags: avx2 avx512f avx512_bf16" in line
    assert "bfloat16 units: yes" in line
    fake_cpu(OLD_XEON)
    assert "flags: avx2), " in precision.describe_machine()


def test_the_choice_is_printed_once(fake_cpu, folder, capsys, monkeypatch):
    monkeypatch.setattr(precision, "_announced", set())
    fake_cpu(EPYC)
    for _ in range(3):
        keras_sep.load(folder, precision="auto")
    assert capsys.readouterr().err.count("precision:") == 1


def test_explicit_bfloat16_without_units_is_allowed_but_noted():
    device = precision.cpu_device({"avx2"}, name="Old CPU")
    chosen, why = precision.choose("bfloat16", device)
    assert chosen == "bfloat16" and "slower than float32" in why


def test_backend_without_bf16_is_a_one_line_error(fake_cpu, folder, tmp_path, capsys, monkeypatch):
    fake_cpu(EPYC)
    monkeypatch.setattr(precision, "backend_bf16_error", lambda: "no bfloat16 Conv2D kernel")
    assert precision.choose("auto")[0] == "float32"  # auto falls back quietly
    with pytest.raises(ConfigError, match="use --precision float32"):
        precision.choose("bfloat16")
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((4000, 2), "float32"), 22050)
    out = tmp_path / "out"
    args = [str(song), "--model", str(folder), "-o", str(out), "--precision", "bfloat16"]
    code = main(["separate", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: the tensorflow backend")
    assert not out.exists() or not any(out.iterdir())  # no partial output


def test_this_backend_runs_bf16_convolutions():
    assert precision.backend_bf16_error() is None


def test_unknown_precision_is_refused(folder):
    with pytest.raises(ConfigError, match="valid: \\['auto', 'float32', 'bfloat16'\\]"):
        keras_sep.load(folder, precision="float8")


def test_bf16_load_uses_the_float32_weights_as_they_are(folder):
    files = sorted(p.name for p in folder.iterdir())
    f32 = keras_sep.load(folder)
    bf16 = keras_sep.load(folder, precision="bfloat16")
    assert (f32.precision, bf16.precision) == ("float32", "bfloat16")
    assert sorted(p.name for p in folder.iterdir()) == files  # nothing written beside them
    for a, b in zip(f32.weights, bf16.weights, strict=True):
        assert b.dtype == "float32"
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert bf16.get_layer("down1_conv1").compute_dtype == "bfloat16"
    for name in ("head_input", "vocals", "other"):  # the head stays float32
        assert bf16.get_layer(name).compute_dtype == "float32"


def test_separate_with_precision_converts_a_copy(folder):
    model = keras_sep.load(folder)
    mixture = np.random.default_rng(0).uniform(-0.5, 0.5, (9000, 2)).astype("float32")
    want = separate(model, mixture)
    got = separate(model, mixture, precision="bfloat16")
    assert model.precision == "float32"  # the caller's model is left as it was
    for source, stem in got.items():
        assert stem.dtype == np.float32
        assert 0 < np.abs(stem - want[source]).max() < 0.02 * np.abs(want[source]).max()
    np.testing.assert_allclose(sum(got.values()), mixture, atol=1e-5)  # float32 overlap-add


def test_keras_file_keeps_its_precision(folder, tmp_path):
    keras_sep.load(folder, precision="bfloat16").save(tmp_path / "m.keras")
    assert keras_sep.load(tmp_path / "m.keras").precision == "bfloat16"
    assert keras_sep.load(tmp_path / "m.keras", precision="float32").precision == "float32"


def test_exported_predictors_refuse_bfloat16(folder):
    class Runner:  # an exported artifact's runner: not a Keras model
        arch_config = keras_sep.load(folder).arch_config

        def predict_on_batch(self, x):
            return {s: x / 4 for s in self.arch_config.sources}

    mixture = np.zeros((4096, 2), "float32")
    assert set(separate(Runner(), mixture, precision="auto")) == set(keras_sep.SOURCES)
    with pytest.raises(ConfigError, match="runs at the precision it was exported in"):
        separate(Runner(), mixture, precision="bfloat16")


def test_evaluate_records_the_precision(folder, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["evaluate", "--model", f"m={folder}", "--data", "toy", "--tracks", "1"]
    assert main([*args, "-o", str(out), "--precision", "bfloat16"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["models"]["m"]["precision"] == "bfloat16"
    capsys.readouterr()
    # Resuming in another precision would mix the two in one table.
    assert main([*args, "-o", str(out), "--resume", "--precision", "float32"]) == 1
    assert "was scored in bfloat16" in capsys.readouterr().err

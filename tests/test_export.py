"""Export: every architecture (tiny preset) to SavedModel, TFLite and ONNX, each matching Keras.

One export per architecture, shared by the module (conversions are the slow part); inputs
are short. Needs TensorFlow, tf2onnx and onnxruntime, and the TensorFlow Keras backend.
"""

from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
if keras.backend.backend() != "tensorflow":
    pytest.skip("export needs the TensorFlow backend", allow_module_level=True)

import tensorflow as tf  # noqa: E402
from serving_stub import fake_tf_serving  # noqa: E402

import keras_sep  # noqa: E402
from keras_sep.errors import ExportError  # noqa: E402
from keras_sep.export import FORMATS, TOLERANCE, load_artifact  # noqa: E402
from keras_sep.export.artifacts import checksums  # noqa: E402
from keras_sep.export.checks import max_abs_error  # noqa: E402
from keras_sep.export.cli import main  # noqa: E402
from keras_sep.export.tflite import TFLiteRunner, _interpreter_class, convert_tflite, tflite_ops  # noqa: E402
from keras_sep.files import RECORD  # noqa: E402
from keras_sep.layers import DilatedConv1DTranspose  # noqa: E402
from keras_sep.separate import separate, separate_file  # noqa: E402
from keras_sep.serving import ServingClient, ServingError, read_manifest  # noqa: E402

ARCHS = ["wave_u_net", "dilated", "dilated_dense"]


def keras_outputs(model, x):
    # Eager: tracing a predict function per new shape would cost more than the tiny model.
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}


def random_batch(cfg, batch, length, seed):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (batch, cfg.valid_length(length), 2))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def export_tiny(tmp_path_factory):
    """Export a tiny model of an architecture once per module, through the CLI."""
    cache = {}

    def get(arch):
        if arch not in cache:
            root = tmp_path_factory.mktemp(arch)
            keras.utils.set_random_seed(ARCHS.index(arch))  # the same weights every run
            model = keras_sep.build(arch, preset="tiny")
            folder = keras_sep.save(model, root / "model")
            out = root / "export"
            # The parity tests check the artifacts themselves: skip the export's own check.
            assert main([str(folder), "--out", str(out), "--no-verify"]) == 0
            cache[arch] = SimpleNamespace(model=model, folder=folder, out=out)
        return cache[arch]

    return get


@pytest.fixture(scope="module", params=ARCHS)
def exported(request, export_tiny):
    """One architecture's export, with a runner per format."""
    result = export_tiny(request.param)
    result.runners = {fmt: load_artifact(result.out, fmt) for fmt in FORMATS}
    return result


@pytest.mark.slow
def test_layout_and_manifest(exported):
    out, cfg = exported.out, exported.model.arch_config
    manifest = read_manifest(out)
    # TF Serving's --model_base_path layout: <base>/<version>/saved_model.pb + variables/.
    assert (out / "saved_model" / "1" / "saved_model.pb").is_file()
    assert (out / "saved_model" / "1" / "variables").is_dir()
    assert {p.name for p in out.iterdir() if p.name != RECORD} == {
        "saved_model",
        "model.tflite",
        "model.onnx",
        "manifest.json",
    }
    assert manifest["sources"] == list(cfg.sources)
    assert manifest["sample_rate"] == cfg.sample_rate and manifest["channels"] == cfg.channels
    assert manifest["valid_length"]["multiple"] == cfg.length_multiple
    assert manifest["input"] == {"name": "mixture", "dtype": "float32", "shape": [None, None, 2]}
    assert [o["name"] for o in manifest["outputs"]] == list(cfg.sources)
    assert manifest["keras_sep_version"] == keras_sep.__version__
    assert manifest["checksums"] == checksums(out) and len(manifest["checksums"]) >= 5
    assert sorted(manifest["artifacts"]) == sorted(FORMATS)


@pytest.mark.slow
def test_saved_model_signature(exported):
    loaded = exported.runners["saved_model"]._loaded
    fn = loaded.signatures["serving_default"]
    (spec,) = fn.structured_input_signature[1].values()
    assert spec.name == "mixture" and spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, None, 2]
    assert sorted(fn.structured_outputs) == sorted(exported.model.sources)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_parity_with_keras(exported, fmt):
    """Float32 artifacts match Keras within 1e-4, at two different (batch, time) shapes."""
    runner, model = exported.runners[fmt], exported.model
    for seed, (batch, length) in enumerate([(2, 3000), (1, 1001)]):
        x = random_batch(model.arch_config, batch, length, seed)
        error = max_abs_error(keras_outputs(model, x), runner.predict_on_batch(x))
        print(f"{fmt} {x.shape}: max abs error {error:.2e}")  # shown with pytest -s / -rP
        assert error <= TOLERANCE["none"], (fmt, x.shape, error)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_separate_through_artifact(exported, fmt):
    """The shared overlap-add routine runs an artifact like the Keras model."""
    rng = np.random.default_rng(3)
    mixture = rng.uniform(-0.5, 0.5, (5000, 2)).astype(np.float32)
    kwargs = {"segment": 2048, "batch_size": 2}
    expected = separate(exported.model, mixture, **kwargs)
    got = separate(exported.runners[fmt], mixture, **kwargs)
    assert max_abs_error(expected, got) <= TOLERANCE["none"]
    assert got["vocals"].shape == mixture.shape


@pytest.mark.slow
def test_tflite_uses_builtin_ops_only(exported):
    ops = tflite_ops(exported.out / "model.tflite")
    assert read_manifest(exported.out)["artifacts"]["tflite"]["ops"] == ops
    assert "CONV_2D" in ops
    # No transposed convolution and no TensorFlow (Flex) or custom op.
    assert not [op for op in ops if "TRANSPOSE_CONV" in op or op in ("CUSTOM", "DELEGATE")]


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["dynamic", "float16"])
def test_quantized_tflite_parity(exported, quantize, tmp_path):
    path = convert_tflite(exported.out / "saved_model" / "1", tmp_path / "q.tflite", quantize)
    assert path.stat().st_size < (exported.out / "model.tflite").stat().st_size
    runner = TFLiteRunner(path, read_manifest(exported.out))
    x = random_batch(exported.model.arch_config, 2, 3000, 7)
    error = max_abs_error(keras_outputs(exported.model, x), runner.predict_on_batch(x))
    print(f"tflite {quantize}: max abs error {error:.2e}")
    assert 0 < error <= TOLERANCE[quantize], error


@pytest.mark.slow
def test_dilated_conv1d_transpose_tflite(tmp_path):
    """A dilated Keras Conv1DTranspose is no TFLite builtin; ours (same weights) converts.

    tests/test_layers.py proves that DilatedConv1DTranspose computes what
    keras.layers.Conv1DTranspose computes; here its TFLite version matches it.
    """
    inputs = keras.Input((None, 3), name="x")
    reference = keras.layers.Conv1DTranspose(4, 5, dilation_rate=2, padding="same")
    keras_model = keras.Model(inputs, reference(inputs))
    keras_model.export(str(tmp_path / "keras"), format="tf_saved_model", verbose=False)
    with pytest.raises(ExportError, match="TFLite conversion failed"):
        convert_tflite(tmp_path / "keras", tmp_path / "keras.tflite")

    ours = DilatedConv1DTranspose(4, 5, 2, impl="native")
    ours_model = keras.Model(inputs, ours(inputs))
    ours.set_weights(reference.get_weights())
    ours_model.export(str(tmp_path / "ours"), format="tf_saved_model", verbose=False)
    path = convert_tflite(tmp_path / "ours", tmp_path / "ours.tflite")
    assert "TRANSPOSE_CONV" not in tflite_ops(path)
    x = np.random.default_rng(0).standard_normal((2, 37, 3)).astype(np.float32)
    (y,) = _interpreter_class()(model_path=str(path)).get_signature_runner()(x=x).values()
    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(ours_model(x)), atol=1e-5)


# --- TF Serving client ---------------------------------------------------------------------
# The client talks to tests/serving_stub.py: TF Serving's REST protocol over the same SavedModel.


@pytest.fixture(scope="module")
def served(export_tiny):
    """The Wave-U-Net export (the architecture with a valid-length rule) behind a REST server."""
    result = export_tiny("wave_u_net")
    server = fake_tf_serving(
        result.out / "saved_model" / "1", "keras_sep", only=["serving_default"]
    )
    yield SimpleNamespace(
        model=result.model, out=result.out, url=f"http://127.0.0.1:{server.server_port}"
    )
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_serving_client_matches_keras(served):
    client = ServingClient(served.out, served.url, "keras_sep")
    client.check()
    mixture = np.random.default_rng(4).uniform(-0.5, 0.5, (3000, 2)).astype(np.float32)
    kwargs = {"segment": 1000, "batch_size": 2}  # 1000 -> 1008, Wave-U-Net's valid length
    got = separate(client, mixture, **kwargs)
    expected = separate(served.model, mixture, **kwargs)
    assert max_abs_error(expected, got) <= TOLERANCE["none"]


@pytest.mark.slow
def test_serving_client_separates_files(served, tmp_path):
    song = keras_sep.audio.write_audio(
        tmp_path / "song.wav", np.zeros((2205, 2), np.float32), 22050
    )
    client = ServingClient(served.out / "manifest.json", served.url, "keras_sep")
    stems = separate_file(client, song, batch_size=1).stems
    assert sorted(stems) == sorted(served.model.sources)
    assert all(stem.shape == (2205, 2) for stem in stems.values())
    # A model name the server does not know: one line naming the answer.
    with pytest.raises(ServingError, match="HTTP 404"):
        ServingClient(served.out, served.url, "other").check()


@pytest.mark.slow
def test_serving_client_unreachable(served):
    client = ServingClient(served.out, "http://127.0.0.1:9", "keras_sep", timeout=5)
    with pytest.raises(ServingError, match="cannot reach TF Serving"):
        client.predict_on_batch(np.zeros((1, 16, 2), np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        client.predict_on_batch(np.zeros((1, 20, 2), np.float32))


# --- errors: one line, nothing left behind --------------------------------------------------


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if name in p.name)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    # Wave-U-Net: the quickest to convert.
    return keras_sep.save(keras_sep.build("wave_u_net", preset="tiny"), root / "model")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--formats", "saved_model", "gif"], "unknown export format(s) ['gif']; valid formats"),
        (["--opset", "19"], "ONNX opset 19 is not supported by tf2onnx"),
        (["--opset", "3"], "use --opset between 7 and 18"),
        (["--quantize", "int4"], "unknown quantization 'int4'"),
        (["--tta", "5"], "tta must be from 1 to 4 for 2 channel(s), got 5"),
    ],
)
def test_bad_options(tiny_folder, tmp_path, capsys, extra, message):
    assert main([str(tiny_folder), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert leftovers(tmp_path, "out") == []


def test_a_keras_file_of_ours_exports_like_its_folder(tiny_folder, tmp_path):
    path = tmp_path / "tiny.keras"
    keras_sep.load(tiny_folder).save(path)
    assert main([str(path), "--out", str(tmp_path / "out"), "--formats", "onnx"]) == 0
    manifest = read_manifest(tmp_path / "out")
    assert manifest["architecture"] == "wave_u_net"
    assert manifest["artifacts"]["onnx"]["max_abs_error"] <= TOLERANCE["none"]


def test_not_a_model_folder(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert main([str(tmp_path / "notes"), "--out", str(tmp_path / "out")]) == 1
    assert "is not a model folder: config.json is missing" in capsys.readouterr().err
    assert leftovers(tmp_path, "out") == []


@pytest.mark.slow
def test_failure_leaves_nothing(tiny_folder, tmp_path, capsys, monkeypatch):
    """A converter failing after the SavedModel was written removes the whole attempt."""
    import keras_sep.export.onnx_model

    def refuse(*args, **kwargs):
        raise ExportError("ONNX conversion (opset 17) failed: refused for the test")

    monkeypatch.setattr(keras_sep.export.onnx_model, "convert_onnx", refuse)
    argv = [str(tiny_folder), "--out", str(tmp_path / "out"), "--formats", "saved_model", "onnx"]
    assert main(argv) == 1
    assert "refused for the test" in capsys.readouterr().err
    assert leftovers(tmp_path, "out") == []


@pytest.mark.slow
def test_out_folder_rules(tiny_folder, tmp_path, capsys):
    """An export replaces only its own earlier files and touches nothing else."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    (other / "model.onnx").write_text("the user's")
    assert main([str(tiny_folder), "--out", str(other), "--formats", "onnx"]) == 2
    assert "model.onnx exists and was not written by keras-sep" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"
    assert (other / "model.onnx").read_text() == "the user's"

    out = tmp_path / "out"
    argv = [str(tiny_folder), "--out", str(out), "--formats", "onnx"]
    assert main(argv) == 0  # with the export's own parity check
    first = read_manifest(out)
    assert first["artifacts"]["onnx"]["max_abs_error"] <= TOLERANCE["none"]
    (out / "notes.txt").write_text("the user's")
    assert main(argv) == 0  # its own earlier export is replaced without --overwrite
    assert (out / "notes.txt").read_text() == "the user's" and (out / "model.onnx").is_file()
    assert main([str(tiny_folder), "--out", str(other), "--formats", "onnx", "--overwrite"]) == 0
    assert (other / "keep.txt").read_text() == "mine" and (
        other / "model.onnx"
    ).stat().st_size > 100
    assert leftovers(tmp_path, "out") == ["out"]

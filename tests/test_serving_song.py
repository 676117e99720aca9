"""The SavedModel's whole-song signatures: the same plan as keras_sep.separate, the same stems.

The plan tests run the graph executor in process on stand-in models (seconds); the rest
export tiny models (and the bundled one) once per module and are marked slow.
"""

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

pytest.importorskip("tensorflow")
if keras.backend.backend() != "tensorflow":
    pytest.skip("export needs the TensorFlow backend", allow_module_level=True)

import soundfile as sf  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_sep  # noqa: E402
from keras_sep.config import WaveUNetConfig  # noqa: E402
from keras_sep.export.cli import main  # noqa: E402
from keras_sep.export.saved_model import SavedModelRunner  # noqa: E402
from keras_sep.export.song import song_function, song_settings  # noqa: E402
from keras_sep.separate import SegmentPlan, segment_plan, separate, separate_to_folder  # noqa: E402
from keras_sep.serving import ServingClient, read_manifest, song_chunks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "export.md"
BUNDLED = REPO / "keras_sep" / "pretrained" / "demo"
SEGMENT = 1024


# --- one plan, two executors (no export) ----------------------------------------------------


class Revealing:
    """A stand-in model whose output shows where each sample sat in its segment.

    Each source is the input with its channels weighted 1 and 2 (so a channel swap shows),
    plus a bias (so a polarity inversion shows), plus a ramp over the segment (so the
    segment starts, the window and the padding show in the overlap-add).
    """

    def __init__(self, cfg):
        self.arch_config = cfg

    def predict_on_batch(self, x):
        return self.predict(x)

    def predict(self, x):
        # NumPy constants: the same arithmetic on NumPy arrays and on TensorFlow tensors.
        length = x.shape[1]
        ramp = (np.arange(length, dtype=np.float32) / length).reshape(1, -1, 1)
        scale = np.array([1.0, 2.0], np.float32).reshape(1, 1, 2)
        return {
            s: (k + 1) * (x * scale + ramp) + 0.01 for k, s in enumerate(self.arch_config.sources)
        }


def graph_separate(cfg, tta, overlap=None):
    """The graph executor of export/song.py, traced once, around the Revealing model."""
    settings = song_settings(
        cfg, tta=tta, batch_size=3, **({"overlap": overlap} if overlap else {})
    )
    song = song_function(Revealing(cfg).predict, cfg, settings)
    fn = tf.function(song, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    return lambda x: {k: v.numpy() for k, v in fn(tf.constant(x)).items()}


@pytest.fixture(scope="module")
def tiny_cfg():
    return WaveUNetConfig.preset("tiny", segment_length=SEGMENT)


@pytest.mark.parametrize("tta", [1, 4])
def test_the_graph_executes_separates_plan(tiny_cfg, tta):
    """Fails if the graph's segments, window, padding, TTA or silence rule drift from separate's."""
    graph = graph_separate(tiny_cfg, tta)
    plan = segment_plan(tiny_cfg)
    rng = np.random.default_rng(tta)
    lengths = [1, 7, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * plan.hop + SEGMENT, 10 * SEGMENT + 7]
    for length in lengths:
        x = rng.uniform(-0.5, 0.5, (length, 2)).astype(np.float32)
        if length > 4 * SEGMENT:  # digital silence in the middle: those segments are skipped
            x[3 * SEGMENT : 6 * SEGMENT] = 0
        expected = separate(Revealing(tiny_cfg), x, batch_size=3, tta=tta)
        got = graph(x)
        for source in tiny_cfg.sources:
            assert got[source].shape == x.shape
            np.testing.assert_allclose(
                got[source], expected[source], atol=1e-5, err_msg=str(length)
            )
    # Mono in, mono out, as separate_stream: the mean of the stems of the duplicated input.
    mono = rng.uniform(-0.5, 0.5, (2 * SEGMENT, 1)).astype(np.float32)
    expected = separate(Revealing(tiny_cfg), np.repeat(mono, 2, 1), batch_size=3, tta=tta)
    got = graph(mono)
    np.testing.assert_allclose(got["vocals"], expected["vocals"].mean(1, keepdims=True), atol=1e-5)


def test_the_drift_test_sees_a_different_plan(tiny_cfg):
    """The model above makes the plan visible: another overlap changes its stems."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (5 * SEGMENT, 2)).astype(np.float32)
    other = graph_separate(tiny_cfg, 1, overlap=0.25)(x)
    expected = separate(Revealing(tiny_cfg), x, batch_size=3, tta=1)
    assert np.abs(other["vocals"] - expected["vocals"]).max() > 1e-2


def test_plan_starts_are_the_same_from_numpy_and_tensorflow():
    ops = SimpleNamespace(arange=tf.range, minimum=tf.minimum, maximum=tf.maximum)
    for segment, overlap in [(16, 1), (16, 0), (1024, 64), (7, 3)]:
        plan = SegmentPlan(segment, overlap, np.ones(segment, np.float32))
        for total in range(1, 5 * segment):
            starts = plan.starts(total)
            # The rule: every hop, the last segment ending at the end, one from 0 if short.
            rule = (
                [0] if total <= segment else [*range(0, total - segment, plan.hop), total - segment]
            )
            assert starts.tolist() == rule
            assert plan.starts(tf.constant(total), xp=ops).numpy().tolist() == rule
            assert plan.padded(total) == max(total, segment)


def test_song_chunks_join_into_the_whole_song(tiny_cfg):
    """Every kept sample lies in its chunk together with every segment that covers it."""
    plan = segment_plan(tiny_cfg)
    for total in [1, SEGMENT, 5 * SEGMENT, 40 * SEGMENT + 13, 41 * plan.hop + SEGMENT]:
        starts = plan.starts(total)
        for per_chunk in [2, 3, 8]:
            chunks = song_chunks(plan, total, per_chunk)
            assert chunks[0][2] == 0 and chunks[-1][3] == total
            for (_, _, _, until), (_, _, keep, _) in zip(chunks, chunks[1:], strict=False):
                assert until == keep  # contiguous, no gap, no overlap
            for start, stop, keep, until in chunks:
                assert start in starts and (stop - start >= SEGMENT or len(chunks) == 1)
                covering = [s for s in starts if s < until and s + SEGMENT > keep]
                assert all(start <= s and s + SEGMENT <= max(stop, SEGMENT) for s in covering)


# --- exported models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """Export a model folder once per module through the CLI; returns its pieces."""
    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            if name == "bundled":
                folder = BUNDLED
            else:
                keras.utils.set_random_seed(len(name))
                folder = keras_sep.save(keras_sep.build(name, preset="tiny"), root / "model")
            out = root / "export"
            assert main([str(folder), "--out", str(out), "--formats", "saved_model"]) == 0
            manifest = read_manifest(out)
            runner = SavedModelRunner(out / "saved_model" / "1", manifest)
            # The model the graph wraps: loaded as the export loads it.
            model = keras_sep.load(folder, conv_impl="native")
            cache[name] = SimpleNamespace(folder=folder, out=out, runner=runner, model=model)
        return cache[name]

    return get


def parity(exported, length, seed=0, channels=2):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (length, channels)).astype(np.float32)
    got = exported.runner.separate_song(x)
    wide = np.repeat(x, 2, 1) if channels == 1 else x
    # separate's defaults (tta 4, overlap 1/16) without the soft mask and the level gate,
    # which the graph leaves to the client (test_runners_post_filter_as_the_model_folder_does)
    expected = separate(exported.model, wide, gate=None, mask=None)
    if channels == 1:
        expected = {s: v.mean(1, keepdims=True) for s, v in expected.items()}
    error = max(float(np.abs(got[s] - expected[s]).max()) for s in expected)
    assert all(got[s].shape == x.shape for s in expected)
    return error


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wave_u_net", "dilated", "dilated_dense", "bundled"])
def test_separate_song_equals_separate(export, name):
    exported = export(name)
    segment = read_manifest(exported.out)["artifacts"]["saved_model"]["song"]["segment"]
    assert segment == exported.model.arch_config.valid_length(16384)
    for length in [1, 1000, segment]:
        error = parity(exported, length)
        print(f"{name} {length}: max abs {error:.2e}")
        assert error <= 1e-5, (name, length, error)
    assert parity(exported, 1000, channels=1) <= 1e-5


@pytest.mark.slow
def test_runners_post_filter_as_the_model_folder_does(export):
    exported = export("bundled")
    manifest, info = read_manifest(exported.out), keras_sep.folder.read_info(BUNDLED)
    assert manifest["gate"] == info["gate"] and manifest["mask"] == info["mask"]
    x = np.random.default_rng(4).uniform(-0.5, 0.5, (5 * 22050, 2)).astype(np.float32)
    x[: 3 * 22050] *= np.linspace(0, 1, 3 * 22050)[:, None]  # a quiet start, for the gate
    local, served = separate(exported.model, x), separate(exported.runner, x)
    for off in ({"gate": None}, {"mask": None}):  # each acted
        other = separate(exported.model, x, **off)
        assert any(np.abs(local[s] - other[s]).max() > 1e-3 for s in local), off
    assert max(float(np.abs(local[s] - served[s]).max()) for s in local) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wave_u_net", "dilated", "bundled"])
def test_separate_song_equals_separate_on_three_minutes(export, name):
    exported = export(name)
    error = parity(exported, 3 * 60 * 22050, seed=3)
    print(f"{name} 3 min: max abs {error:.2e}")
    assert error <= 1e-5


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures_and_tflite_keeps_one(export, tmp_path):
    exported = export("wave_u_net")
    # site-packages/tensorflow/__init__.py -> the environment's bin/, activated or not
    cli = Path(tf.__file__).parents[4] / "bin" / "saved_model_cli"
    shown = subprocess.run(
        [
            str(cli) if cli.exists() else "saved_model_cli",
            "show",
            "--dir",
            str(exported.out / "saved_model" / "1"),
            "--all",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ["serving_default", "separate_song", "separate_wav"]:
        assert f"signature_def['{name}']" in shown
    assert "inputs['audio'] tensor_info:" in shown and "outputs['vocals_bytes']" in shown
    # TFLite converts serving_default only.
    from keras_sep.export.tflite import _interpreter_class, convert_tflite

    path = convert_tflite(exported.out / "saved_model" / "1", tmp_path / "m.tflite")
    assert list(_interpreter_class()(model_path=str(path)).get_signature_list()) == [
        "serving_default"
    ]


@pytest.mark.slow
def test_separate_wav_refuses_bad_input(export):
    fn = export("wave_u_net").runner._loaded.signatures["separate_wav"]
    song = tf.constant(np.zeros((100, 2), np.float32))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="must be at the model sample rate, 22050 Hz"
    ):
        fn(wav=tf.audio.encode_wav(song, 44100))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"1 \(mono\) or 2 channels"):
        fn(wav=tf.audio.encode_wav(tf.zeros((100, 3)), 22050))
    song_fn = export("wave_u_net").runner._loaded.signatures["separate_song"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="audio holds no samples"):
        song_fn(audio=tf.zeros((0, 2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        song_fn(audio=tf.fill((10, 2), np.nan))


# --- the docs' requests, run as written -----------------------------------------------------


def doc_block(tag: str) -> str:
    """The fenced code block that follows ``<!-- executed by ...: tag -->`` in docs/export.md."""
    match = re.search(
        rf"<!-- executed by tests/test_serving_song.py: {tag} -->\n```\w+\n(.*?)```",
        DOCS.read_text(),
        re.S,
    )
    assert match, f"docs/export.md lost its {tag} example"
    return match.group(1)


@pytest.fixture(scope="module")
def song_and_stems(export, tmp_path_factory):
    """A 20 s song at the model's rate, and the stems `keras-sep separate` writes for it."""
    from keras_sep.data import toy

    exported = export("wave_u_net")
    root = tmp_path_factory.mktemp("song")
    mixture = sum(toy.generate_song(0, 20.0, 22050).values()) * 0.5
    sf.write(root / "song.wav", mixture, 22050, subtype="PCM_16")
    separate_to_folder(exported.model, root / "song.wav", root / "stems")
    stems = {
        s: sf.read(root / "stems" / f"{s}.wav", dtype="float32")[0] for s in exported.model.sources
    }
    return SimpleNamespace(exported=exported, song=root / "song.wav", stems=stems)


@pytest.mark.slow
def test_the_docs_curl_example(song_and_stems, tmp_path):
    from serving_stub import fake_tf_serving

    exported = song_and_stems.exported
    server = fake_tf_serving(exported.out / "saved_model" / "1", "keras_sep")
    try:
        script = doc_block("rest-wav").replace(
            "http://localhost:8501", f"http://127.0.0.1:{server.server_port}"
        )
        (tmp_path / "song.wav").write_bytes(song_and_stems.song.read_bytes())
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True)
    finally:
        server.shutdown()
        server.server_close()
    assert server.calls == ["separate_wav"]
    for source, expected in song_and_stems.stems.items():
        got, rate = sf.read(tmp_path / f"{source}.wav", dtype="float32")
        assert rate == 22050 and got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4, source


@pytest.mark.slow
def test_the_docs_grpc_example(song_and_stems, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_serving")
    from serving_stub import grpc_tf_serving

    exported = song_and_stems.exported
    server, port = grpc_tf_serving(exported.out / "saved_model" / "1", "keras_sep")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "song.wav").write_bytes(song_and_stems.song.read_bytes())
    scope = {}
    try:
        exec(doc_block("grpc-float").replace("localhost:8500", f"127.0.0.1:{port}"), scope)
    finally:
        server.stop(None)
    audio = sf.read(tmp_path / "song.wav", dtype="float32", always_2d=True)[0]
    expected = separate(exported.model, audio)
    for source, stem in scope["stems"].items():
        assert np.abs(stem - expected[source]).max() <= 1e-5
        written = sf.read(tmp_path / f"{source}.wav", dtype="float32")[0]
        assert np.abs(written - song_and_stems.stems[source]).max() < 1e-4


# --- the Python client ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(export):
    """The Wave-U-Net export served with all its signatures, and with serving_default only."""
    from serving_stub import fake_tf_serving

    exported = export("wave_u_net")
    path = exported.out / "saved_model" / "1"
    full, old = (
        fake_tf_serving(path, "keras_sep"),
        fake_tf_serving(path, "keras_sep", only=["serving_default"]),
    )
    yield SimpleNamespace(exported=exported, full=full, old=old)
    for server in (full, old):
        server.shutdown()
        server.server_close()


def client_for(servers, server, **kwargs):
    server.calls.clear()
    return ServingClient(servers.exported.out, f"http://127.0.0.1:{server.server_port}", **kwargs)


@pytest.mark.slow
def test_client_sends_whole_songs_when_offered(servers):
    exported = servers.exported
    x = np.random.default_rng(5).uniform(-0.5, 0.5, (5 * 16384, 2)).astype(np.float32)
    expected = separate(exported.model, x)
    client = client_for(servers, servers.full)
    got = separate(client, x)
    assert servers.full.calls == ["separate_song"]  # one request for the song
    assert max(float(np.abs(got[s] - expected[s]).max()) for s in expected) <= 1e-5
    # A long song goes in chunks of whole segments; the joined stems are the same.
    client = client_for(servers, servers.full, chunk_segments=2)
    got = separate(client, x)
    chunks = song_chunks(segment_plan(exported.model.arch_config), len(x), 2)
    assert servers.full.calls == ["separate_song"] * len(chunks) and len(chunks) == 5
    assert max(float(np.abs(got[s] - expected[s]).max()) for s in expected) <= 1e-5


@pytest.mark.slow
def test_client_falls_back_to_segments(servers):
    exported = servers.exported
    x = np.random.default_rng(6).uniform(-0.5, 0.5, (20000, 2)).astype(np.float32)
    # A server without separate_song (an older export): segments to serving_default.
    client = client_for(servers, servers.old)
    got = separate(client, x, tta=1)
    assert set(servers.old.calls) == {"serving_default"} and len(servers.old.calls) == 1
    expected = separate(exported.model, x, tta=1)
    assert max(float(np.abs(got[s] - expected[s]).max()) for s in expected) <= 1e-4
    # Settings other than the exported ones (tta 1, not 4): segments, as asked.
    client = client_for(servers, servers.full)
    got = separate(client, x, tta=1)
    assert set(servers.full.calls) == {"serving_default"}
    assert max(float(np.abs(got[s] - expected[s]).max()) for s in expected) <= 1e-4
    # And whole_song=False turns the song path off.
    client = client_for(servers, servers.full, whole_song=False)
    separate(client, x)
    assert set(servers.full.calls) == {"serving_default"}

"""MUSDB loading through musdb, the cache, both pipelines, and train.py end to end."""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import keras_sep
from keras_sep.data import toy
from keras_sep.data.cache import cache_track, cache_tracks
from keras_sep.data.sampler import Augmentation, SegmentSampler
from keras_sep.data.tracks import musdb_tracks, toy_tracks
from keras_sep.errors import ConfigError, DataError
from keras_sep.files import RECORD
from keras_sep.training import pipeline
from keras_sep.training.config import load_config
from keras_sep.training.distribute import CLUSTER_ENV, Cluster, Worker, validation_share
from keras_sep.training.train import SILENT_SAMPLE, load_tracks, main, target_loss, train

SECONDS = 3.0


@pytest.fixture(scope="module")
def hq_root(tmp_path_factory):
    """A MUSDB18-HQ tree: 3 train songs (1 of them validation) and 1 test song, 44.1 kHz."""
    root = tmp_path_factory.mktemp("musdb18hq")
    return toy.write_musdb_tree(root, train=2, valid=1, test=1, seconds=SECONDS)


@pytest.mark.slow
def test_musdb_loader_reads_the_hq_tree(hq_root):
    train = list(musdb_tracks(hq_root, "train", "train"))
    valid = list(musdb_tracks(hq_root, "train", "valid"))
    test = list(musdb_tracks(hq_root, "test"))
    assert [t.name for t in train] == [toy.song_name(0), toy.song_name(1)]
    assert [t.name for t in valid] == [toy.song_name(2)]
    assert [t.name for t in test] == [toy.song_name(3)]
    track = train[0]
    assert track.rate == 44100 and track.length == int(SECONDS * 44100)
    assert sorted(track.sources) == sorted(keras_sep.SOURCES)
    assert track.sources["vocals"].shape == (track.length, 2)


def test_musdb_loader_errors(tmp_path, hq_root):
    with pytest.raises(DataError, match="does not exist"):
        list(musdb_tracks(tmp_path / "missing"))
    with pytest.raises(DataError, match="no train/ or test/"):
        list(musdb_tracks(tmp_path))
    with pytest.raises(DataError, match="split"):
        list(musdb_tracks(hq_root, "test", "valid"))


# stempeg leaves its ffmpeg pipes for the garbage collector (ResourceWarning, not ours).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_stems_layout_through_musdb(tmp_path):
    """The .stem.mp4 layout (MUSDB18) goes through musdb/stempeg and ffmpeg."""
    stempeg = pytest.importorskip("stempeg")
    stems = toy.generate_song(5, seconds=2.0, sample_rate=44100)
    order = ["drums", "bass", "other", "vocals"]  # MUSDB18's stream order after the mixture
    audio = np.stack([sum(stems.values())] + [stems[s] for s in order])
    (tmp_path / "test").mkdir()
    stempeg.write_stems(str(tmp_path / "test" / "Song A.stem.mp4"), audio, sample_rate=44100)
    (track,) = musdb_tracks(tmp_path, "test")
    assert track.name == "Song A" and track.rate == 44100
    # AAC is lossy: the decoded vocals stay close to what was written.
    decoded = track.sources["vocals"][: stems["vocals"].shape[0]]
    error = np.mean((decoded - stems["vocals"][: decoded.shape[0]]) ** 2)
    assert error < 0.1 * np.mean(stems["vocals"] ** 2)


@pytest.mark.slow
def test_cache_is_reused_and_rebuilt(hq_root, tmp_path):
    (track,) = list(musdb_tracks(hq_root, "test"))
    cached, built = cache_track(track, tmp_path, 22050)
    assert built and cached.rate == 22050
    assert cached.length == int(SECONDS * 22050)
    np.testing.assert_allclose(
        cached.sources["bass"][1000:1010],
        keras_sep.audio.resample(track.sources["bass"], 44100, 22050)[1000:1010],
    )
    (track,) = list(musdb_tracks(hq_root, "test"))
    assert cache_track(track, tmp_path, 22050)[1] is False  # reused: nothing decoded
    assert track.sources._data is None

    folder = next((tmp_path / "22050hz").iterdir())
    npy = folder / "drums.npy"
    npy.write_bytes(npy.read_bytes()[:1000])  # truncated: corrupt
    assert cache_track(track, tmp_path, 22050)[1] is True
    (folder / "meta.json").unlink()  # half-written: meta is written last
    assert cache_track(track, tmp_path, 22050)[1] is True
    wav = hq_root / "test" / toy.song_name(3) / "mixture.wav"
    os.utime(wav, ns=(0, 10**9))  # the source file changed: stale
    (track,) = list(musdb_tracks(hq_root, "test"))
    assert cache_track(track, tmp_path, 22050)[1] is True


@pytest.mark.slow
def test_cache_survives_processes_building_it_at_once(tmp_path):
    """Workers of a multi-worker run cache the same tracks into one folder at the same time."""
    tracks = list(toy_tracks(2, seed=5, seconds=1.0, sample_rate=22050))
    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(cache_tracks, tracks, tmp_path, 11025) for _ in range(4)]
        results = [run.result() for run in runs]  # re-raises any worker's error
    for cached in results[1:]:
        for a, b in zip(results[0], cached, strict=True):
            np.testing.assert_array_equal(a.sources["vocals"], b.sources["vocals"])
    assert sorted(p.name[0] for p in (tmp_path / "11025hz").iterdir()) == ["T", "T"]


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    cached = cache_tracks(
        toy_tracks(3, seed=7, seconds=2.0, sample_rate=22050), tmp_path_factory.mktemp("c"), 22050
    )
    augmentation = Augmentation.from_names(["channel_swap", "polarity", "remix"])
    return SegmentSampler(cached, keras_sep.SOURCES, 4096, seed=3, augmentation=augmentation)


def test_examples_follow_the_augmentation_rules(sampler):
    raw, factors, swap = sampler.draw(0)
    assert raw.shape == (4, 4096, 2) and raw.dtype == np.float32
    for n in range(40):
        _, factors, _ = sampler.draw(n)
        assert np.all((np.abs(factors) >= 0.7) & (np.abs(factors) <= 1.0))
    mixture, targets = sampler.batch(5, 8)
    assert mixture.shape == (8, 4096, 2) and mixture.dtype == np.float32
    np.testing.assert_allclose(sum(targets.values()), mixture, atol=1e-6)
    # Deterministic from the seed, different across examples.
    np.testing.assert_array_equal(sampler.batch(5, 8)[0], mixture)
    assert not np.allclose(sampler.batch(6, 8)[0], mixture)


def test_paper_augmentation_keeps_stems_aligned(sampler):
    plain = SegmentSampler(sampler.tracks, keras_sep.SOURCES, 4096, seed=3)
    raw, factors, swap = plain.draw(11)
    assert not swap and np.all(factors > 0)
    mixture, targets = plain.example(11)
    np.testing.assert_allclose((targets / factors[:, None, None]), raw, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_tf_data_and_pydataset_yield_identical_batches(sampler):
    tf_batches = list(pipeline.tf_dataset(sampler, 4, start_batch=2, num_batches=3))
    py_batches = pipeline.TrainBatches(sampler, 4, start_batch=2, num_batches=3)
    assert len(tf_batches) == len(py_batches) == 3
    for (tf_x, tf_y), i in zip(tf_batches, range(3), strict=True):
        py_x, py_y = py_batches[i]
        np.testing.assert_array_equal(tf_x.numpy(), py_x)
        for source in keras_sep.SOURCES:
            np.testing.assert_array_equal(tf_y[source].numpy(), py_y[source])
    tf_valid = list(pipeline.tf_validation_dataset(sampler, 4, 2))
    py_valid = pipeline.ValidationBatches(sampler, 4, 2)
    assert len(tf_valid) == len(py_valid)
    np.testing.assert_array_equal(tf_valid[-1][0].numpy(), py_valid[len(py_valid) - 1][0])


def test_training_says_where_its_cache_is_and_how_big(tmp_path, capsys):
    cache = tmp_path / "cache"
    settings = ["data=[toy]", "toy_songs=1", "toy_valid_songs=1", "toy_seconds=1"]
    cfg = load_config("dilated", [*settings, f"cache_dir={cache}"])
    load_tracks(cfg, 22050, keras_sep.SOURCES, progress=False)
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert size > 300_000  # two one-second songs, four float32 stereo stems each
    assert f"cache: {cache} ({size / 1e6:.0f} MB;" in capsys.readouterr().err


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown training config key"):
        load_config("dilated_dense", ["batch_sise=4"])
    with pytest.raises(ConfigError, match="shipped"):
        load_config("no_such_config")
    cfg = load_config("fig3b_blocks3_dense", ["model.kernel_size=5", "batch_size=2"])
    assert cfg.model == {"num_blocks": 3, "dilation": "constant:512", "kernel_size": 5}
    assert cfg.batch_size == 2 and cfg.epochs == 30
    with pytest.raises(ConfigError, match="missing must be in"):
        load_config("demo_timbre", ["missing_stems={vocals: 1.5}"])
    with pytest.raises(ConfigError, match="unknown timbre"):
        load_config("demo_timbre", ["timbre_probability={pitch: 0.5}"])
    with pytest.raises(ConfigError, match="toy_missing"):
        load_config("demo_timbre", ["toy_missing=2"])
    cfg = load_config("demo_timbre")
    assert "timbre" in cfg.augmentations and cfg.missing_stems["vocals"] > 0
    with pytest.raises(ConfigError, match="silent_target_weight must be positive"):
        load_config("demo_timbre", ["silent_target_weight=0"])


def test_silent_target_weight_weighs_only_the_silent_samples():
    import keras

    rng = np.random.default_rng(0)
    y_true = rng.uniform(-0.5, 0.5, (3, 64, 2)).astype("float32")
    y_true[1] = 0.0  # a missing stem
    y_true[2, :16] = SILENT_SAMPLE / 2  # a rest, below -100 dBFS
    y_pred = (y_true + rng.normal(0, 0.1, y_true.shape)).astype("float32")
    plain = np.asarray(target_loss()(y_true, y_pred))
    expected = np.asarray(keras.losses.MeanSquaredError(reduction=None)(y_true, y_pred))
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
    weighted = np.asarray(target_loss(10.0)(y_true, y_pred))
    np.testing.assert_allclose(weighted[0], plain[0], rtol=1e-6)  # nothing silent
    np.testing.assert_allclose(weighted[1], 10 * plain[1], rtol=1e-5)  # all silent
    np.testing.assert_allclose(weighted[2, :16], 10 * plain[2, :16], rtol=1e-5)
    np.testing.assert_allclose(weighted[2, 16:], plain[2, 16:], rtol=1e-6)


def test_silent_target_span_segment_weighs_only_wholly_silent_targets():
    rng = np.random.default_rng(1)
    y_true = rng.uniform(-0.5, 0.5, (2, 64, 2)).astype("float32")
    y_true[0] = 0.0  # a missing stem
    y_true[1, :48] = 0.0  # a rest: most of the segment, not all of it
    y_pred = (y_true + rng.normal(0, 0.1, y_true.shape)).astype("float32")
    plain = np.asarray(target_loss()(y_true, y_pred))
    weighted = np.asarray(target_loss(10.0, "segment")(y_true, y_pred))
    np.testing.assert_allclose(weighted[0], 10 * plain[0], rtol=1e-5)
    np.testing.assert_allclose(weighted[1], plain[1], rtol=1e-6)
    with pytest.raises(ConfigError, match="silent_target_span must be one of"):
        load_config("demo_timbre", ["silent_target_span=rests"])
    assert (
        load_config("demo_timbre", ["silent_target_span=segment"]).silent_target_span == "segment"
    )


SMALL = [
    "preset=tiny",
    "toy_songs=3",
    "toy_valid_songs=1",
    "toy_seconds=4",
    "model.segment_length=2048",
    "batch_size=4",
    "steps_per_epoch=12",
    "valid_segments_per_track=4",
    "learning_rate=3e-3",
    "jit_compile=false",
]


def test_cli_errors(tmp_path, capsys):
    assert main(["--config", "dilated_dense", "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "no training data" in capsys.readouterr().err
    args = ["--data", "toy", "--out", str(tmp_path / "r"), "--set", "preset=tiny"]
    assert main(["--config", "wave_u_net", "--set", "model.segment_length=1000", *args]) == 2
    assert "not a multiple of 16" in capsys.readouterr().err
    assert main(["--config", "dilated", "--set", "model.dilation=wide", *args]) == 2
    assert "unknown dilation scheme" in capsys.readouterr().err
    assert main(["--config", "dilated", "--musdb-root", str(tmp_path / "nope"), *args[2:]]) == 1
    assert "does not exist" in capsys.readouterr().err


class KillAfter:
    """Stand-in for a killed process: stop hard after an epoch's backup is written."""

    def __init__(self, epoch):
        import keras

        class _Kill(keras.callbacks.Callback):
            def on_epoch_end(inner, e, logs=None):
                if e + 1 == epoch:
                    raise KeyboardInterrupt

        self.callback = _Kill()


@pytest.mark.slow
def test_training_lowers_validation_loss_and_resumes(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(
        "dilated_dense", [*SMALL, "epochs=3", f"cache_dir={tmp_path / 'cache'}", "data=[toy]"]
    )
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, progress=False, callbacks=[KillAfter(1).callback])
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    history = train(cfg, out, progress=False)  # the same command again resumes
    assert len(history["val_loss"]) == 2  # epochs 2 and 3 only
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    val = [float(r["val_loss"]) for r in rows]
    assert val[-1] < val[0], val
    assert not (out / "backup").exists()  # removed after a finished run
    info = json.loads((out / "config.json").read_text())
    assert info["training"]["batch_size"] == 4 and info["best"]["val_loss"] == min(val)
    assert (out / "history.png").stat().st_size > 1000
    model = keras_sep.load(out)
    assert model.arch_config.segment_length == 2048
    # The folder holds the model's weights only, not Adam's two slots per weight.
    assert (out / "model.weights.h5").stat().st_size < 4 * model.count_params() + 200_000
    with pytest.raises(ConfigError, match="already holds"):
        train(cfg, out, progress=False)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        tf.get_logger().setLevel("INFO")  # logs the strategy's devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from keras_sep.training.config import load_config
        from keras_sep.training.train import train
        cfg = load_config("dilated", {SMALL!r} + ["epochs=1", "steps_per_epoch=3",
                          "strategy=mirrored", "data=[toy]", "cache_dir={tmp_path / "cache"}"])
        history = train(cfg, {str(tmp_path / "run")!r}, progress=False)
        print("losses", history["loss"])
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Using MirroredStrategy with devices" in done.stderr
    assert "CPU:0" in done.stderr and "CPU:1" in done.stderr
    assert keras_sep.load(tmp_path / "run").count_params() > 0


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


MULTIWORKER = """
import hashlib, os, sys
import keras
from keras_sep.training.config import load_config
from keras_sep.training.train import train

class Digest(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        weights = b"".join(w.tobytes() for w in self.model.get_weights())
        print("weights", hashlib.sha256(weights).hexdigest())

class Stop(keras.callbacks.Callback):
    # Stand-in for a killed run: stop after epoch $STOP_AFTER_EPOCH's backup is written.
    def on_epoch_end(self, epoch, logs=None):
        if str(epoch + 1) == os.environ.get("STOP_AFTER_EPOCH"):
            sys.exit(3)

cfg = load_config("wave_u_net", sys.argv[3:])
history = train(cfg, sys.argv[2], progress=False, callbacks=[Digest(), Stop()])
print("val_loss", history["val_loss"])
"""


@pytest.mark.slow
def test_multiworker_strategy_trains_two_workers_in_sync(tmp_path):
    """Two train.py workers on localhost: weights stay identical, the chief writes the run."""
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    out = tmp_path / "run"
    overrides = [
        *SMALL,
        "epochs=2",
        "steps_per_epoch=3",
        "strategy=multiworker",
        "data=[toy]",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CONFIG": tf_config}
        command = [sys.executable, "-c", MULTIWORKER, "x", str(out), *overrides]
        workers.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    results = [w.communicate(timeout=300) for w in workers]
    # One worker's failure shows in the other as a heartbeat timeout: report both.
    failed = [
        f"worker {i}: {err[-2500:]}" for i, (_, err) in enumerate(results) if workers[i].returncode
    ]
    assert not failed, "\n".join(failed)
    digests = [
        [ln for ln in stdout.splitlines() if ln.startswith("weights")] for stdout, _ in results
    ]
    assert len(digests[0]) == 1 and digests[0] == digests[1]  # gradients were all-reduced
    logs = [
        [ln for ln in stdout.splitlines() if ln.startswith("val_loss")] for stdout, _ in results
    ]
    assert logs[0] == logs[1]
    assert not (out / "worker-1").exists()  # the other worker cleaned up after itself
    info = json.loads((out / "config.json").read_text())
    assert info["training"]["replicas"] == 2

    # The logged validation loss is the mean over all validation segments, not one
    # worker's share.
    assert info["best"]["val_loss"] == pytest.approx(one_process_val_loss(out, overrides), rel=1e-5)


def one_process_val_loss(out, overrides: list) -> float:
    """The validation loss of the model saved in ``out``, evaluated here in one process."""
    cfg = load_config("wave_u_net", overrides)
    model = keras_sep.load(out)
    arch = model.arch_config
    _, valid, _ = load_tracks(cfg, arch.sample_rate, arch.sources, progress=False)
    sampler = SegmentSampler(valid, arch.sources, arch.segment_length, seed=cfg.seed)
    losses = []
    for track, offset in sampler.validation_plan(cfg.valid_segments_per_track):
        mixture, targets = sampler.validation_example(track, offset)
        estimates = model.predict_on_batch(mixture[None])
        losses.append(
            sum(np.mean((estimates[s][0] - targets[i]) ** 2) for i, s in enumerate(arch.sources))
        )
    return float(np.mean(losses))


def test_sampler_shards_draw_different_examples(sampler):
    one, two = (
        SegmentSampler(sampler.tracks, keras_sep.SOURCES, 1024, seed=3, shard=(i, 2))
        for i in range(2)
    )
    assert not np.array_equal(one.example(0)[0], two.example(0)[0])
    again = SegmentSampler(sampler.tracks, keras_sep.SOURCES, 1024, seed=3, shard=(1, 2))
    np.testing.assert_array_equal(two.example(5)[0], again.example(5)[0])


def test_multiworker_rejects_a_bad_tf_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}}')
    args = ["--config", "dilated", "--data", "toy", "--quiet", "--strategy", "multiworker"]
    assert main([*args, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TF_CONFIG is not valid") and err.count("\n") == 1


# keras.distribution under JAX: --strategy mirrored / multiworker --backend jax.


def jax_env(**extra) -> dict:
    """A subprocess environment for JAX: no cluster unless given, CPU devices as given."""
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    return {**env, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run_folder_losses(folder) -> dict:
    with open(folder / "history.csv") as f:
        return {k: float(v) for k, v in next(csv.DictReader(f)).items()}


# Each pipeline, on two devices and on one.
FOUR_RUNS = """
import sys
from keras_sep.training.train import main
args, out = sys.argv[2:], sys.argv[1]
for pipeline in ("tfdata", "pydataset"):
    run = [*args, "--set", f"pipeline={pipeline}"]
    assert main([*run, "--strategy", "mirrored", "--out", f"{out}/{pipeline}-2"]) == 0
    assert main([*run, "--out", f"{out}/{pipeline}-1"]) == 0
"""


@pytest.mark.slow
def test_jax_data_parallel_on_two_devices_matches_one_device(tmp_path):
    """train.py --backend jax --strategy mirrored: 3 steps on 2 host devices equal 3 steps on
    one device, fed by tf.data or by a PyDataset."""
    args = ["--backend", "jax", "--config", "wave_u_net", "--data", "toy", "--set", "preset=tiny"]
    args += [f"--set={s}" for s in SMALL if not s.startswith("jit_compile")]
    args += ["--epochs", "1", "--set", "steps_per_epoch=3", "--quiet"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    env = jax_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        [sys.executable, "-c", FOUR_RUNS, str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("strategy mirrored: 2 replicas in 1 process") == 2
    for feed in ("tfdata", "pydataset"):
        one, two = tmp_path / f"{feed}-1", tmp_path / f"{feed}-2"
        for folder, replicas in ((one, 1), (two, 2)):
            info = json.loads((folder / "config.json").read_text())["training"]
            assert (info["backend"], info["replicas"], info["pipeline"]) == (
                "jax",
                replicas,
                feed,
            )
        single, double = run_folder_losses(one), run_folder_losses(two)
        assert single.keys() == double.keys()
        for key in single:
            assert double[key] == pytest.approx(single[key], abs=1e-5), (feed, key)
        weights = keras_sep.load(one).get_weights()
        for a, b in zip(weights, keras_sep.load(two).get_weights(), strict=True):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def run_cluster(script_args: list, env: dict, processes: int = 2, timeout: int = 1200) -> list:
    """Start ``processes`` JAX processes on 127.0.0.1; (returncode, stdout, stderr) of each.

    A process that outlives ``timeout`` (a peer died, the cluster never formed) is killed;
    it is a hang guard, far above the minute an idle 2-core machine takes.
    """
    (port,) = free_ports(1)
    cluster = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes),
        # The coordinator listens on the loopback interface only.
        "JAX_COORDINATOR_BIND_ADDRESS": f"127.0.0.1:{port}",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", MULTIWORKER, "x", *script_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, **cluster, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)},
        )
        for i in range(processes)
    ]
    results = []
    try:
        for w in workers:
            results.append((*w.communicate(timeout=timeout), w.returncode))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.communicate()
    return [(code, out, err) for out, err, code in results]


@pytest.mark.slow
def test_jax_two_process_cluster_trains_in_sync_and_resumes(tmp_path):
    """Two JAX processes on 127.0.0.1: stopped after step 1, resumed for step 2, identical
    weights on both; process 0 alone wrote the run folder."""
    out = tmp_path / "run"
    overrides = [s for s in SMALL if not s.startswith("jit_compile")]
    overrides += ["epochs=2", "steps_per_epoch=1", "strategy=multiworker", "data=[toy]"]
    overrides += [f"cache_dir={tmp_path / 'cache'}"]
    env = jax_env(XLA_FLAGS="--xla_force_host_platform_device_count=1")

    stopped = run_cluster([str(out), *overrides], {**env, "STOP_AFTER_EPOCH": "1"})
    assert [code for code, _, _ in stopped] == [3, 3], [err[-2500:] for _, _, err in stopped]
    assert resume_epoch_of(out / "backup") == 1
    assert resume_epoch_of(out / "worker-1" / "backup") == 1

    resumed = run_cluster([str(out), *overrides], env)
    failed = [f"process {i}: {err[-2500:]}" for i, (code, _, err) in enumerate(resumed) if code]
    assert not failed, "\n".join(failed)
    assert "resuming" in resumed[0][2]
    assert "strategy multiworker: 2 replicas in 2 processes" in resumed[0][2]
    digests = [[ln for ln in o.splitlines() if ln.startswith("weights")] for _, o, _ in resumed]
    assert len(digests[0]) == 1 and digests[0] == digests[1]
    logs = [[ln for ln in o.splitlines() if ln.startswith("val_loss")] for _, o, _ in resumed]
    assert len(logs[0]) == 1 and logs[0] == logs[1]
    assert sorted(p.name for p in out.iterdir() if p.name != RECORD) == [
        "config.json",
        "history.csv",
        "history.png",
        "model.weights.h5",
        "tensorboard",
        "train_config.yaml",
    ]
    with open(out / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]
    info = json.loads((out / "config.json").read_text())
    training = info["training"]
    assert (training["backend"], training["strategy"], training["replicas"]) == (
        "jax",
        "multiworker",
        2,
    )
    # Each process validated on its half: the logged loss is the mean over all segments.
    assert info["best"]["val_loss"] == pytest.approx(one_process_val_loss(out, overrides), rel=1e-5)


def resume_epoch_of(backup) -> int:
    return json.loads((backup / "training_metadata.json").read_text())["epoch"]


def test_jax_cluster_spec_is_checked():
    Cluster("127.0.0.1:1234", 2, 1).check()
    bad = {
        "no coordinator": Cluster(None, 2, 0),
        "no num processes": Cluster("host:1234", None, 0),
        "no process id": Cluster("host:1234", 2, None),
        "must be HOST:PORT": Cluster("host", 2, 0),
        "out of range for 2 processes": Cluster("host:1234", 2, 2),
        "at least 1": Cluster("host:1234", 0, 0),
    }
    for message, cluster in bad.items():
        with pytest.raises(ConfigError, match=message):
            cluster.check()
    env = {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:1234",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        "KERAS_DISTRIBUTION_PROCESS_ID": "1",
    }
    assert Cluster.from_environment(env) == Cluster("10.0.0.1:1234", 2, 1)
    flags = Cluster(None, None, 0)
    assert flags.merged(Cluster.from_environment(env)) == Cluster("10.0.0.1:1234", 2, 0)
    with pytest.raises(ConfigError, match="lists 2 addresses but"):
        Cluster.from_environment({**env, "KERAS_DISTRIBUTION_NUM_PROCESSES": "3"})
    with pytest.raises(ConfigError, match="whole number"):
        Cluster.from_environment({**env, "KERAS_DISTRIBUTION_PROCESS_ID": "one"})


@pytest.fixture
def as_backend(monkeypatch):
    """Make train.py believe Keras runs on another backend (no process of its own needed:
    these checks fail before the backend computes anything)."""
    import keras

    for name in CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)

    def use(name):
        monkeypatch.setattr(keras.backend, "backend", lambda: name)
        monkeypatch.setenv("KERAS_BACKEND", name)

    return use


def test_bad_jax_cluster_is_one_line_before_any_work(tmp_path, capsys, as_backend, monkeypatch):
    as_backend("jax")
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--backend", "jax", "--config", "dilated", "--data", "toy", "--quiet"]
    args += ["--strategy", "multiworker", "--out", str(out), "--cache-dir", str(cache)]
    assert main([*args, "--num-processes", "2", "--process-id", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the JAX cluster has no coordinator") and err.count("\n") == 1
    assert "--coordinator" in err and "KERAS_DISTRIBUTION_JOB_ADDRESSES" in err
    cluster = ["--coordinator", "127.0.0.1:1234", "--num-processes", "2"]
    assert main([*args, *cluster, "--process-id", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "error: process id 2 is out of range for 2 processes (0 to 1)\n"
    # From the environment as well.
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "5")
    assert main([*args, *cluster]) == 2
    assert "process id 5 is out of range" in capsys.readouterr().err
    assert not out.exists() and not cache.exists()


def test_cluster_flags_and_strategies_outside_jax(tmp_path, capsys, as_backend):
    args = ["--config", "dilated", "--data", "toy", "--quiet", "--out", str(tmp_path / "r")]
    args += ["--cache-dir", str(tmp_path / "c")]
    as_backend("torch")
    for strategy in ("mirrored", "multiworker"):
        assert main([*args, "--backend", "torch", "--strategy", strategy]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: --strategy {strategy} needs --backend jax (keras.distribution) or "
            "--backend tensorflow (tf.distribute); torch trains on one device\n"
        )
    as_backend("tensorflow")
    assert main([*args, "--strategy", "multiworker", "--coordinator", "h:1"]) == 2
    assert "TensorFlow reads TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_validation_is_shared_evenly_over_processes_and_devices():
    plan = list(range(10))
    assert validation_share(plan, Worker(0, 1), 1) == plan
    assert validation_share(plan, Worker(0, 1), 4) == plan[:8]  # 2 segments per device
    shares = [validation_share(plan, Worker(i, 2), 4) for i in range(2)]
    assert shares == [plan[:4], plan[4:8]]
    with pytest.raises(ConfigError, match="cannot be split over 16 replicas"):
        validation_share(plan, Worker(0, 2), 16)

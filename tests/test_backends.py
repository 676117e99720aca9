"""Every Keras backend: the model battery, .keras files across backends, and no-TensorFlow training.

A Keras process has one backend, so each backend runs in its own subprocess.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_sep
from keras_sep.folder import read_info

ROOT = Path(__file__).resolve().parents[1]
OTHERS = ["jax", "torch"]
# Between them these two use every custom layer (conv, transposed conv, decimate, upsample).
EXCHANGED = ["wave_u_net", "dilated_dense"]


# A guard against a hung subprocess, not a speed check. The battery took 414 s under PyTorch
# on a loaded 2-core machine and 518 s under JAX 0.12; at load 16 the JAX battery failed
# under a 900 s limit, yet passed when run alone.
def run(backend: str, args: list[str], timeout: int = 2400) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )
    assert done.returncode == 0, f"{backend} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHERS)
def test_model_and_layer_battery(backend):
    files = ["tests/test_models.py", "tests/test_layers.py"]
    marks = "not paper and not structure"  # default-backend-only tests: see test_models.py
    # Under JAX the eager bfloat16 steps take a minute (op by op on the CPU);
    # test_mixed_bfloat16_training_step below compiles every architecture's bf16 step there.
    skip = ["-k", "not mixed_bfloat16_forward"] if backend == "jax" else []
    args = ["-m", "pytest", *files, "-q", "-m", marks, *skip, "-p", "no:cacheprovider"]
    done = run(backend, args)
    assert " passed" in done.stdout and "failed" not in done.stdout


INPUT = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 512, 2)).astype("float32")


def save_models(folder: Path) -> None:
    """Save each exchanged architecture as .keras, with its outputs on INPUT."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in EXCHANGED:
        keras.utils.set_random_seed(1)
        model = keras_sep.build(name, preset="tiny")
        model.save(folder / f"{name}.keras")
        y = model.predict_on_batch(INPUT)
        np.save(folder / f"{name}.npy", np.stack([np.asarray(y[s]) for s in model.sources]))


def check_models(folders: list[Path]) -> float:
    """Load other backends' .keras files here; the largest output difference."""
    worst = 0.0
    for folder in folders:
        for name in EXCHANGED:
            model = keras.models.load_model(folder / f"{name}.keras")
            y = model.predict_on_batch(INPUT)
            got = np.stack([np.asarray(y[s]) for s in model.sources])
            worst = max(worst, float(np.abs(got - np.load(folder / f"{name}.npy")).max()))
    return worst


def exchange(argv: list[str]) -> None:
    """Subprocess entry: check the folders argv[2:], then save into argv[1] (unless '-')."""
    worst = check_models([Path(f) for f in argv[2:]])
    assert worst < 1e-4, worst
    if argv[1] != "-":
        save_models(Path(argv[1]))
    print("max abs difference", worst)


EXCHANGE = "import runpy, sys; runpy.run_path('tests/test_backends.py')['exchange'](sys.argv)"


@pytest.mark.slow
def test_keras_files_load_under_every_other_backend(tmp_path):
    # A chain, so that each backend loads the other two's files with 3 subprocesses.
    tf_dir, jax_dir, torch_dir = (tmp_path / b for b in ("tensorflow", "jax", "torch"))
    save_models(tf_dir)  # this process runs TensorFlow
    run("jax", ["-c", EXCHANGE, str(jax_dir), str(tf_dir)])
    run("torch", ["-c", EXCHANGE, str(torch_dir), str(tf_dir), str(jax_dir)])
    assert check_models([jax_dir, torch_dir]) < 1e-4
    done = run("jax", ["-c", EXCHANGE, "-", str(torch_dir)])
    assert "max abs difference" in done.stdout


TF_FREE = textwrap.dedent(
    """
    import runpy, sys
    sys.modules["tensorflow"] = None  # TensorFlow made unimportable
    import keras_sep, keras, numpy as np
    assert keras.backend.backend() == "jax"
    model = keras_sep.build("dilated_dense", preset="tiny")
    x = np.zeros((1, 300, 2), "float32")
    assert model.predict_on_batch(x)["vocals"].shape == (1, 300, 2)
    sys.argv = ["train.py", "--config", "dilated_dense", "--data", "toy", "--set", "preset=tiny",
                "--set", "toy_songs=2", "--set", "toy_valid_songs=1", "--set", "toy_seconds=3",
                "--set", "model.segment_length=2048", "--set", "batch_size=4",
                "--set", "steps_per_epoch=4", "--epochs", "2", "--out", sys.argv[1],
                "--cache-dir", sys.argv[2], "--quiet"]
    try:
        runpy.run_path("training/train.py", run_name="__main__")
    except SystemExit as e:
        assert e.code == 0, e.code
    assert sys.modules["tensorflow"] is None
    print("trained without tensorflow")
    """
)


@pytest.mark.slow
def test_training_without_tensorflow_loads_under_tensorflow(tmp_path):
    run("jax", ["-c", TF_FREE, str(tmp_path / "run"), str(tmp_path / "cache")])
    info = read_info(tmp_path / "run")
    assert info["keras_backend"] == "jax" and info["training"]["pipeline"] == "pydataset"
    model = keras_sep.load(tmp_path / "run")  # this process runs TensorFlow
    assert keras.backend.backend() == "tensorflow"
    y = model.predict_on_batch(np.zeros((1, 2048, 2), "float32"))
    assert np.isfinite(y["vocals"]).all()


BF16_STEP = textwrap.dedent(
    """
    import keras, numpy as np, keras_sep
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 512, 2)).astype("float32")

    def first_steps(name, impl, policy):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        model = keras_sep.build(name, preset="tiny", conv_impl=impl)
        model.compile(keras.optimizers.Adam(1e-3), loss="mse")
        y = {s: x / 4 for s in model.sources}
        losses = [float(model.train_on_batch(x, y)[0]) for _ in range(2)]
        keras.mixed_precision.set_global_policy("float32")
        body = [c for c in model.layers if hasattr(c, "kernel") and c.name not in model.sources]
        computes = "bfloat16" if policy == "mixed_bfloat16" else "float32"
        assert body and all(c.compute_dtype == computes for c in body), (name, policy)
        assert losses[1] != losses[0], (name, impl, losses)  # the first step moved the weights
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        assert all(model.get_layer(s).compute_dtype == "float32" for s in model.sources[:-1])
        assert all(o.dtype == "float32" for o in model.outputs)
        assert np.isfinite(losses).all(), (name, impl, losses)
        print(name, impl, policy, losses, flush=True)
        return losses[0]

    # "phase" is what auto picks under JAX on GPUs (on CPUs it picks another formulation).
    for name, impl in [("wave_u_net", "auto"), ("dilated", "phase"), ("dilated_dense", "auto")]:
        first_steps(name, impl, "mixed_bfloat16")
    bf16 = first_steps("dilated_dense", "phase", "mixed_bfloat16")
    f32 = first_steps("dilated_dense", "phase", "float32")
    assert abs(bf16 - f32) < 0.05 * f32, (bf16, f32)  # the same weights: bf16 rounding only
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHERS)
def test_mixed_bfloat16_training_step(backend):
    # Under JAX a bf16 DDU step never reported on the GPU (issue 19); JAX's CPU compiles
    # the same graph, so a dtype error or a failed compile would show here. The battery's
    # bf16 test (test_models.py) runs eagerly with auto; this one compiles the step, as
    # fit does, with every formulation auto picks somewhere.
    done = run(backend, ["-c", BF16_STEP], timeout=600)
    assert done.stdout.count("mixed_bfloat16 [") == 4, done.stdout


def test_backend_switch_in_a_running_process_is_refused():
    from keras_sep.errors import ConfigError
    from keras_sep.training.train import select_backend

    with pytest.raises(ConfigError, match="start a new process"):
        select_backend("jax")

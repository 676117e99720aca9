"""Jobs run on the model folder's ONNX copy, without importing TensorFlow, where it pays.

``import tensorflow`` alone takes 2 to 2.4 s on a 2-core machine, and loading the Keras
model and tracing its first call another 0.6 s, before a single segment is separated.
ONNX Runtime (a dependency of keras-sep) imports and loads the bundled model in about
0.2 s. So when a model folder holds ``model.onnx``, an ONNX copy of its own weights
(``export/bundle_model.py`` writes the bundled model's, and
``keras_sep.export.onnx_model.write_onnx_copy`` any folder's), ``keras-sep separate`` and
``demo`` run it instead of the Keras model:

- wherever Keras would compute in float32 on the CPU (``--precision float32``, or
  ``auto`` on a CPU without bfloat16 units, as most laptops): the bundled model's ONNX
  copy (a Wave-U-Net written straight as ONNX, ``export/onnx_graph.py``) separates as
  fast as Keras in float32 or faster, so every job starts without TensorFlow;
- where Keras would compute in bfloat16 (``auto`` on a CPU with bfloat16 units) or may
  find a GPU: for jobs under ``KERAS_AFTER`` seconds of audio only. Longer jobs load the
  Keras model, whose faster calls repay its start-up.

Both run the same float32 weights: their stems agree to about 1e-6. ``model.onnx``
records the SHA-256 of the weights it was made from and is used only while they match, so
retraining into the folder never runs stale weights.

Starting every job on ONNX Runtime and moving to Keras once it had loaded in a thread was
tried: on 2 cores the import and the model fight for the cores and Python's lock, and a
3-minute song took 10.5 s against 9.2 s on Keras alone (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from keras_sep.folder import WEIGHTS_FILE, read_config, read_info
from keras_sep.separate import CALLS_AT_ONCE
from keras_sep.threads import usable_cores

ONNX_FILE = "model.onnx"
# The ONNX model's metadata key holding the SHA-256 of the weights file it was made from.
WEIGHTS_KEY = "keras_sep_weights_sha256"
# Audio seconds below which a job runs on ONNX Runtime where Keras would compute in
# bfloat16 or may use a GPU. The whole command, bundled model, 2-core Xeon with bfloat16
# units: ONNX Runtime 7.8-8.0 s for a 3-minute song against 8.5-9.0 s for Keras in
# bfloat16, 24.0 s for 10 minutes against 20.1-20.8 s (break-even near 4.5 minutes).
KERAS_AFTER = 240.0
# What separate says when it runs the ONNX copy, after "precision: float32".
ONNX_NOTE = "the model's ONNX copy on ONNX Runtime, without starting TensorFlow"
# Device files of a GPU that TensorFlow, JAX or PyTorch could compute on (NVIDIA, AMD).
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd")
# Precisions the ONNX copy computes: it is float32 (bfloat16 asked for by name goes to Keras).
ONNX_PRECISIONS = (None, "auto", "float32")


def weights_digest(folder: str | os.PathLike) -> str:
    """SHA-256 of a model folder's weights file."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_runner(folder: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime predictor of the folder's ``model.onnx``, if it was made from the
    folder's current weights (and ONNX Runtime loads it); else None."""
    from keras_sep.serving import OnnxRunner, config_summary

    path = Path(folder) / ONNX_FILE
    if not path.is_file() or not (Path(folder) / WEIGHTS_FILE).is_file():
        return None
    _, cfg = read_config(folder)
    manifest = {**config_summary(cfg), "input": {"name": "mixture"}}
    # CALLS_AT_ONCE calls running (``overlap_add``), each on its share of the cores: the
    # bundled model separated 60 s in 3.4 s on 2 cores, against 4.0 to 4.4 s with one
    # call on both.
    cores = threads or usable_cores()
    try:
        runner = OnnxRunner(path, manifest, num_threads=max(1, cores // CALLS_AT_ONCE))
    except Exception:  # no ONNX Runtime, or a damaged file: Keras runs the model instead
        return None
    runner.parallel_calls = True
    runner.any_batch = True  # its graph takes any batch size and builds nothing
    runner.folder_info = read_info(folder)  # what the Keras model would know, its gate
    made_from = runner.session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)
    return runner if made_from == weights_digest(folder) else None


def audio_seconds(paths: Iterable[str | os.PathLike]) -> float:
    """Total length of the audio files in seconds, from their headers (libsndfile, else
    ffprobe for what ffmpeg decodes); infinite if neither can tell."""
    import soundfile as sf

    total = 0.0
    for path in paths:
        try:
            total += sf.info(str(path)).duration
        except Exception:  # not a format libsndfile reads: ask ffprobe
            total += _ffprobe_seconds(path)
    return total


def _ffprobe_seconds(path: str | os.PathLike) -> float:
    """The file's duration as ffprobe reads it; infinite when it cannot."""
    if shutil.which("ffprobe") is None:
        return math.inf
    cmd = ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"]
    try:
        done = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=30)
        return float(done.stdout.strip()) if done.returncode == 0 else math.inf
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return math.inf


def keras_float32_on_cpu(precision: str | None) -> bool:
    """Whether the Keras model would compute in float32 on the CPU at ``precision``: asked
    for (float32, or None: as saved), or ``auto`` on a CPU without bfloat16 units, and no
    GPU device on the machine. Reads /proc/cpuinfo and /dev; imports no backend."""
    from keras_sep.precision import cpu_device

    if any(os.path.exists(path) for path in GPU_DEVICES):
        return False
    return precision in (None, "float32") or not cpu_device().native_bf16


def onnx_separator(
    folder: str | os.PathLike,
    precision: str | None = "auto",
    threads: int | None = None,
    seconds: float = math.inf,
):
    """The ONNX Runtime predictor for a job of ``seconds`` of audio, or None when the Keras
    model should run it (module docstring)."""
    if precision not in ONNX_PRECISIONS:
        return None
    if seconds >= KERAS_AFTER and not keras_float32_on_cpu(precision):
        return None
    return onnx_runner(folder, threads)


def load_separator(
    folder: str | os.PathLike,
    precision: str | None = "auto",
    threads: int | None = None,
    seconds: float = math.inf,
):
    """``onnx_separator``'s predictor, else the Keras model at ``precision``."""
    import keras_sep

    fast = onnx_separator(folder, precision, threads, seconds)
    return fast if fast is not None else keras_sep.load(folder, precision=precision)

"""Separate from the first second: ONNX Runtime runs the model while Keras loads.

``import tensorflow`` alone takes about 2.4 s on a 2-core machine, and loading the Keras
model and tracing its first call another 0.7 s, before a single segment is separated.
ONNX Runtime (a dependency of keras-sep) imports and loads the bundled model in about
0.1 s. So when a model folder holds ``model.onnx``, an ONNX copy of its own weights
(``training/bundle_model.py`` writes one for the bundled model, ``write_onnx`` for any
folder), ``keras-sep separate`` starts on it at once:

- a job of less than ``KERAS_AFTER`` seconds of audio runs on ONNX Runtime alone, since
  it ends before TensorFlow would have loaded;
- a longer one also loads the Keras model in a thread and sends every model call to it
  once it is ready: Keras is faster per segment on the CPU (the bundled model: 6.3 to 7.6
  ms a segment against 7.3 to 9.3 for ONNX Runtime on a 2-core Xeon, and about half in
  bfloat16 where the CPU has it, which ``--precision auto`` picks).

Both run the same float32 weights: their stems agree to about 1e-6 (bfloat16 Keras to
its own precision). ``model.onnx`` records the SHA-256 of the weights it was made from,
and is used only while they match, so retraining into the folder never runs stale weights.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from keras_sep.folder import WEIGHTS_FILE, read_config
from keras_sep.separate import CALLS_AT_ONCE

ONNX_FILE = "model.onnx"
# The ONNX model's metadata key holding the SHA-256 of the weights file it was made from.
WEIGHTS_KEY = "keras_sep_weights_sha256"
# Audio seconds below which a job runs on ONNX Runtime alone. The bundled model takes 3.1
# s to start on Keras (2-core Xeon) and ONNX Runtime separates at about RTF 0.06 with the
# default 4 TTA passes, so a job under 2 minutes is done on ONNX Runtime in about the time
# Keras needs to load, and loading it alongside would only take cores from the work.
KERAS_AFTER = 120.0
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
    from keras_sep.export.onnx_model import OnnxRunner
    from keras_sep.serving import config_summary

    path = Path(folder) / ONNX_FILE
    if not path.is_file() or not (Path(folder) / WEIGHTS_FILE).is_file():
        return None
    _, cfg = read_config(folder)
    manifest = {**config_summary(cfg), "input": {"name": "mixture"}}
    # One thread per call and CALLS_AT_ONCE calls running (``overlap_add``): the bundled
    # model separated 60 s in 3.4 s so on 2 cores, against 4.0 to 4.4 s with one call
    # on both cores.
    cores = threads or len(os.sched_getaffinity(0))
    try:
        runner = OnnxRunner(path, manifest, num_threads=max(1, cores // CALLS_AT_ONCE))
    except Exception:  # no ONNX Runtime, or a damaged file: Keras runs the model instead
        return None
    runner.parallel_calls = True
    made_from = runner.session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)
    return runner if made_from == weights_digest(folder) else None


def write_onnx(folder: str | os.PathLike) -> Path:
    """Write the folder's ``model.onnx``, recording its weights' hash, and check it runs
    the model as Keras does (within 1e-4, as ``keras-sep export`` checks its artifacts).

    Needs TensorFlow and tf2onnx (the ``export`` command's converter).
    """
    import onnx

    import keras_sep
    from keras_sep.errors import ExportError
    from keras_sep.export.artifacts import CHECK_LENGTH, TOLERANCE
    from keras_sep.export.checks import max_abs_error
    from keras_sep.export.onnx_model import DEFAULT_OPSET, convert_onnx

    path = Path(folder) / ONNX_FILE
    model = keras_sep.load(folder, conv_impl="native")
    convert_onnx(model, path, DEFAULT_OPSET)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = WEIGHTS_KEY, weights_digest(folder)
    onnx.save(proto, str(path))
    runner = onnx_runner(folder)
    cfg = model.arch_config
    x = np.random.default_rng(0).uniform(
        -0.5, 0.5, (2, cfg.valid_length(CHECK_LENGTH), cfg.channels)
    )
    error = max_abs_error(model.predict_on_batch(x.astype(np.float32)), runner.predict_on_batch(x))
    if error > TOLERANCE["none"]:
        path.unlink()
        raise ExportError(f"{path}: ONNX Runtime is {error:.2e} off Keras (bound 1e-4)")
    return path


def audio_seconds(paths: Iterable[str | os.PathLike]) -> float:
    """Total length of the audio files in seconds; infinite if a header cannot tell."""
    import soundfile as sf

    total = 0.0
    for path in paths:
        try:
            total += sf.info(str(path)).duration
        except Exception:  # a format libsndfile cannot read: ffmpeg decodes it later
            return math.inf
    return total


def load_separator(
    folder: str | os.PathLike,
    precision: str | None = "auto",
    threads: int | None = None,
    seconds: float = math.inf,
):
    """The predictor ``keras-sep separate`` uses for ``seconds`` of audio (module docstring):
    ONNX Runtime alone, ONNX Runtime until Keras is ready, or the Keras model."""
    import keras_sep

    fast = onnx_runner(folder, threads) if precision in ONNX_PRECISIONS else None
    if fast is None:
        return keras_sep.load(folder, precision=precision)
    return fast if seconds < KERAS_AFTER else keras_sep.load(folder, precision=precision)

"""ONNX: the Keras model's forward pass as an ONNX graph, run with ONNX Runtime.

A Wave-U-Net is written straight as ONNX (``onnx_graph.py``: channels first, 35% faster
under ONNX Runtime than the converted graph); the dilated models, and a Wave-U-Net below
opset 16, are converted with tf2onnx, what ``keras.Model.export(format="onnx")`` uses
under TensorFlow; calling it directly lets us check the opset first and name the dynamic
axes. Batch and time stay dynamic (named ``batch`` and ``time``); outputs keep the source
names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_sep.config import WaveUNetConfig
from keras_sep.errors import ExportError, UsageError, require
from keras_sep.serving import OnnxRunner  # noqa: F401  (export's runner of model.onnx)

from .checks import first_line
from .onnx_graph import MIN_OPSET as GRAPH_MIN_OPSET
from .onnx_graph import wave_u_net_graph

if TYPE_CHECKING:
    from keras_sep.models import SeparationModel

DEFAULT_OPSET = 17
# ONNX Runtime only guarantees opsets from 7 on.
MIN_OPSET = 7


def supported_opsets() -> range:
    """Opsets that both tf2onnx and the installed onnx package can write."""
    tf2onnx = require("tf2onnx", "ONNX export")
    onnx = require("onnx", "ONNX export")
    top = min(max(tf2onnx.constants.OPSET_TO_IR_VERSION), onnx.defs.onnx_opset_version())
    return range(MIN_OPSET, top + 1)


def check_opset(opset: int) -> int:
    """``opset`` if the converter supports it, else ``ExportError`` naming the valid range."""
    valid = supported_opsets()
    if opset not in valid:
        tf2onnx = require("tf2onnx", "ONNX export")
        raise UsageError(
            f"ONNX opset {opset} is not supported by tf2onnx {tf2onnx.__version__}: "
            f"use --opset between {valid.start} and {valid.stop - 1} (default {DEFAULT_OPSET})"
        )
    return opset


def convert_onnx(
    model: SeparationModel, path: str | os.PathLike, opset: int = DEFAULT_OPSET
) -> Path:
    """Write ``model`` (a ``SeparationModel``) as an ONNX file at ``opset``."""
    check_opset(opset)
    if isinstance(model.arch_config, WaveUNetConfig) and opset >= GRAPH_MIN_OPSET:
        # Written straight as ONNX: faster under ONNX Runtime than tf2onnx's graph.
        path = Path(path)
        require("onnx", "ONNX export").save(wave_u_net_graph(model, opset), str(path))
        return path
    tf = require("tensorflow", "ONNX export")
    tf2onnx = require("tf2onnx", "ONNX export")
    onnx = require("onnx", "ONNX export")
    # tf2onnx logs every optimizer pass at INFO; keep warnings and errors.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    spec = (tf.TensorSpec((None, None, model.channels), tf.float32, name="mixture"),)
    # No AutoGraph: the forward pass has no Python control flow to convert.
    forward = tf.function(
        lambda mixture: model(mixture, training=False), input_signature=spec, autograph=False
    )
    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises ValueError, RuntimeError, KeyError...
        raise ExportError(f"ONNX conversion (opset {opset}) failed: {first_line(e)}") from None
    # tf2onnx calls the dynamic axes unk__N; name them so the file documents itself.
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, ("batch", "time"), strict=False):
            if not dim.HasField("dim_value"):
                dim.dim_param = name
    path = Path(path)
    onnx.save(proto, str(path))
    return path


def write_onnx_copy(folder: str | os.PathLike) -> Path:
    """Write the model folder's ``model.onnx`` (``keras_sep.warm_start``), recording the
    SHA-256 of its weights, and check that it runs the model as Keras does (within 1e-4,
    as ``keras-sep export`` checks its artifacts)."""
    import keras_sep
    from keras_sep.warm_start import ONNX_FILE, WEIGHTS_KEY, onnx_runner, weights_digest

    from .artifacts import CHECK_LENGTH, TOLERANCE
    from .checks import max_abs_error

    onnx = require("onnx", "ONNX export")
    path = Path(folder) / ONNX_FILE
    model = keras_sep.load(folder, conv_impl="native")
    convert_onnx(model, path)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = WEIGHTS_KEY, weights_digest(folder)
    onnx.save(proto, str(path))
    runner = onnx_runner(folder)
    cfg = model.arch_config
    shape = (2, cfg.valid_length(CHECK_LENGTH), cfg.channels)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, shape).astype(np.float32)
    error = max_abs_error(model.predict_on_batch(x), runner.predict_on_batch(x))
    if error > TOLERANCE["none"]:
        path.unlink()
        raise ExportError(f"{path}: ONNX Runtime is {error:.2e} off Keras (bound 1e-4)")
    return path

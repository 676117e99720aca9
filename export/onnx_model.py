"""ONNX: the Keras model's forward pass converted with tf2onnx, run with ONNX Runtime.

tf2onnx is what ``keras.Model.export(format="onnx")`` uses under TensorFlow; calling it
directly lets us check the opset first and name the dynamic axes. Batch and time stay
dynamic (named ``batch`` and ``time``); outputs keep the source names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_sep.errors import ExportError, UsageError, require
from keras_sep.serving import ExportedModel

from .checks import first_line

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


class OnnxRunner(ExportedModel):
    """Runs an ONNX file with ONNX Runtime's CPU provider."""

    def __init__(
        self, path: str | os.PathLike, manifest: Mapping[str, Any], num_threads: int | None = None
    ):
        super().__init__(manifest)
        ort = require("onnxruntime", "running an ONNX model")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; its warnings are about opset guarantees
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self.session.get_outputs()]

    def _run(self, x: np.ndarray) -> Mapping[str, Any]:
        values = self.session.run(self._names, {self.input_name: x})
        return dict(zip(self._names, values, strict=True))

"""TFLite: converted from the SavedModel with builtin ops only, float32 or quantized.

Every convolution of our models, the transposed ones included, is computed as a
(dilated) convolution (``keras_sep.layers.DilatedConv1DTranspose``), so the converter
needs no TensorFlow ops: a Keras ``Conv1DTranspose`` with dilation > 1 would lower to
``Conv2DBackpropInput``, which is not a TFLite builtin and which the Flex delegate
refuses to run with dilations. Batch and time stay dynamic: the interpreter resizes its
tensors to each input shape.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keras_sep.errors import ExportError, UsageError, require
from keras_sep.serving import SIGNATURE, ExportedModel

from .checks import first_line

# "none": float32; "dynamic": int8 weights, float activations (dynamic-range quantization);
# "float16": float16 weights, computed in float32 on CPUs.
QUANTIZE = ("none", "dynamic", "float16")


def convert_tflite(
    saved_model: str | os.PathLike, path: str | os.PathLike, quantize: str = "none"
) -> Path:
    """Convert a SavedModel's ``serving_default`` signature to a ``.tflite`` file."""
    if quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization {quantize!r}; valid: {list(QUANTIZE)}")
    tf = require("tensorflow", "TFLite export")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), [SIGNATURE])
    # Builtins only: a model that needed TF (Flex) ops would fail here rather than at run time.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        content = converter.convert()
    except Exception as e:  # ConverterError carries the MLIR diagnostics
        raise ExportError(f"TFLite conversion failed: {first_line(e)}") from None
    path = Path(path)
    path.write_bytes(content)
    return path


def _interpreter_class():
    # LiteRT is TFLite's successor package; TF's own interpreter works where it is absent.
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return _tf_interpreter
    return Interpreter


def _tf_interpreter(**kwargs: Any):
    # TensorFlow 2.20 and later warn at every construction that tf.lite.Interpreter moves to
    # LiteRT; it still works (TF 2.21), and the notice is for whoever installs the packages.
    tf = require("tensorflow", "running a TFLite model")
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"\s*Warning: tf\.lite\.Interpreter is deprecated", UserWarning
        )
        return tf.lite.Interpreter(**kwargs)


def tflite_ops(path: str | os.PathLike) -> list[str]:
    """Names of the operators a ``.tflite`` file uses (e.g. CONV_2D, PAD)."""
    interpreter = _interpreter_class()(model_path=str(path))
    # _get_ops_details is the one reader of the op list both interpreters share.
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


class TFLiteRunner(ExportedModel):
    """Runs a ``.tflite`` file's ``serving_default`` signature with the TFLite interpreter."""

    def __init__(
        self, path: str | os.PathLike, manifest: Mapping[str, Any], num_threads: int | None = None
    ):
        super().__init__(manifest)
        self.interpreter = _interpreter_class()(
            model_path=str(path), num_threads=num_threads or os.cpu_count() or 1
        )
        # The signature runner resizes the dynamic (batch, time) tensors when the shape changes.
        self._runner = self.interpreter.get_signature_runner(SIGNATURE)

    def _run(self, x: np.ndarray) -> Mapping[str, Any]:
        return self._runner(**{self.input_name: x})

"""Backend speed settings that keras-sep applies when a model is built.

Under PyTorch on CUDA, Keras leaves cuDNN autotuning off and float32 matrix multiplies at
full float32. keras-sep turns on ``torch.backends.cudnn.benchmark`` (each convolution
shape picks its fastest cuDNN algorithm on first use) and TF32 for float32 matrix
multiplies and convolutions: 1.38x faster for the paper DDU training step on an H200
(docs/performance.md). TF32 keeps float32's range with a 10-bit mantissa, as TensorFlow
and JAX use by default on these GPUs.

It changes only what the user has not chosen: a TF32 precision already set to "ieee"
stays, and ``KERAS_SEP_TORCH_TUNING=0`` leaves torch's settings exactly as they are.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import keras

from keras_sep.errors import ConfigError

TUNING_ENV = "KERAS_SEP_TORCH_TUNING"
_ON, _OFF = ("1", "true", "yes", "on", ""), ("0", "false", "no", "off")


def tuning_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``KERAS_SEP_TORCH_TUNING`` allows the torch settings (default: yes)."""
    value = environ.get(TUNING_ENV, "").strip().lower()
    if value not in _ON + _OFF:
        raise ConfigError(
            f"{TUNING_ENV}={environ[TUNING_ENV]!r} is not understood; set it to 1 (tune "
            "cuDNN and TF32 under torch on CUDA, the default) or 0 (leave torch as it is)"
        )
    return value in _ON


def tune_torch(torch: Any, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Turn on cuDNN autotuning and TF32 on ``torch`` where it runs on CUDA.

    Returns the settings changed, e.g. ``["cudnn.benchmark=True"]``. ``torch`` is the
    module (a stand-in in tests). Newer torch (2.9+) has ``fp32_precision`` ("none"
    until someone chooses); older torch only the ``allow_tf32`` flags, where a matmul
    precision other than "highest" counts as the user's choice.
    """
    if not tuning_enabled(environ) or not torch.cuda.is_available():
        return []
    changed = []
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if not cudnn.benchmark:
        cudnn.benchmark = True
        changed.append("cudnn.benchmark=True")
    if hasattr(matmul, "fp32_precision"):
        for name, settings in (("cuda.matmul", matmul), ("cudnn.conv", cudnn.conv)):
            if settings.fp32_precision == "none":
                settings.fp32_precision = "tf32"
                changed.append(f"{name}.fp32_precision=tf32")
    elif torch.get_float32_matmul_precision() == "highest" and not matmul.allow_tf32:
        matmul.allow_tf32 = True  # cuDNN convolutions allow TF32 by default there
        changed.append("cuda.matmul.allow_tf32=True")
    return changed


@functools.cache
def apply_backend_tuning() -> tuple[str, ...]:
    """Apply ``tune_torch`` once per process under the torch backend; what it changed."""
    if keras.backend.backend() != "torch":
        return ()
    import torch

    return tuple(tune_torch(torch))

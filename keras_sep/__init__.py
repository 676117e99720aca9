"""keras-sep: music source separation in the waveform domain with Keras 3.

import keras_sep
model = keras_sep.build("dilated_dense", preset="tiny")
model = keras_sep.load(keras_sep.DEFAULT_MODEL)
stems = keras_sep.separate(model, mixture)   # mixture: (time, channels) at model.sample_rate
"""

from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

# The bundled demo model folder (trained on synthetic songs, not on real music).
DEFAULT_MODEL = str(Path(__file__).parent / "pretrained" / "demo")

# Public names and the module that defines each. Imported on first use, so that
# `import keras_sep` (and `keras-sep --help`) does not pay for importing a Keras backend.
_EXPORTS = {
    "build": "keras_sep.models",
    "architectures": "keras_sep.models",
    "get_config": "keras_sep.models",
    "SeparationModel": "keras_sep.models",
    "WaveUNetConfig": "keras_sep.config",
    "DilatedConfig": "keras_sep.config",
    "SOURCES": "keras_sep.config",
    "load": "keras_sep.folder",
    "save": "keras_sep.folder",
    "separate": "keras_sep.separate",
    "KerasSepError": "keras_sep.errors",
}

__all__ = ["DEFAULT_MODEL", "__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_sep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""keras-sep: music source separation in the waveform domain with Keras 3.

import keras_sep
model = keras_sep.build("dilated_dense", preset="tiny")
model = keras_sep.load(keras_sep.DEFAULT_MODEL)
stems = keras_sep.separate(model, mixture)   # mixture: (time, channels) at model.sample_rate
"""

import os
import sys
from pathlib import Path

# TensorFlow's C++ log would precede every keras-sep command: INFO lines (CPU feature
# guard), and from the CUDA build of TF 2.17 three spurious "Unable to register cuDNN /
# cuFFT / cuBLAS factory" ERROR lines and a TensorRT warning, GPU or not. Hide it unless
# the user has chosen a level; failures still raise, and train.py names its device.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# TensorFlow's Python logger too, unless a level was chosen for it: its retracing
# WARNINGs come when a process builds several models (keras-sep study) and say nothing a
# user can act on.
import logging  # noqa: E402

_tf_logger = logging.getLogger("tensorflow")
if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" and _tf_logger.level == logging.NOTSET:
    _tf_logger.setLevel(logging.ERROR)
del _tf_logger

# The bundled demo model folder (trained on synthetic songs, not on real music).
DEFAULT_MODEL = str(Path(__file__).parent / "pretrained" / "demo")

# Attributes resolve on first use (PEP 562), so `import keras_sep` and the CLI's --help do
# not import Keras: the models, and the Keras classes they register, load when needed.
# keras.models.load_model reads our .keras files once keras_sep.models is imported:
# keras_sep.load does that, and so does `import keras_sep` after `import keras` (below).
_LAZY = {
    "SOURCES": "keras_sep.config",
    "DilatedConfig": "keras_sep.config",
    "WaveUNetConfig": "keras_sep.config",
    "KerasSepError": "keras_sep.errors",
    "load": "keras_sep.folder",
    "save": "keras_sep.folder",
    "SeparationModel": "keras_sep.models",
    "architectures": "keras_sep.models",
    "build": "keras_sep.models",
    "model_config": "keras_sep.models",
}

# Eager, unlike the rest: the function must shadow its submodule of the same name, which a
# later `import keras_sep.separate` would otherwise bind here. It needs numpy, not Keras.
from keras_sep.separate import separate  # noqa: E402
from keras_sep.version import __version__  # noqa: E402


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_sep' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "DEFAULT_MODEL",
    "SOURCES",
    "DilatedConfig",
    "KerasSepError",
    "SeparationModel",
    "WaveUNetConfig",
    "__version__",
    "architectures",
    "build",
    "load",
    "model_config",
    "save",
    "separate",
]

if "keras" in sys.modules:
    # Keras is loaded already, so registering our classes costs little: keras-hub style,
    # `import keras; import keras_sep; keras.models.load_model("ours.keras")` works.
    import keras_sep.models  # noqa: E402, F401

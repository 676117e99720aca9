"""keras-sep: music source separation in the waveform domain with Keras 3.

import keras_sep
model = keras_sep.build("dilated_dense", preset="tiny")
model = keras_sep.load(keras_sep.DEFAULT_MODEL)
stems = keras_sep.separate(model, mixture)   # mixture: (time, channels) at model.sample_rate
"""

import os
from pathlib import Path

# TensorFlow's C++ log would precede every keras-sep command: INFO lines (CPU feature
# guard), and from the CUDA build of TF 2.17 three spurious "Unable to register cuDNN /
# cuFFT / cuBLAS factory" ERROR lines and a TensorRT warning, GPU or not. Hide it unless
# the user has chosen a level; failures still raise, and train.py names its device.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The bundled demo model folder (trained on synthetic songs, not on real music).
DEFAULT_MODEL = str(Path(__file__).parent / "pretrained" / "demo")

# Importing the models registers their Keras classes, so keras.models.load_model reads
# .keras files of ours after a plain `import keras_sep` (as with keras-hub).
from keras_sep.config import SOURCES, DilatedConfig, WaveUNetConfig  # noqa: E402
from keras_sep.errors import KerasSepError  # noqa: E402
from keras_sep.folder import load, save  # noqa: E402
from keras_sep.models import SeparationModel, architectures, build, model_config  # noqa: E402
from keras_sep.separate import separate  # noqa: E402
from keras_sep.version import __version__  # noqa: E402

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

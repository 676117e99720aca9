"""Export a model folder to SavedModel (TF Serving), TFLite and ONNX, each checked against Keras.

    python -m export runs/ddu/ --out artifacts/      # from the repository root
    keras-sep export runs/ddu/ --out artifacts/

Installed as ``keras_sep.export``. TensorFlow, tf2onnx and onnxruntime are imported only
inside the functions that use them, so importing this package is cheap. The runners
returned by ``load_artifact`` separate through ``keras_sep.separate`` like a Keras model.
"""

from .artifacts import FORMATS, TOLERANCE, check_formats, export_folder, load_artifact, runner_class
from .onnx_model import DEFAULT_OPSET
from .tflite import QUANTIZE

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "QUANTIZE",
    "TOLERANCE",
    "check_formats",
    "export_folder",
    "load_artifact",
    "runner_class",
]

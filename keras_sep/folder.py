"""Self-describing model folders: ``config.json`` + ``model.weights.h5``.

``config.json`` holds the architecture name and its resolved config (sources, sample
rate, channels, segment length, every layer setting), the package version, the Keras
backend that wrote it, and whatever the writer adds (the trainer adds its resolved
training config and best validation loss). Everything that takes a model (CLI,
evaluation, export) takes such a folder. Weights are backend-independent, so a folder
written under JAX loads under TensorFlow and vice versa.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from keras_sep.errors import ModelFolderError
from keras_sep.files import atomic_write_text, staged_file
from keras_sep.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
FORMAT = "keras-sep-model/1"
# Config fields that change how a model computes, not its weights: safe to override on load.
RUNTIME_FIELDS = ("conv_impl", "segment_length")


def save(model, folder: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a ``SeparationModel``) as a model folder; returns its path.

    Files are written under temporary names and renamed, so an interrupted save never
    leaves a truncated file behind.
    """
    import keras

    from keras_sep.models import SeparationModel

    if getattr(model, "optimizer", None) is not None and model.optimizer.variables:
        # save_weights would add the optimizer's slots (3x the size for Adam): a model
        # folder holds the model only, so save an uncompiled copy.
        copy = SeparationModel(model.architecture, model.arch_config)
        copy.set_weights(model.get_weights())
        model = copy
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with staged_file(folder / WEIGHTS_FILE, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    info = {
        "format": FORMAT,
        "architecture": model.architecture,
        "config": model.arch_config.to_dict(),
        "keras_sep_version": __version__,
        "keras_backend": keras.backend.backend(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(metadata or {}),
    }
    atomic_write_text(folder / CONFIG_FILE, json.dumps(info, indent=2) + "\n")
    return folder


def read_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder, checked enough to build from."""
    folder = Path(folder)
    hint = (
        f"a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE} "
        "(written by training or keras_sep.save)"
    )
    if not folder.exists():
        raise ModelFolderError(f"model folder {folder} does not exist; {hint}")
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is a file, not a model folder; {hint}")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ModelFolderError(f"{folder} is not a model folder: {name} is missing; {hint}")
    try:
        info = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{folder / CONFIG_FILE} is not valid JSON ({e}); {hint}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ModelFolderError(
            f"{folder / CONFIG_FILE} is not a keras-sep model config (expected format {FORMAT!r})"
        )
    missing = [k for k in ("architecture", "config") if k not in info]
    if missing:
        raise ModelFolderError(f"{folder / CONFIG_FILE} lacks {missing}; {hint}")
    return info


def read_config(folder: str | os.PathLike) -> tuple[str, Any]:
    """(architecture name, resolved config) of a model folder, without building the model."""
    from keras_sep.errors import KerasSepError
    from keras_sep.models import model_config

    info = read_info(folder)
    try:
        return info["architecture"], model_config(info["architecture"], **info["config"])
    except KerasSepError as e:
        raise ModelFolderError(
            f"{Path(folder) / CONFIG_FILE} does not describe a valid model: {e}"
        ) from None


def load(folder: str | os.PathLike, precision: str | None = None, **overrides: Any):
    """Load a model folder (or a ``.keras`` file) as a ``SeparationModel``.

    ``precision`` ("auto", "float32", "bfloat16"; see ``keras_sep.precision``) sets the
    compute precision; the float32 weights load as they are. None: float32 for a folder,
    the saved precision for a ``.keras`` file. ``overrides`` may change fields that do not
    affect the weights (``conv_impl``, ``segment_length``), e.g.
    ``load(folder, conv_impl="native")``.
    """
    from keras_sep.errors import KerasSepError
    from keras_sep.models import SeparationModel
    from keras_sep.precision import convert, resolve

    path = Path(folder)
    if path.suffix == ".keras" and path.is_file() and not overrides:
        import keras

        return convert(keras.models.load_model(path), precision)
    bad = sorted(set(overrides) - set(RUNTIME_FIELDS))
    if bad:
        raise ModelFolderError(
            f"cannot override {bad} when loading; allowed: {list(RUNTIME_FIELDS)}"
        )
    info = read_info(path)
    chosen = resolve(precision or "float32")
    try:
        model = SeparationModel(
            info["architecture"], {**info["config"], **overrides}, precision=chosen
        )
    except KerasSepError as e:
        raise ModelFolderError(
            f"{path / CONFIG_FILE} does not describe a valid model: {e}"
        ) from None
    try:
        model.load_weights(path / WEIGHTS_FILE)
    except Exception as e:  # Keras raises ValueError / OSError / KeyError for bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFolderError(
            f"{path / WEIGHTS_FILE} does not fit the model in {CONFIG_FILE}: {reason}"
        ) from None
    model.folder_info = info
    return model

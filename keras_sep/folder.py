"""Self-describing model folders: ``config.json`` + ``model.weights.h5``.

``config.json`` holds the architecture name and its resolved config (sources, sample
rate, channels, segment length, every layer setting), the package version, the Keras
backend that wrote it, and whatever the writer adds (the trainer adds its resolved
training config and best validation loss). Everything that takes a model (CLI,
evaluation, export) takes such a folder. Weights are backend-independent, so a folder
written under JAX loads under TensorFlow and vice versa.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from keras_sep.errors import KerasSepError, ModelFolderError
from keras_sep.files import atomic_write_text, check_free, staged_file
from keras_sep.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
FORMAT = "keras-sep-model/1"
# Config fields that change how a model computes, not its weights: safe to override on load.
RUNTIME_FIELDS = ("conv_impl", "segment_length")
KERAS_SUFFIX = ".keras"
# How Keras names our class inside a .keras file (register_keras_serializable).
REGISTERED_NAME = "keras_sep>SeparationModel"
HINT = (
    f"expected a keras-sep model folder ({CONFIG_FILE} + {WEIGHTS_FILE}, written by training "
    f"or keras_sep.save) or a {KERAS_SUFFIX} file saved from a keras-sep model"
)


def check_folder_free(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, to write a model folder over files keras-sep did not write."""
    folder = Path(folder)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        check_free(folder / name, overwrite)
    return folder


def save(
    model,
    folder: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a ``SeparationModel``) as a model folder; returns its path.

    Files are written under temporary names and renamed, so an interrupted save never
    leaves a truncated file behind. A model file that keras-sep did not write is not
    replaced unless ``overwrite`` (``keras_sep.files``).
    """
    import keras

    from keras_sep.models import SeparationModel

    if getattr(model, "optimizer", None) is not None and model.optimizer.variables:
        # save_weights would add the optimizer's slots (3x the size for Adam): a model
        # folder holds the model only, so save an uncompiled copy.
        copy = SeparationModel(model.architecture, model.arch_config)
        copy.set_weights(model.get_weights())
        model = copy
    folder = check_folder_free(folder, overwrite)
    with staged_file(folder / WEIGHTS_FILE, suffix=".weights.h5", overwrite=overwrite) as tmp:
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
    atomic_write_text(folder / CONFIG_FILE, json.dumps(info, indent=2) + "\n", overwrite)
    return folder


def is_keras_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a ``.keras`` file (rather than a model folder)."""
    return Path(path).suffix == KERAS_SUFFIX and not Path(path).is_dir()


def _read_keras_file_info(path: Path) -> dict[str, Any]:
    """The model description inside a ``.keras`` file (a zip), read without Keras."""
    try:
        with zipfile.ZipFile(path) as archive:
            saved = json.loads(archive.read("config.json"))
    except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, ValueError) as e:
        reason = "no such file" if isinstance(e, FileNotFoundError) else "not a .keras archive"
        raise ModelFolderError(
            f"{path} cannot be read as a Keras model ({reason}); {HINT}"
        ) from None
    if not isinstance(saved, dict) or saved.get("registered_name") != REGISTERED_NAME:
        kind = saved.get("class_name") if isinstance(saved, dict) else None
        raise ModelFolderError(
            f"{path} holds a plain Keras model ({kind or 'unknown class'}), not a keras-sep "
            f"model; {HINT}"
        )
    config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    return {"format": FORMAT, **{k: config[k] for k in ("architecture", "config") if k in config}}


def read_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed description of a model folder or ``.keras`` file, checked enough to build from."""
    folder = Path(folder)
    if is_keras_file(folder):
        info = _read_keras_file_info(folder)
        config_path = folder
    else:
        if not folder.exists():
            raise ModelFolderError(f"model folder {folder} does not exist; {HINT}")
        if not folder.is_dir():
            raise ModelFolderError(f"{folder} is a file, not a model folder; {HINT}")
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise ModelFolderError(f"{folder} is not a model folder: {name} is missing; {HINT}")
        config_path = folder / CONFIG_FILE
        try:
            info = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFolderError(f"{config_path} is not valid JSON ({e}); {HINT}") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ModelFolderError(
                f"{config_path} is not a keras-sep model config (expected format {FORMAT!r})"
            )
    missing = [k for k in ("architecture", "config") if k not in info]
    if missing:
        raise ModelFolderError(f"{config_path} lacks {missing}; {HINT}")
    if not isinstance(info["architecture"], str) or not isinstance(info["config"], dict):
        raise ModelFolderError(
            f"{config_path}: 'architecture' must be a name and 'config' a mapping of fields"
        )
    return info


def read_config(folder: str | os.PathLike) -> tuple[str, Any]:
    """(architecture name, resolved config) of a model folder, without building it or Keras."""
    from keras_sep.config import resolve_config

    info = read_info(folder)
    with _invalid_config(folder):
        return info["architecture"], resolve_config(info["architecture"], **info["config"])


@contextlib.contextmanager
def _invalid_config(folder: str | os.PathLike) -> Iterator[None]:
    """Report a config that fails validation as a bad model folder, naming the file."""
    try:
        yield
    except KerasSepError as e:
        where = folder if is_keras_file(folder) else Path(folder) / CONFIG_FILE
        raise ModelFolderError(f"{where} does not describe a valid model: {e}") from None


def load(folder: str | os.PathLike, precision: str | None = None, **overrides: Any):
    """Load a model folder (or a ``.keras`` file of ours) as a ``SeparationModel``.

    ``precision`` ("auto", "float32", "bfloat16"; see ``keras_sep.precision``) sets the
    compute precision; the float32 weights load as they are. None: float32 for a folder,
    the saved precision for a ``.keras`` file. ``overrides`` may change fields that do not
    affect the weights (``conv_impl``, ``segment_length``), e.g.
    ``load(folder, conv_impl="native")``. Anything that is not a keras-sep model raises
    ``ModelFolderError`` saying what it is.
    """
    from keras_sep.native_logs import quiet_tensorflow_start

    quiet_tensorflow_start()  # before keras_sep.models imports Keras
    from keras_sep.models import SeparationModel, convert_precision
    from keras_sep.precision import resolve

    path = Path(folder)
    bad = sorted(set(overrides) - set(RUNTIME_FIELDS))
    if bad:
        raise ModelFolderError(
            f"cannot override {bad} when loading; allowed: {list(RUNTIME_FIELDS)}"
        )
    info = read_info(path)
    read_config(path)  # a bad config fails first, before any precision note or Keras
    if is_keras_file(path):
        saved = _checked(path, lambda: _load_keras_file(path))  # safe mode: no code runs
        if not overrides:
            model = convert_precision(saved, precision)
            model.folder_info = info
            return model
    chosen = resolve(precision or "float32")
    with _invalid_config(path):
        model = SeparationModel(
            info["architecture"], {**info["config"], **overrides}, precision=chosen
        )
    if is_keras_file(path):
        model.set_weights(saved.get_weights())
    else:
        _checked(path / WEIGHTS_FILE, lambda: model.load_weights(path / WEIGHTS_FILE))
    model.folder_info = info
    return model


def _load_keras_file(path: Path):
    import keras

    return keras.models.load_model(path, compile=False)


def _checked(source: Path, step: Callable[[], Any]) -> Any:
    """``step()``, which reads weights from ``source``, with its failures as one line.

    Keras reports a mismatch as pages of warnings (one per skipped layer) and an error
    message with an example; both become one ``ModelFolderError`` naming the file.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = step()
        except KerasSepError:
            raise
        except Exception as e:  # Keras raises ValueError / OSError / KeyError for bad files
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelFolderError(
                f"{source} does not fit the model it describes: {reason.rstrip(':')}"
                f"{_warned(caught)}; {HINT}"
            ) from None
    skipped = [w for w in caught if issubclass(w.category, UserWarning)]
    if skipped:
        raise ModelFolderError(
            f"{source} does not fit the model it describes{_warned(skipped)}; {HINT}"
        )
    return result


def _warned(caught: list) -> str:
    if not caught:
        return ""
    first = str(caught[0].message).split(".")[0]
    return f" (Keras warned {len(caught)} time(s), first: {first})"

"""SavedModel for TF Serving: `serving_default` takes `mixture`, returns one output per source."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_sep.errors import ExportError, require
from keras_sep.serving import SIGNATURE, ExportedModel

from .checks import first_line

if TYPE_CHECKING:
    from keras_sep.models import SeparationModel


def write_saved_model(model: SeparationModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as a SavedModel at ``path`` (a TF Serving version folder such as ``1``).

    Keras's own exporter gives the ``serving_default`` signature: input ``mixture``
    (batch, time, channels) with batch and time dynamic, outputs named after the sources.
    """
    require("tensorflow", "SavedModel export")
    try:
        model.export(str(path), format="tf_saved_model", verbose=False)
    except Exception as e:  # TF raises many types; the first line says what failed
        raise ExportError(f"SavedModel export failed: {first_line(e)}") from None
    return Path(path)


class SavedModelRunner(ExportedModel):
    """Runs the ``serving_default`` signature of a SavedModel in process, as TF Serving would."""

    def __init__(self, path: str | os.PathLike, manifest: Mapping[str, Any]):
        super().__init__(manifest)
        self._tf = require("tensorflow", "running a SavedModel")
        self._loaded = self._tf.saved_model.load(str(path))
        try:
            self._fn = self._loaded.signatures[SIGNATURE]
        except KeyError:
            raise ExportError(f"{path} has no {SIGNATURE!r} signature") from None

    def _run(self, x: np.ndarray) -> Mapping[str, Any]:
        outputs = self._fn(**{self.input_name: self._tf.constant(x)})
        return {name: value.numpy() for name, value in outputs.items()}

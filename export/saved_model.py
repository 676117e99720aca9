"""SavedModel for TF Serving: `serving_default` takes segments; `separate_song` and
`separate_wav` take a whole song (see ``song.py``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_sep.errors import ExportError, require
from keras_sep.serving import SIGNATURE, SONG_INPUT, SONG_SIGNATURE, WAV_SIGNATURE, ExportedModel

from .checks import first_line
from .song import SongSettings, song_function, song_settings, song_signatures, wav_function

if TYPE_CHECKING:
    from keras_sep.models import SeparationModel


def write_saved_model(
    model: SeparationModel, path: str | os.PathLike, settings: SongSettings | None = None
) -> Path:
    """Write ``model`` as a SavedModel at ``path`` (a TF Serving version folder such as ``1``).

    ``serving_default`` is what Keras's own exporter writes: input ``mixture`` (batch,
    time, channels) with batch and time dynamic, outputs named after the sources. The
    whole-song signatures ``separate_song`` and ``separate_wav`` run ``keras_sep.separate``'s
    segment plan with ``settings`` (default: ``separate``'s defaults).
    """
    tf = require("tensorflow", "SavedModel export")
    from keras.export import ExportArchive
    from keras.src.export.export_utils import get_input_signature

    cfg = model.arch_config
    settings = settings or song_settings(cfg)
    archive = ExportArchive()
    try:
        # What model.export(format="tf_saved_model") does; the first endpoint is also
        # written as serving_default.
        archive.track_and_add_endpoint("serve", model, get_input_signature(model))
        signatures = song_signatures(tf)
        song = song_function(lambda x: model(x, training=False), cfg, settings)
        song = archive.add_endpoint(SONG_SIGNATURE, song, signatures[SONG_SIGNATURE])
        # separate_wav calls the traced separate_song: one copy of the song graph.
        archive.add_endpoint(WAV_SIGNATURE, wav_function(song, cfg), signatures[WAV_SIGNATURE])
        archive.write_out(str(path), verbose=False)
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

    def separate_song(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """The ``separate_song`` signature's stems for a (time, channels) song."""
        try:
            fn = self._loaded.signatures[SONG_SIGNATURE]
        except KeyError:
            raise ExportError(f"this SavedModel has no {SONG_SIGNATURE!r} signature") from None
        outputs = fn(**{SONG_INPUT: self._tf.constant(audio, self._tf.float32)})
        return {s: outputs[s].numpy() for s in self.sources}

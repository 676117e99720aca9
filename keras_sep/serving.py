"""Separate audio through an exported model: the export manifest and a TF Serving client.

An export folder (written by ``python -m export`` / ``keras-sep export``) holds a
``manifest.json`` that describes the model: sources, sample rate, channels, the
valid-length rule, the input and output names. ``ExportedModel`` turns a manifest into
the two members the one separation routine needs (``arch_config``, ``predict_on_batch``);
the SavedModel, TFLite and ONNX Runtime runners in ``keras_sep.export`` and the TF Serving
client below are its subclasses, so they all separate through ``keras_sep.separate``.

The client speaks TF Serving's REST API with the standard library only (no TensorFlow);
it is a model like any other, so ``keras_sep.separate`` / ``separate_file`` run it::

    client = ServingClient("artifacts/", url="http://localhost:8501")
    client.check()
    stems = separate_file(client, "song.wav").stems

When the served SavedModel has the whole-song signature ``separate_song`` and the
separation settings are the ones it was exported with, the client sends the song itself,
in chunks of whole segments, and the server does the overlap-add (``separate_blocks``);
otherwise it sends segments to ``serving_default``. Both give ``separate``'s stems.
gRPC is left to ``tensorflow-serving-api`` users (docs/export.md has an example).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keras_sep import config as config_module
from keras_sep.config import BaseConfig
from keras_sep.errors import ExportError, KerasSepError, require
from keras_sep.mask import FOLDER_STAGES
from keras_sep.separate import (
    DEFAULT_OVERLAP,
    DEFAULT_TTA,
    Progress,
    SegmentPlan,
    _ticker,
    overlap_add,
    segment_plan,
)

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "keras-sep-export/1"
SIGNATURE = "serving_default"
# The SavedModel's whole-song signatures (export/song.py): a song in, its stems out.
SONG_SIGNATURE, SONG_INPUT = "separate_song", "audio"
WAV_SIGNATURE, WAV_INPUT = "separate_wav", "wav"
# TF Serving's REST API base64-encodes string outputs whose name ends in "_bytes".
BYTES_SUFFIX = "_bytes"
DEFAULT_MODEL_NAME = "keras_sep"
DEFAULT_URL = "http://localhost:8501"
# Segments per whole-song request: about 22 s of audio (16384-sample segments at 22.05
# kHz), some 20 MB of JSON, so a long song never becomes one huge request.
SONG_CHUNK_SEGMENTS = 32


class ServingError(KerasSepError):
    """TF Serving could not be reached or refused a request."""


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed manifest of an export folder (or of the ``manifest.json`` path itself)."""
    path = Path(path)
    file = path / MANIFEST_FILE if path.is_dir() else path
    hint = "pass a folder written by `python -m export` (it holds manifest.json)"
    if not file.is_file():
        raise ExportError(f"{file} does not exist; {hint}")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{file} is not valid JSON ({e}); {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{file} is not a keras-sep export manifest ({MANIFEST_FORMAT!r})")
    return manifest


def manifest_config(manifest: Mapping[str, Any]) -> BaseConfig:
    """The architecture config a manifest describes, rebuilt without importing Keras."""
    name = manifest.get("config_class")
    cls = getattr(config_module, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, BaseConfig)):
        raise ExportError(f"manifest names an unknown config class {name!r}")
    try:
        return cls.from_dict(manifest["config"])
    except (KerasSepError, KeyError, TypeError) as e:
        raise ExportError(f"manifest does not hold a valid {name} config: {e}") from None


def config_summary(cfg: BaseConfig) -> dict[str, Any]:
    """Manifest fields that describe the model's interface (what a client must know)."""
    multiple = cfg.length_multiple
    rule = (
        "any length"
        if multiple == 1
        else f"a positive multiple of {multiple} samples (zero-pad, then crop the outputs)"
    )
    return {
        "config_class": type(cfg).__name__,
        "config": cfg.to_dict(),
        "sources": list(cfg.sources),
        "sample_rate": cfg.sample_rate,
        "channels": cfg.channels,
        "segment_length": cfg.segment_length,
        "valid_length": {"multiple": multiple, "rule": f"time must be {rule}"},
    }


def song_chunks(plan: SegmentPlan, total: int, segments: int) -> list[tuple[int, int, int, int]]:
    """Cut a song of ``total`` samples into requests of about ``segments`` segments each.

    Returns (send_start, send_stop, keep_start, keep_stop) per request. Each request holds
    whole segments of ``plan`` starting on one of its starts, so the server's plan for the
    chunk is the song's plan shifted; a sample is kept from the one chunk that holds every
    segment covering it, so the joined stems equal those of one request for the song.
    """
    starts = [int(start) for start in plan.starts(total)]
    if len(starts) <= segments:
        return [(0, total, 0, total)]
    chunks, first, keep = [], 0, 0
    while True:
        last = first + segments - 1
        if last >= len(starts) - 1:
            chunks.append((starts[first], total, keep, total))
            return chunks
        # Samples before the next start are covered by this chunk's segments only.
        cut = starts[last + 1]
        chunks.append((starts[first], starts[last] + plan.segment, keep, cut))
        # The next chunk starts with the first segment that ends after the cut.
        following = next(i for i, start in enumerate(starts) if start + plan.segment > cut)
        if following <= first:  # overlaps above one half: one request, not a stuck loop
            return [(0, total, 0, total)]
        first, keep = following, cut


class ExportedModel:
    """Base of the predictors that run an exported model; the config comes from its manifest.

    Subclasses implement ``_run(x)`` returning one array per output name.
    """

    def __init__(self, manifest: Mapping[str, Any]):
        self.manifest = dict(manifest)
        self.arch_config = manifest_config(manifest)
        self.input_name = manifest.get("input", {}).get("name", "mixture")
        # The model folder's soft mask and level gate, which separate applies.
        self.folder_info = {k: manifest[k] for k in FOLDER_STAGES if manifest.get(k)}

    @property
    def sources(self) -> tuple[str, ...]:
        return self.arch_config.sources

    def check_batch(self, x: np.ndarray) -> np.ndarray:
        """``x`` as float32 (batch, time, channels) of a length the model accepts."""
        cfg = self.arch_config
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != cfg.channels:
            raise ValueError(f"expected (batch, time, {cfg.channels}) input, got {x.shape}")
        if x.shape[1] < 1 or x.shape[1] % cfg.length_multiple:
            raise ValueError(
                f"time length {x.shape[1]} is not accepted: it must be a positive multiple of "
                f"{cfg.length_multiple} (use arch_config.valid_length)"
            )
        return x

    def predict_on_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One (batch, time, channels) float32 array per source."""
        outputs = self._run(self.check_batch(x))
        missing = [s for s in self.sources if s not in outputs]
        if missing:
            raise ExportError(f"the model returned {sorted(outputs)}, not the sources {missing}")
        return {s: np.asarray(outputs[s], dtype=np.float32) for s in self.sources}

    def _run(self, x: np.ndarray) -> Mapping[str, Any]:
        raise NotImplementedError


class OnnxRunner(ExportedModel):
    """Runs an ONNX file with ONNX Runtime's CPU provider."""

    def __init__(
        self, path: str | os.PathLike, manifest: Mapping[str, Any], num_threads: int | None = None
    ):
        super().__init__(manifest)
        ort = require("onnxruntime", "running an ONNX model")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; its warnings are about opset guarantees
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self.session.get_outputs()]

    def _run(self, x: np.ndarray) -> Mapping[str, Any]:
        values = self.session.run(self._names, {self.input_name: x})
        return dict(zip(self._names, values, strict=True))


class ServingClient(ExportedModel):
    """A model served by TF Serving, used through its REST API (``POST .../:predict``).

    ``manifest`` is the export folder, its ``manifest.json`` or the parsed dict; it gives
    the sources, sample rate and valid-length rule, which TF Serving does not report.
    """

    def __init__(
        self,
        manifest: Mapping[str, Any] | str | os.PathLike,
        url: str = DEFAULT_URL,
        model_name: str = DEFAULT_MODEL_NAME,
        version: int | None = None,
        signature: str = SIGNATURE,
        timeout: float = 300.0,
        whole_song: bool = True,
        chunk_segments: int = SONG_CHUNK_SEGMENTS,
    ):
        if not isinstance(manifest, Mapping):
            manifest = read_manifest(manifest)
        super().__init__(manifest)
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.signature = signature
        self.timeout = timeout
        self.model_url = f"{self.url}/v1/models/{model_name}"
        if version is not None:
            self.model_url += f"/versions/{int(version)}"
        self.whole_song = whole_song
        self.chunk_segments = max(2, int(chunk_segments))
        self._signatures: dict[str, Any] | None = None

    def _request(self, url: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                reason = json.loads(e.read()).get("error", "")
            except (ValueError, AttributeError):
                reason = ""
            raise ServingError(
                f"TF Serving at {url} answered HTTP {e.code}: {reason or e.reason}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServingError(
                f"cannot reach TF Serving at {self.url} ({reason}); start it with "
                "--rest_api_port (docker: -p 8501:8501) and check --url"
            ) from None

    def signatures(self) -> dict[str, Any]:
        """The served signature definitions by name, from the model's metadata (read once)."""
        if self._signatures is None:
            meta = self._request(f"{self.model_url}/metadata")
            try:
                self._signatures = dict(meta["metadata"]["signature_def"]["signature_def"])
            except (KeyError, TypeError):
                raise ServingError("TF Serving's metadata lists no signature_def") from None
        return self._signatures

    def check(self) -> None:
        """Compare the served signature with the manifest; raise ``ServingError`` on mismatch."""
        signature = self.signatures().get(self.signature)
        if not isinstance(signature, dict):
            raise ServingError(f"model {self.model_name!r} has no signature {self.signature!r}")
        inputs, outputs = signature.get("inputs", {}), signature.get("outputs", {})
        if self.input_name not in inputs or sorted(outputs) != sorted(self.sources):
            raise ServingError(
                f"served signature takes {sorted(inputs)} and returns {sorted(outputs)}, but the "
                f"manifest expects {self.input_name!r} -> {sorted(self.sources)}; "
                "is --model-name the model this manifest was exported with?"
            )

    def _run(self, x: np.ndarray) -> Mapping[str, Any]:
        body = {"signature_name": self.signature, "inputs": {self.input_name: x.tolist()}}
        outputs = self._request(f"{self.model_url}:predict", body).get("outputs")
        if outputs is None:
            raise ServingError("TF Serving's answer has no 'outputs'")
        # The columnar format gives a bare list when the signature has one output.
        return outputs if isinstance(outputs, dict) else {self.sources[0]: outputs}

    def song_settings(self) -> dict[str, Any] | None:
        """The settings of the served ``separate_song`` signature, or None if it has none.

        Offered when the manifest records them (exports before it did not) and the server's
        metadata lists the signature with its ``audio`` input.
        """
        song = self.manifest.get("artifacts", {}).get("saved_model", {}).get("song")
        served = self.signatures().get(SONG_SIGNATURE) if song else None
        if not isinstance(served, dict) or SONG_INPUT not in served.get("inputs", {}):
            return None
        return song

    def separate_blocks(
        self,
        read: Callable[[int, int], np.ndarray],
        total: int,
        *,
        segment: int | None = None,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int | None = None,
        progress: Progress = False,
        precision: str | None = None,
        tta: int = DEFAULT_TTA,
    ) -> Iterator[dict[str, np.ndarray]]:
        """``keras_sep.separate.overlap_add`` for this model, which ``separate`` runs.

        With ``whole_song`` and a served ``separate_song`` built with these ``segment``,
        ``overlap`` and ``tta``, the server runs the plan: one request per chunk of
        ``chunk_segments`` segments (``song_chunks``). Otherwise segments go to
        ``serving_default`` and ``overlap_add`` runs the plan here. ``batch_size`` only
        groups segments into requests; ``precision`` cannot change a served model.
        """
        if precision is not None:
            raise ValueError("precision cannot be set for a served model; export it as needed")
        kwargs = {"segment": segment, "overlap": overlap, "batch_size": batch_size, "tta": tta}
        song = self.song_settings() if self.whole_song else None
        cfg = self.arch_config
        if song is None or (cfg.valid_length(segment or cfg.segment_length), overlap, tta) != (
            song["segment"],
            song["overlap"],
            song["tta"],
        ):
            yield from overlap_add(self, read, total, progress=progress, **kwargs)
            return
        chunks = song_chunks(
            segment_plan(cfg, song["segment"], overlap), total, self.chunk_segments
        )
        tick, close = _ticker(progress, len(chunks))
        try:
            for n, (start, stop, keep, until) in enumerate(chunks):
                stems = self.separate_song(read(start, stop))
                yield {s: v[keep - start : until - start] for s, v in stems.items()}
                tick(n + 1)
        finally:
            close()

    def separate_song(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """One request to ``separate_song``: the stems of ``audio`` (time, channels)."""
        body = {
            "signature_name": SONG_SIGNATURE,
            "inputs": {SONG_INPUT: np.asarray(audio).tolist()},
        }
        outputs = self._request(f"{self.model_url}:predict", body).get("outputs")
        if outputs is None:
            raise ServingError("TF Serving's answer has no 'outputs'")
        outputs = outputs if isinstance(outputs, dict) else {self.sources[0]: outputs}
        missing = [s for s in self.sources if s not in outputs]
        if missing:
            raise ServingError(f"{SONG_SIGNATURE} returned {sorted(outputs)}, not {missing}")
        return {
            s: np.asarray(outputs[s], dtype=np.float32).reshape(len(audio), -1)
            for s in self.sources
        }

"""Export a model folder to SavedModel, TFLite and ONNX, check each against Keras, write a manifest.

Everything is written into a hidden staging folder inside the output folder, and each
file is published from there (``keras_sep.files.staged_tree``) only when every artifact
converted and matched Keras, so a failure leaves nothing behind. Files of an earlier
export are replaced; any other file in the way is refused before any work unless
``overwrite``; nothing else in the folder is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

import keras_sep
from keras_sep.errors import ExportError, KerasSepError, UsageError, require
from keras_sep.files import RECORD, check_free, staged_tree
from keras_sep.folder import read_config
from keras_sep.mask import FOLDER_STAGES
from keras_sep.native_logs import native_logs_hidden, quiet_tensorflow_start
from keras_sep.progress import Progress
from keras_sep.separate import DEFAULT_TTA
from keras_sep.serving import (
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    SIGNATURE,
    SONG_SIGNATURE,
    WAV_SIGNATURE,
    config_summary,
)
from keras_sep.version import __version__

from .checks import first_line, max_abs_error
from .onnx_model import DEFAULT_OPSET, check_opset
from .song import song_settings
from .tflite import QUANTIZE

FORMATS = ("saved_model", "tflite", "onnx")
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
ONNX_FILE = "model.onnx"
INPUT_NAME = "mixture"
# Largest max-abs error against Keras on random input in [-0.5, 0.5]. Float32 artifacts
# must stay within 1e-4 or the export fails; the quantized bounds are what the tests hold
# the tiny presets to, about 3x the largest errors measured (docs/export.md).
TOLERANCE = {"none": 1e-4, "float16": 2e-3, "dynamic": 2e-2}
CHECK_LENGTH = 4096


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """The requested formats in canonical order, or ``ExportError`` naming the valid ones."""
    formats = list(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown export format(s) {unknown}; valid formats: {list(FORMATS)}")
    if not formats:
        raise UsageError(f"no export format given; valid formats: {list(FORMATS)}")
    return tuple(f for f in FORMATS if f in formats)


def runner_class(fmt: str) -> type:
    """The predictor class that runs an artifact of format ``fmt``."""
    check_formats([fmt])
    if fmt == "saved_model":
        from .saved_model import SavedModelRunner as cls
    elif fmt == "tflite":
        from .tflite import TFLiteRunner as cls
    else:
        from .onnx_model import OnnxRunner as cls
    return cls


def load_artifact(export_dir: str | os.PathLike, fmt: str, **kwargs: Any):
    """A predictor for artifact ``fmt`` of an export folder, usable with ``keras_sep.separate``.

    ``kwargs`` go to the runner (``num_threads`` for TFLite and ONNX Runtime).
    """
    from keras_sep.serving import read_manifest

    manifest = read_manifest(export_dir)
    entry = manifest.get("artifacts", {}).get(fmt)
    if entry is None:
        raise ExportError(
            f"{export_dir} has no {fmt} artifact; it holds {sorted(manifest.get('artifacts', {}))}"
        )
    return runner_class(fmt)(Path(export_dir) / entry["path"], manifest, **kwargs)


def _check_out(out: Path, formats: list[str], model_version: int, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a folder to create")
    artifacts = {
        "saved_model": Path(SAVED_MODEL_DIR) / str(model_version) / "saved_model.pb",
        "tflite": Path(TFLITE_FILE),
        "onnx": Path(ONNX_FILE),
    }
    for path in [MANIFEST_FILE, *(artifacts[f] for f in formats)]:
        check_free(out / path, overwrite)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` except the manifest and keras-sep's records
    of what it wrote, by relative path."""
    return {
        p.relative_to(folder).as_posix(): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST_FILE, RECORD)
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for name in ("keras", "tensorflow-cpu", "tensorflow", "tf2onnx", "onnx", "onnxruntime"):
        with contextlib.suppress(md.PackageNotFoundError):
            found[name] = md.version(name)
    return found


def export_folder(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    formats: Iterable[str] = FORMATS,
    quantize: str = "none",
    opset: int = DEFAULT_OPSET,
    model_version: int = 1,
    overwrite: bool = False,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    tta: int = DEFAULT_TTA,
) -> dict[str, Any]:
    """Export the model folder ``folder`` into ``out``; returns the manifest written there.

    ``out`` gets ``saved_model/<model_version>/`` (TF Serving layout), ``model.tflite``
    (``quantize``: none, dynamic or float16), ``model.onnx`` (``opset``) and
    ``manifest.json``. The SavedModel's whole-song signatures run ``tta`` test-time
    augmentation passes (``keras_sep.separate``'s default). With ``verify`` each artifact
    runs on random input and is compared with Keras; a float32 artifact off by more than
    1e-4 fails the export. ``log`` gets the result lines (each check's error); ``progress``
    shows the conversions and checks.
    """
    # Check every option before the slow part, so a typo costs nothing.
    formats = check_formats(formats)
    if quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization {quantize!r}; valid: {list(QUANTIZE)}")
    if model_version < 1:
        raise UsageError(f"model version must be a positive integer, got {model_version}")
    out = Path(out)
    _check_out(out, formats, model_version, overwrite)
    architecture, _ = read_config(folder)
    if "onnx" in formats:
        check_opset(opset)
    quiet_tensorflow_start()
    require("tensorflow", "export")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            f"export needs the TensorFlow Keras backend, not {keras.backend.backend()!r}; "
            "run it with KERAS_BACKEND=tensorflow"
        )

    # "native" convolutions: plain dilated convs, which every converter maps to builtins.
    model = keras_sep.load(folder, conv_impl="native")
    cfg = model.arch_config
    settings = song_settings(cfg, tta=tta)
    # TFLite converts from the SavedModel, so that is written for either.
    writes = ("saved_model" in formats or "tflite" in formats) + ("tflite" in formats)
    steps = writes + ("onnx" in formats) + (len(formats) if verify else 0)
    with Progress("export", steps, "step", quiet=not progress) as bar:

        def tell(message: str) -> None:
            if log is not None:
                with bar.outside():
                    log(message)

        with staged_tree(out, overwrite) as staging:
            manifest = _export(
                model,
                architecture,
                cfg,
                staging,
                formats,
                quantize,
                opset,
                model_version,
                bar,
                settings,
            )
            if verify:
                _verify(model, cfg, staging, manifest, bar, tell)
            manifest["model_folder"] = str(Path(folder).resolve())
            for stage in FOLDER_STAGES:  # the runners apply them as separate does
                if model.folder_info.get(stage):
                    manifest[stage] = model.folder_info[stage]
            manifest["checksums"] = checksums(staging)
            # A plain write: staged_tree publishes it with the rest when the block ends.
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _export(
    model, architecture, cfg, staging, formats, quantize, opset, model_version, bar, settings
):
    """Write the artifacts into ``staging``; returns the manifest without checksums."""
    from .onnx_model import convert_onnx
    from .saved_model import write_saved_model
    from .tflite import convert_tflite, tflite_ops

    shape = [None, None, cfg.channels]
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "keras_sep_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "architecture": architecture,
        **config_summary(cfg),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": shape},
        "outputs": [{"name": s, "dtype": "float32", "shape": shape} for s in cfg.sources],
        "artifacts": {},
        "converters": _versions(),
    }
    artifacts = manifest["artifacts"]
    saved_model = Path(SAVED_MODEL_DIR) / str(model_version)
    if "saved_model" in formats or "tflite" in formats:
        # TFLite converts from the SavedModel, so it is made even when not requested.
        kept = "saved_model" in formats
        target = saved_model.as_posix() if kept else "(for TFLite, not kept)"
        bar.start(f"SavedModel -> {target}")
        with native_logs_hidden():
            write_saved_model(model, staging / saved_model, settings)
        bar.finish()
    if "saved_model" in formats:
        artifacts["saved_model"] = {
            "path": saved_model.as_posix(),
            "model_version": model_version,
            "signature": SIGNATURE,
            "quantize": "none",
            # The whole-song signatures and the segment plan they run (export/song.py).
            "song": {"signatures": [SONG_SIGNATURE, WAV_SIGNATURE], **settings.to_dict()},
        }
    if "tflite" in formats:
        bar.start(f"TFLite ({quantize}) -> {TFLITE_FILE}")
        with native_logs_hidden():
            convert_tflite(staging / saved_model, staging / TFLITE_FILE, quantize)
        bar.finish()
        artifacts["tflite"] = {
            "path": TFLITE_FILE,
            "signature": SIGNATURE,
            "quantize": quantize,
            "dynamic_shape": True,
            "ops": tflite_ops(staging / TFLITE_FILE),
        }
    if "saved_model" not in formats and (staging / SAVED_MODEL_DIR).exists():
        shutil.rmtree(staging / SAVED_MODEL_DIR)
    if "onnx" in formats:
        bar.start(f"ONNX (opset {opset}) -> {ONNX_FILE}")
        with native_logs_hidden():
            convert_onnx(model, staging / ONNX_FILE, opset)
        bar.finish()
        artifacts["onnx"] = {"path": ONNX_FILE, "opset": opset, "quantize": "none"}
    return manifest


def _verify(model, cfg, staging: Path, manifest: dict[str, Any], bar, log) -> None:
    """Run every artifact on the same random input as Keras and record the max abs error."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (2, cfg.valid_length(CHECK_LENGTH), cfg.channels))
    x = x.astype(np.float32)
    reference = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    for fmt, entry in manifest["artifacts"].items():
        bar.start(f"{fmt} against Keras")
        try:
            with native_logs_hidden():
                runner = runner_class(fmt)(staging / entry["path"], manifest)
                error = max_abs_error(reference, runner.predict_on_batch(x))
        except KerasSepError:
            raise
        except Exception as e:  # a runtime that refuses the converted model
            raise ExportError(f"the exported {fmt} model does not run: {first_line(e)}") from None
        tolerance = TOLERANCE[entry["quantize"]]
        entry["max_abs_error"] = error
        entry["tolerance"] = tolerance
        log(f"{fmt}: max abs error vs Keras {error:.2e} (bound {tolerance:.0e})")
        if entry["quantize"] != "none" and error > tolerance:
            # Quantization error depends on the weights; report it, the user decides.
            log(f"{fmt}: above the bound the tests hold tiny models to; listen before use")
        elif error > tolerance:
            raise ExportError(
                f"the exported {fmt} model differs from Keras by {error:.3g} > {tolerance:g} "
                "on random input; nothing was written"
            )
        bar.finish()
    if "song" in manifest["artifacts"].get("saved_model", {}):
        _verify_song(model, staging, manifest, log)


def _verify_song(model, staging: Path, manifest: dict[str, Any], log) -> None:
    """``separate_song`` against ``keras_sep.separate`` with the same settings, on noise."""
    from keras_sep.separate import separate

    from .saved_model import SavedModelRunner

    entry = manifest["artifacts"]["saved_model"]
    song = entry["song"]
    cfg = model.arch_config
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (CHECK_LENGTH, cfg.channels))
    x = x.astype(np.float32)
    kwargs = {k: song[k] for k in ("segment", "overlap", "tta", "batch_size")}
    try:
        with native_logs_hidden():
            got = SavedModelRunner(staging / entry["path"], manifest).separate_song(x)
    except KerasSepError:
        raise
    except Exception as e:
        raise ExportError(f"the {SONG_SIGNATURE} signature does not run: {first_line(e)}") from None
    # The graph returns the model's stems; a soft mask and a level gate are the client's
    # (ExportedModel).
    error = max_abs_error(separate(model, x, gate=None, mask=None, **kwargs), got)
    entry["song"]["max_abs_error"] = error
    log(f"saved_model {SONG_SIGNATURE}: max abs error vs keras_sep.separate {error:.2e}")
    if error > TOLERANCE["none"]:
        raise ExportError(
            f"the {SONG_SIGNATURE} signature differs from keras_sep.separate by {error:.3g} > "
            f"{TOLERANCE['none']:g} on random input; nothing was written"
        )

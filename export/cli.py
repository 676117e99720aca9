"""``python -m export FOLDER --out DIR`` (also ``keras-sep export``): the export command line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from keras_sep.errors import ArgumentParser, check_output_dir, command
from keras_sep.progress import add_quiet_argument
from keras_sep.separate import DEFAULT_TTA
from keras_sep.serving import MANIFEST_FILE

from .artifacts import FORMATS, export_folder
from .onnx_model import DEFAULT_OPSET
from .tflite import QUANTIZE


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the export options to ``parser`` (shared with ``keras-sep export``)."""
    parser.add_argument("folder", help="model folder (config.json + model.weights.h5)")
    parser.add_argument("--out", required=True, help="export folder to create")
    # Names are checked by export_folder, so a bad one is the same one-line error from Python.
    parser.add_argument(
        "--formats",
        nargs="+",
        default=list(FORMATS),
        metavar="FORMAT",
        help=f"any of {', '.join(FORMATS)} (default: all)",
    )
    parser.add_argument(
        "--quantize",
        default="none",
        metavar="MODE",
        help=f"TFLite weights: {' | '.join(QUANTIZE)} (default: none, float32)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--model-version",
        type=int,
        default=1,
        help="TF Serving version folder: saved_model/<N>/ (default 1)",
    )
    parser.add_argument(
        "--tta",
        type=int,
        default=DEFAULT_TTA,
        metavar="N",
        help="test-time augmentation passes (1-4) of the SavedModel's separate_song and "
        f"separate_wav signatures, as in keras-sep separate (default {DEFAULT_TTA})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in --out that keras-sep did not write (an earlier export is "
        "replaced without it; nothing else in the folder is touched)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip running each artifact against Keras",
    )
    add_quiet_argument(parser)
    return parser


def get_parser(prog: str = "python -m export") -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description=(
            "Export a model folder to SavedModel (TF Serving), TFLite and ONNX, check each "
            "against Keras on random input, and write DIR/manifest.json."
        ),
    )
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the export described by parsed ``args``; ``KerasSepError`` propagates."""
    # TensorFlow's C++ start-up chatter would bury the few lines this command prints;
    # it is read when TensorFlow is first imported, which happens below.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    check_output_dir(args.out)
    manifest = export_folder(
        args.folder,
        args.out,
        formats=args.formats,
        quantize=args.quantize,
        opset=args.opset,
        model_version=args.model_version,
        overwrite=args.overwrite,
        verify=args.verify,
        tta=args.tta,
        log=lambda message: print(message, flush=True),
        progress=not args.quiet,
    )
    manifest_path = Path(args.out) / MANIFEST_FILE
    print(f"wrote {Path(args.out)}: {', '.join(manifest['artifacts'])}; manifest: {manifest_path}")
    return 0


@command
def main(argv: list[str] | None = None, prog: str = "python -m export") -> int:
    return run(get_parser(prog).parse_args(argv))

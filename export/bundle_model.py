"""Make a trained run the bundled demo model (keras_sep/pretrained/demo), without machine paths.

    python export/bundle_model.py runs/demo

A run folder's config.json records where its data, cache and starting weights were on the
machine that trained it. The bundled copy keeps that record for provenance but cuts every
absolute path to its last two parts (``/home/me/data/corpus`` -> ``data/corpus``), so
nothing of the training machine ships. The weights are copied as they are; the folder is
replaced atomically. It also gets ``model.onnx``, an ONNX copy of the same weights that
``keras-sep separate`` runs without TensorFlow where that pays (``keras_sep/warm_start.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the package, not this folder
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from keras_sep.errors import command  # noqa: E402
from keras_sep.export.onnx_model import write_onnx_copy  # noqa: E402
from keras_sep.files import staged_dir  # noqa: E402
from keras_sep.folder import CONFIG_FILE, WEIGHTS_FILE, read_info  # noqa: E402
from keras_sep.gate import Gate  # noqa: E402
from keras_sep.mask import SoftMask  # noqa: E402

BUNDLED = Path(__file__).resolve().parent.parent / "keras_sep" / "pretrained" / "demo"


def strip_paths(value: Any) -> Any:
    """``value`` with every absolute path (in keys and values) cut to its last two parts."""
    if isinstance(value, dict):
        return {strip_paths(k): strip_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return "/".join(Path(value).parts[-2:])
    return value


def bundle(
    run: str | os.PathLike,
    dest: str | os.PathLike = BUNDLED,
    gate: Gate | None = None,
    mask: SoftMask | None = None,
) -> Path:
    """Copy the model folder ``run`` to ``dest`` with its recorded paths stripped; with
    ``gate`` and ``mask``, its config names that level gate (``keras_sep.gate``) and soft
    mask (``keras_sep.mask``) for separate to apply."""
    info = strip_paths(read_info(run))
    for key, stage in (("mask", mask), ("gate", gate)):
        if stage is not None:
            info[key] = dataclasses.asdict(stage)
    with staged_dir(dest) as staging:
        shutil.copyfile(Path(run) / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n")
        write_onnx_copy(staging)
    return Path(dest)


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run or model folder to bundle")
    p.add_argument("--dest", default=str(BUNDLED), help="default: the bundled demo model")
    p.add_argument(
        "--gate-db",
        type=float,
        metavar="DB",
        help="name a level gate in the copy's config: vocals, drums and bass faded out "
        "where they stay DB below the mixture over 3 s, silent 6 dB further down, into "
        "other (keras_sep/gate.py)",
    )
    p.add_argument(
        "--mask-power",
        type=float,
        metavar="P",
        help="name a soft mask in the copy's config: each stem gets the mixture's spectrum "
        "in proportion to the stems' magnitudes to the power P, over 0.75 s frames "
        "(keras_sep/mask.py)",
    )
    p.add_argument(
        "--mask-spatial",
        action="store_true",
        help="with --mask-power: weigh the stems' stereo images and spectra over the song "
        "too (a multichannel Wiener filter, statistics up to 10 s ahead)",
    )
    args = p.parse_args(argv)
    if args.mask_spatial and args.mask_power is None:
        p.error("--mask-spatial needs --mask-power")
    gate = None if args.gate_db is None else Gate(threshold_db=args.gate_db)
    mask = None
    if args.mask_power is not None:
        mask = SoftMask(power=args.mask_power, spatial=args.mask_spatial)
    print(f"bundled {args.run} as {bundle(args.run, args.dest, gate, mask)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

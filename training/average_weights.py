"""Average the weights of several epochs of a run into a model folder (stochastic weight averaging).

    python training/average_weights.py RUN OUT SNAPSHOT.weights.h5 [SNAPSHOT ...]

At a constant learning rate the weights wander around a minimum from epoch to epoch; their
uniform average sits nearer its centre than any one of them (Izmailov et al., 2018,
"Averaging Weights Leads to Wider Optima and Better Generalization"). The snapshots are
weight files of RUN's network, such as the ``epochs/epochNNNN.weights.h5`` that a run
trained with ``--set keep_epochs=true`` saves after each epoch (docs/training.md). OUT
gets RUN's config.json record plus ``swa`` (the run and the snapshots averaged). Our
networks have no batch normalization, so the average needs no statistics recomputed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: import the package, not this folder
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import keras_sep  # noqa: E402
from keras_sep.cli import add_overwrite_argument  # noqa: E402
from keras_sep.errors import UsageError, command  # noqa: E402
from keras_sep.folder import check_folder_free, read_info  # noqa: E402


def average(
    run: str | os.PathLike, out: str | os.PathLike, snapshots: list[str], overwrite: bool = False
) -> Path:
    """Write the uniform average of ``snapshots`` (weight files of ``run``'s network) to ``out``."""
    if not snapshots:
        raise UsageError("name at least one snapshot weights file to average")
    check_folder_free(out, overwrite)
    model = keras_sep.load(run)
    total = None
    for path in snapshots:
        model.load_weights(path)
        weights = [np.asarray(w, np.float64) for w in model.get_weights()]
        total = weights if total is None else [t + w for t, w in zip(total, weights, strict=True)]
    model.set_weights([(t / len(snapshots)).astype(np.float32) for t in total])
    info = read_info(run)
    record = {
        "training": info.get("training"),
        "swa": {
            "run": str(run),
            "snapshots": [Path(p).name for p in snapshots],
            "best_single_epoch": info.get("best"),
        },
    }
    return keras_sep.save(model, out, metadata=record, overwrite=overwrite)


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run or model folder whose network the snapshots hold")
    p.add_argument("out", help="model folder to write")
    p.add_argument("snapshots", nargs="+", help="weight files (.weights.h5) to average")
    add_overwrite_argument(p, "model files")
    args = p.parse_args(argv)
    out = average(args.run, args.out, args.snapshots, args.overwrite)
    print(f"averaged {len(args.snapshots)} snapshots of {args.run} into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

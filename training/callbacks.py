"""Callbacks of train.py: the best model as a model folder, and a loss-curve plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import keras

import keras_sep
from keras_sep.files import staged_file


class SaveBest(keras.callbacks.Callback):
    """Write the run folder as a model folder whenever the validation loss improves.

    The best value so far is read back from the folder, so a resumed run does not
    overwrite a better model with a worse one.
    """

    def __init__(
        self, folder: Path, metadata: dict, monitor: str = "val_loss", overwrite: bool = False
    ):
        super().__init__()
        self.folder, self.metadata, self.monitor = Path(folder), metadata, monitor
        self.overwrite = overwrite
        try:
            info = json.loads((self.folder / "config.json").read_text())
            self.best = float(info["best"][monitor])
        except (OSError, ValueError, KeyError, TypeError):
            self.best = math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not value < self.best:
            return
        self.best = float(value)
        best = {"epoch": epoch + 1, self.monitor: self.best, "loss": (logs or {}).get("loss")}
        keras_sep.save(
            self.model, self.folder, {**self.metadata, "best": best}, overwrite=self.overwrite
        )
        self.overwrite = False  # from now on the folder's model is this run's own


def plot_history(csv_path: Path, png_path: Path, overwrite: bool = False) -> Path | None:
    """Plot training and validation loss per epoch from Keras's CSV log."""
    try:
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in rows[0]:
            ax.plot(epochs, [float(r[key]) for r in rows], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE summed over sources)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with staged_file(png_path, suffix=".png", overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return png_path

"""Callbacks of train.py: the best model as a model folder, every epoch's weights, progress,
a loss-curve plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import keras

import keras_sep
from keras_sep.files import check_free, staged_file

EPOCHS_DIR = "epochs"


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


class KeepEpochs(keras.callbacks.Callback):
    """Save each finished epoch's weights as ``epochs/epochNNNN.weights.h5`` in ``folder``
    (numbered from 1, as the history), for ``training/average_weights.py``."""

    def __init__(self, folder: Path, epochs: range, overwrite: bool = False):
        super().__init__()
        self.folder, self.overwrite = Path(folder) / EPOCHS_DIR, overwrite
        for epoch in epochs:  # a file in the way stops the run before its first epoch
            check_free(self.path(epoch), overwrite)

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch{epoch:04d}.weights.h5"

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with staged_file(self.path(epoch + 1), ".weights.h5", self.overwrite) as tmp:
            self.model.save_weights(tmp)


class TrainProgress(keras.callbacks.Callback):
    """The run's progress in ``keras_sep.progress``: epochs of the run, steps of the epoch.

    On a terminal a bar of the run's epochs and, under it, the Keras-style bar of the
    current epoch's steps with its loss; on a pipe one line per finished epoch with its
    losses and time; with ``quiet`` nothing. Replaces Keras' own ``verbose`` output.
    """

    def __init__(self, epochs: int, steps: int, start_epoch: int = 0, quiet: bool = False):
        super().__init__()
        self.epochs, self.steps, self.start_epoch, self.quiet = epochs, steps, start_epoch, quiet
        self.run = self.epoch = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from keras_sep.progress import Progress

        self.run = Progress("epoch", self.epochs, "epoch", quiet=self.quiet, keep=True)
        self.run.set(self.start_epoch)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.run.start(f"epoch {epoch + 1}")
        self.epoch = self.run.child(f"epoch {epoch + 1}/{self.epochs}", self.steps, "step")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.epoch.set(batch + 1)
        if logs and "loss" in logs:
            self.epoch.postfix(f"loss {float(logs['loss']):.4g}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.run.item = ""  # the line names the epoch already
        self.run.finish(", ".join(f"{k} {float(logs[k]):.4g}" for k in LOSSES if k in logs))

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close()

    def close(self) -> None:
        if self.run is not None:
            self.run.close()
            self.run = None


LOSSES = ("loss", "val_loss")


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

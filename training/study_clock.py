"""The budget clock of a study run: stop at a budget of steps or of training seconds."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import keras

from keras_sep.progress import Progress

FIELDS = ("epoch", "steps", "seconds", "wall", "loss", "val_loss")


class BudgetClock(keras.callbacks.Callback):
    """Count training steps and training seconds; stop ``fit`` when the budget is spent.

    Training seconds are the time inside training steps, leaving out the first step of
    each process (graph tracing and compilation, which differ between architectures and
    recur on resume), validation and checkpoint writing. At every validation a row
    (epoch, steps, seconds, wall-clock seconds, losses) goes to ``path``; a resumed run
    (``start_epoch`` > 0) keeps the rows of the epochs its backup holds and counts on.
    """

    def __init__(
        self,
        path: Path,
        steps: int | None,
        seconds: float | None,
        start_epoch: int,
        steps_per_epoch: int,
        display: Progress | None = None,
    ):
        super().__init__()
        from keras_sep.training.study import read_timeline

        self.path, self.budget_steps, self.budget_seconds = Path(path), steps, seconds
        self.display = display
        self.rows = [r for r in read_timeline(self.path.parent) if r["epoch"] < start_epoch]
        last = self.rows[-1] if self.rows else {}
        self.steps = int(last.get("steps", start_epoch * steps_per_epoch))
        self.seconds = last.get("seconds", 0.0)
        self.wall = last.get("wall", 0.0)
        self.traced = False
        self.step_started = self.started = 0.0

    def on_train_begin(self, logs=None) -> None:
        self.started = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.step_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.traced:
            self.seconds += time.perf_counter() - self.step_started
        self.traced = True
        self.steps += 1
        if self.display is not None:
            self.display.set(self.steps)
        if (self.budget_steps and self.steps >= self.budget_steps) or (
            self.budget_seconds and self.seconds >= self.budget_seconds
        ):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        row = {
            "epoch": epoch,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "wall": round(self.wall + time.perf_counter() - self.started, 3),
            "loss": logs.get("loss", ""),
            "val_loss": logs.get("val_loss", ""),
        }
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)
        if self.display is not None:
            self.display.note(
                f"{self.seconds:.0f} s, loss {row['loss']:.4g}, val_loss {row['val_loss']:.4g}"
            )

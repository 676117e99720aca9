"""A level gate for stems that should be silent: where a stem's output stays far below the
mixture for seconds on end, it is leakage, not a part that plays.

A separator trained on songs that mostly have singing never quite outputs silence for a
song without it: the bundled model's vocals output on songs with no singing sits about
14.5 dB below the mixture (docs/separation.md), an audible murmur of the other parts.
``Gate`` measures each gated stem's level against the mixture over a sliding window of a
few seconds and fades the stem out where that level is under ``threshold_db``, fully
``ramp_db`` below it; what it removes goes to ``into`` (the residual stem, "other"), so
the stems still sum to what the model gave. A stem that plays is rarely that quiet
against the whole mixture for that long, so singing is left alone.

The gate streams: it holds half a window of lookahead, and the stems it gives for a song
are the same however the song arrives in blocks (to float64 rounding of its running
energy sums). It costs about 0.25 s of one core per 3-minute song, in the thread that
also runs the overlap-add, beside the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_sep.errors import ModelFolderError

TINY = 1e-20  # energy floor: silence against silence is "not quiet", so it is left alone
# ``gate`` for separate: whatever the model folder's config.json names ("gate"), if anything.
MODEL_GATE = "model"


@dataclass(frozen=True)
class Gate:
    """Which stems to gate, into which stem, and how (seconds, dB against the mixture)."""

    stems: tuple[str, ...] = ("vocals", "drums", "bass")
    into: str = "other"
    window: float = 3.0
    threshold_db: float = -14.0
    ramp_db: float = 6.0

    def __post_init__(self) -> None:
        names = (self.stems,) if isinstance(self.stems, str) else self.stems
        if not names or not all(isinstance(n, str) for n in (*names, self.into)):
            raise ValueError(f"stems and into must name sources, got {self.stems!r}, {self.into!r}")
        for name in ("window", "threshold_db", "ramp_db"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not (self.window > 0 and self.ramp_db > 0):
            raise ValueError(
                f"window and ramp_db must be positive, got {self.window}, {self.ramp_db}"
            )
        object.__setattr__(self, "stems", tuple(names))

    def gain(self, stem_energy: np.ndarray, mixture_energy: np.ndarray) -> np.ndarray:
        """Gains from 0 to 1 for windowed energies: 1 from ``threshold_db`` against the
        mixture up, 0 from ``ramp_db`` below that down, linear in dB between."""
        level = 10 * np.log10((stem_energy + TINY) / (mixture_energy + TINY))
        return np.clip((level - self.threshold_db) / self.ramp_db + 1.0, 0.0, 1.0)

    def apply(self, blocks: Iterator[dict[str, np.ndarray]], rate: int) -> Iterator[dict]:
        """Gate consecutive stem blocks (each source -> (samples, channels)) at ``rate``.

        The mixture is the sum of the stems. Sample i's window spans
        [i - window/2, i + window/2), cut at the song's ends.
        """
        width = max(1, round(self.window * rate))
        before, after = width // 2, width - width // 2
        held: dict[str, np.ndarray] | None = None  # stems not yet given out
        # Running sums of the energies (of each gated stem and the mixture) from ``before``
        # samples ahead of ``held`` on: sums[k][j] is the energy of the samples before j.
        sums: dict[str, np.ndarray] = {}
        context = 0  # samples of energy kept ahead of ``held``

        def release(count: int, end: bool) -> dict[str, np.ndarray]:
            nonlocal held, sums, context
            length = len(sums["mixture"]) - 1
            centre = context + np.arange(count)
            lo = np.maximum(centre - before, 0)
            hi = np.minimum(centre + after, length) if end else centre + after
            out = {s: v[:count].copy() for s, v in held.items()}
            for s in self.stems:
                g = self.gain(sums[s][hi] - sums[s][lo], sums["mixture"][hi] - sums["mixture"][lo])
                g = g[:, None].astype(np.float32)
                out[self.into] += (1 - g) * out[s]
                out[s] *= g
            held = {s: v[count:] for s, v in held.items()}
            drop = max(0, context + count - before)
            sums = {k: c[drop:] for k, c in sums.items()}
            context = context + count - drop
            return out

        for block in blocks:
            if held is None:
                missing = sorted({*self.stems, self.into} - set(block))
                if missing:
                    raise ValueError(f"the gate needs stems {missing}, got {sorted(block)}")
                held = {s: np.zeros((0, v.shape[1]), np.float32) for s, v in block.items()}
                sums = {k: np.zeros(1) for k in (*self.stems, "mixture")}
            held = {
                s: np.concatenate([held[s], np.asarray(v, np.float32)]) for s, v in block.items()
            }
            mixture = sum(np.asarray(v, np.float64) for v in block.values())
            new = {s: _energy(np.asarray(block[s], np.float64)) for s in self.stems}
            new["mixture"] = _energy(mixture)
            sums = {k: np.concatenate([c, c[-1] + np.cumsum(new[k])]) for k, c in sums.items()}
            # Samples whose windows are wholly here.
            ready = min(len(held[self.into]), len(sums["mixture"]) - context - after)
            if ready > 0:
                yield release(ready, end=False)
        if held is not None and len(held[self.into]):
            yield release(len(held[self.into]), end=True)


def _energy(x: np.ndarray) -> np.ndarray:
    """Per-sample energy of (samples, channels), summed over the channels (a loop: NumPy
    reduces a short last axis several times slower)."""
    total = np.square(x[:, 0])
    for c in range(1, x.shape[1]):
        total += np.square(x[:, c])
    return total


def folder_stage(model: Any, key: str, cls: type, where: str) -> Any:
    """``cls(**settings)`` for the entry ``key`` of a loaded model's folder config.json
    (``"gate": {...}``, ``"mask": {...}``), or None; bad settings are a one-line
    ``ModelFolderError`` naming ``where`` the fields are defined."""
    settings = (getattr(model, "folder_info", None) or {}).get(key)
    if not settings:
        return None
    try:
        return cls(**settings)
    except (TypeError, ValueError) as e:
        fields = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ModelFolderError(
            f'the model folder\'s config.json has a bad "{key}" ({e}); give it {fields} '
            f"({where}), or remove it"
        ) from None


def model_gate(model: Any) -> Gate | None:
    """The gate a loaded model's folder names in its config.json (``"gate": {...}``, the
    fields of ``Gate``), if it names one and the model has those stems; else None."""
    gate = folder_stage(model, "gate", Gate, "keras_sep/gate.py")
    if gate is None:
        return None
    sources = set(model.arch_config.sources)
    return gate if {*gate.stems, gate.into} <= sources else None

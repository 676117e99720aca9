"""A soft-mask post-filter: each stem gets the mixture's spectrum, weighted by that stem's
share of the stems' magnitudes (a single-channel Wiener-style filter).

A waveform model's stems each carry a little of the others: a bass note under the vocals,
hi-hat in the bass. Over short-time Fourier frames, a stem's estimate is usually loud only
where its source is; ``SoftMask`` gives stem j, in every frequency bin of every frame and
channel, the mixture's value times ``|S_j|^p / sum_k |S_k|^p`` (S: the stems' spectra, p:
``power``), and resynthesises by overlap-add. The masks sum to one, so the stems still sum
to what the model gave. Open-Unmix and Spleeter end with the same kind of filter (their
multichannel Wiener filter, with ``power`` 1 for magnitudes and 2 for power spectra);
here the model's own stems are the estimates it weighs.

Frames are ``window`` seconds long, rounded to a power of two samples (16384 at 22.05
kHz for the default 0.75 s: long frames resolve the harmonics of held notes), with a
periodic Hann window on analysis and synthesis at a hop of a quarter frame, whose squares
sum to 1.5 at every sample. The filter streams: it holds one frame of lookahead, and the
stems it gives for a song are the same however the song arrives in blocks (to float32
rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.fft

from keras_sep.gate import folder_stage

# The entries of a model folder's config.json that separate applies after the model, in
# order; an export's manifest carries them for its runners.
FOLDER_STAGES = ("mask", "gate")
# ``mask`` for separate: whatever the model folder's config.json names ("mask"), if anything.
MODEL_MASK = "model"
TINY = 1e-20  # a bin where every stem is silent: the mixture is silent there too
OVERLAP = 4  # frames covering each sample (hop = frame / OVERLAP)
HANN_SQUARES = 1.5  # sum over the frames of the squared periodic Hann window, hop frame/4
FRAMES_PER_CALL = 32  # frames transformed together (bounds the memory: ~40 MB at 16384)


@dataclass(frozen=True)
class SoftMask:
    """Frame length (seconds, rounded to a power of two samples) and the magnitude power."""

    window: float = 0.75
    power: float = 1.0

    def __post_init__(self) -> None:
        for name in ("window", "power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")

    def frame(self, rate: int) -> int:
        """Frame length in samples at ``rate``: a power of two, at least 4 * OVERLAP."""
        return max(4 * OVERLAP, 2 ** round(math.log2(self.window * rate)))

    def apply(self, blocks: Iterator[dict[str, np.ndarray]], rate: int) -> Iterator[dict]:
        """Filter consecutive stem blocks (each source -> (samples, channels)) at ``rate``.

        The mixture is the sum of the stems. The song is framed as if zero-padded by
        ``frame - hop`` samples in front and up to a frame behind, so every sample lies in
        exactly ``OVERLAP`` frames.
        """
        n = self.frame(rate)
        hop = n // OVERLAP
        window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
        names: list[str] | None = None
        held = out = None  # input and output from the next frame's start on
        lead = n - hop  # padding samples still at the front of ``out``

        def frames(count: int) -> None:
            """Filter ``count`` frames from ``held``'s start; adds them into ``out``."""
            spectra = {}
            for s in names:
                view = np.lib.stride_tricks.sliding_window_view(held[s], n, axis=0)
                # (frames, channels, n): frame i starts at i * hop.
                spectra[s] = scipy.fft.rfft(view[: (count - 1) * hop + 1 : hop] * window, axis=-1)
            mixture = sum(spectra.values())
            weights = {s: np.abs(v) for s, v in spectra.items()}
            if self.power != 1:
                weights = {s: w**self.power for s, w in weights.items()}
            total = sum(weights.values()) + TINY
            for s in names[:-1]:  # the last stem is what the others leave (``release``)
                y = scipy.fft.irfft(mixture * (weights[s] / total), n, axis=-1) * window
                y = np.moveaxis(y, 1, 2)  # (frames, n, channels)
                for phase in range(OVERLAP):  # frames phase, phase + 4, ... do not overlap
                    part = y[phase::OVERLAP].reshape(-1, y.shape[-1])
                    start = phase * hop
                    out[s][start : start + len(part)] += part

        def release(count: int) -> dict[str, np.ndarray]:
            nonlocal held, out, lead
            block = {s: out[s][:count] / HANN_SQUARES for s in names[:-1]}
            # The masks sum to one, so the last stem is the mixture less the others.
            block[names[-1]] = sum(held[s][:count] for s in names) - sum(block.values())
            held = {s: v[count:] for s, v in held.items()}
            out = {s: v[count:] for s, v in out.items()}
            cut = min(lead, count)
            lead -= cut
            return {s: v[cut:] for s, v in block.items()}

        def run() -> Iterator[dict[str, np.ndarray]]:
            """Filter every frame that ``held`` holds whole; give what is final."""
            nonlocal out
            while len(held[names[0]]) >= n:
                count = min(FRAMES_PER_CALL, (len(held[names[0]]) - n) // hop + 1)
                out = {s: _grown(out[s], (count - 1) * hop + n) for s in names}
                frames(count)
                block = release(count * hop)
                if len(block[names[0]]):
                    yield block

        for block in blocks:
            if names is None:
                names = list(block)
                width = next(iter(block.values())).shape[1]
                held = {s: np.zeros((lead, width), np.float32) for s in names}
                out = {s: np.zeros((0, width), np.float32) for s in names}
            held = {s: np.concatenate([held[s], np.asarray(block[s], np.float32)]) for s in names}
            yield from run()
        if names is None:
            return
        # The song's last samples: silence behind them, up to the last frame that covers one.
        remaining = len(held[names[0]]) - lead
        last = (len(held[names[0]]) - 1) // hop * hop
        held = {s: _grown(v, last + n) for s, v in held.items()}
        for block in run():
            block = {s: v[:remaining] for s, v in block.items()}
            remaining -= len(block[names[0]])
            if len(block[names[0]]):
                yield block


def _grown(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``length`` rows."""
    if len(x) >= length:
        return x
    return np.concatenate([x, np.zeros((length - len(x), x.shape[1]), x.dtype)])


def model_mask(model) -> SoftMask | None:
    """The soft mask a loaded model's folder names in its config.json (``"mask": {...}``,
    the fields of ``SoftMask``), if it names one; else None."""
    return folder_stage(model, "mask", SoftMask, "keras_sep/mask.py")

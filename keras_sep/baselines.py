"""Reference rows of every evaluation: what doing nothing, or an oracle, scores.

``mixture`` (the mixture as every estimate: what doing nothing scores), ``silence``
(zeros: what estimating nothing scores, plain SDR exactly 0 dB) and ``oracle`` (the ideal
ratio mask, an upper bound that needs the true sources). ``evaluate`` and ``demo`` both
score their models next to these.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from keras_sep.audio import fit_length
from keras_sep.data.tracks import Track

MIXTURE, SILENCE, ORACLE = "mixture", "silence", "oracle"
REFERENCE_SYSTEMS = (MIXTURE, SILENCE, ORACLE)


def ideal_ratio_mask(
    sources: Mapping[str, np.ndarray], n_fft: int = 4096, hop: int = 1024, power: float = 2.0
) -> dict[str, np.ndarray]:
    """Oracle estimates: the mixture's STFT masked by |S_j|^p / sum_k |S_k|^p, per channel.

    ``power=2`` is the ideal ratio mask of the sigsep oracle baselines (IRM2); it needs
    the true sources, so it is an upper bound for mask-like methods, not a method.
    """
    from scipy.signal import istft, stft

    names = list(sources)
    length, channels = next(iter(sources.values())).shape
    out = {s: np.zeros((length, channels), dtype=np.float32) for s in names}
    kw = {"nperseg": n_fft, "noverlap": n_fft - hop}
    for c in range(channels):  # one channel at a time bounds memory for long tracks
        specs = [stft(np.asarray(sources[s][:, c], dtype=np.float32), **kw)[2] for s in names]
        mix = np.sum(specs, axis=0)
        weights = [np.abs(x) ** power for x in specs]
        total = np.sum(weights, axis=0)
        total[total == 0] = 1.0  # empty bins: every mask is 0 there
        for s, w in zip(names, weights, strict=True):
            wave = istft(mix * (w / total), **kw)[1]
            out[s][:, c] = fit_length(wave, length)
    return out


def reference_estimates(system: str, track: Track) -> dict[str, np.ndarray]:
    """The estimates of a reference row for ``track``."""
    if system == MIXTURE:
        mixture = track.mixture
        return {s: mixture for s in track.sources}
    if system == SILENCE:
        return {s: np.zeros_like(x) for s, x in track.sources.items()}
    if system == ORACLE:
        return ideal_ratio_mask(track.sources)
    raise ValueError(f"unknown reference system {system!r}; known: {list(REFERENCE_SYSTEMS)}")

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

With ``spatial``, the weights also use the stems' stereo image and their spectra over the
song: a multichannel Wiener filter (as Open-Unmix's ``norbert``, one step, initialised with
the model's stems). Stem j has a level ``v_j = (mean over channels |S_j|^2)^(power / 2)``
in each bin and frame, and a spatial covariance per bin, ``R_j = sum_t S_j S_j^H /
sum_t v_j`` over the frames from the song's start to ``lookahead`` seconds ahead; stem j
gets ``v_j R_j (sum_k v_k R_k)^-1 x`` of the mixture's spectrum ``x``. ``R_j`` carries both
where the stem sits between the channels and how loud it usually is in that bin, so a bin
where a stem is as loud as another this frame, but rarely is, goes mostly to the other.
When every stem has the same stereo image and level over the song this is the soft mask.
``sum_k v_k R_k`` gets ``REGULARISE`` of its mean diagonal added to its diagonal, so that
nearly singular bins do not amplify the stems' float rounding. The filter then holds
``lookahead`` seconds (and a frame) of lookahead; memory stays bounded by that, whatever
the song's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

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
REGULARISE = 1e-4  # added to the mixture covariance's diagonal, relative to its mean level


@dataclass(frozen=True)
class SoftMask:
    """Frame length (seconds, rounded to a power of two samples), the magnitude power, and
    whether to weigh the stems' stereo image and song-long spectra (``spatial``, with
    statistics up to ``lookahead`` seconds ahead)."""

    window: float = 0.75
    power: float = 1.0
    spatial: bool = False
    lookahead: float = 10.0

    def __post_init__(self) -> None:
        for name in ("window", "power", "lookahead"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.spatial, bool):
            raise ValueError(f"spatial must be true or false, got {self.spatial!r}")

    def frame(self, rate: int) -> int:
        """Frame length in samples at ``rate``: a power of two, at least 4 * OVERLAP."""
        return max(4 * OVERLAP, 2 ** round(math.log2(self.window * rate)))

    def ahead(self, rate: int) -> int:
        """Frames past each frame whose statistics ``spatial`` uses (0 without it)."""
        return round(self.lookahead * rate / (self.frame(rate) // OVERLAP)) if self.spatial else 0

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
        held = out = ready = None  # input, output, spectra (chunks) from the next frame on
        lead = n - hop  # padding samples still at the front of ``out``
        ahead = self.ahead(rate)
        spatial = _SongStatistics(self.power) if self.spatial else None

        def frames(count: int, whole: int) -> None:
            """Filter ``count`` frames from ``held``'s start (``whole`` frames of it are
            there to use); adds them into ``out``."""
            # Imported here (0.14 s, most of it scipy's array-API layer), in the thread that
            # filters, while the model computes the next batches; not before the first call.
            import scipy.fft

            last = min(count - 1 + ahead, whole - 1)  # the last frame the filter looks at
            fresh = {}  # spectra of the frames after those ``ready`` holds, up to ``last``
            for s in names:
                view = np.lib.stride_tricks.sliding_window_view(held[s], n, axis=0)
                # (frames, channels, n): frame i starts at i * hop.
                start = sum(map(len, ready[s])) * hop
                fresh[s] = scipy.fft.rfft(view[start : last * hop + 1 : hop] * window, axis=-1)
                ready[s].append(fresh[s])
            spectra = {s: _take(ready[s], count) for s in names}
            mixture = sum(spectra.values())
            if spatial is not None:
                filtered = spatial.filter(spectra, mixture, fresh, names[:-1])
            else:
                weights = {s: np.abs(v) for s, v in spectra.items()}
                if self.power != 1:
                    weights = {s: w**self.power for s, w in weights.items()}
                total = sum(weights.values()) + TINY
                filtered = {s: mixture * (weights[s] / total) for s in names[:-1]}
            for s in names[:-1]:  # the last stem is what the others leave (``release``)
                y = scipy.fft.irfft(filtered[s], n, axis=-1) * window
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

        def run(end: bool = False) -> Iterator[dict[str, np.ndarray]]:
            """Filter every frame that ``held`` holds whole, with its lookahead unless at the
            song's ``end``; give what is final."""
            nonlocal out
            while (whole := (len(held[names[0]]) - n) // hop + 1) > 0:
                # With lookahead, whole chunks from the song's start (``_SongStatistics``).
                count = min(FRAMES_PER_CALL, whole)
                if not end and ahead and whole < FRAMES_PER_CALL + ahead:
                    break
                out = {s: _grown(out[s], (count - 1) * hop + n) for s in names}
                frames(count, whole)
                block = release(count * hop)
                if len(block[names[0]]):
                    yield block

        for block in blocks:
            if names is None:
                names = list(block)
                width = next(iter(block.values())).shape[1]
                held = {s: np.zeros((lead, width), np.float32) for s in names}
                ready = {s: [] for s in names}
                out = {s: np.zeros((0, width), np.float32) for s in names}
            held = {s: np.concatenate([held[s], np.asarray(block[s], np.float32)]) for s in names}
            yield from run()
        if names is None:
            return
        # The song's last samples: silence behind them, up to the last frame that covers one.
        remaining = len(held[names[0]]) - lead
        last = (len(held[names[0]]) - 1) // hop * hop
        held = {s: _grown(v, last + n) for s, v in held.items()}
        for block in run(end=True):
            block = {s: v[:remaining] for s, v in block.items()}
            remaining -= len(block[names[0]])
            if len(block[names[0]]):
                yield block


class _SongStatistics:
    """``SoftMask(spatial=True)``'s weights: sums, from the song's first frame, of each
    stem's ``S S^H`` and level ``v`` per bin. They grow a chunk of ``FRAMES_PER_CALL``
    frames at a time, counted from the song's start, so a frame's weights do not depend on
    how the song arrived in blocks."""

    def __init__(self, power: float) -> None:
        self.power = power
        self.sums: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.levels: dict[str, list] = {}  # v of the frames summed, not yet filtered (chunks)

    def filter(self, spectra: dict, mixture: np.ndarray, fresh: dict, names: list[str]) -> dict:
        """The filtered ``spectra`` (each stem: (frames, channels, bins); ``mixture``: their
        sum), for the stems ``names``, weighed with the sums over the frames up to the last
        of ``fresh``, the spectra of the frames not in the sums yet."""
        levels, images = [], []  # v (frames, bins) and R (channels, channels, bins) per stem
        for s, z in fresh.items():
            power = z.real**2 + z.imag**2  # (frames, channels, bins)
            level = self.level(power)
            self.levels.setdefault(s, []).append(level)
            levels.append(_take(self.levels[s], len(spectra[s])))
            outer, total = self.sums.get(s, (0, 0))
            outer = outer + _outer(z, power)
            total = total + np.sum(level, axis=0, dtype=float)
            self.sums[s] = outer, total
            images.append(outer / np.maximum(total, TINY))
        wanted = [k for k, s in enumerate(spectra) if s in names]
        wiener = _wiener_stereo if mixture.shape[1] == 2 else _wiener
        filtered = wiener(np.stack(levels), np.stack(images), mixture, wanted)
        return {s: filtered[k] for k, s in enumerate(spectra) if s in names}

    def level(self, power: np.ndarray) -> np.ndarray:
        """v from the spectra's power |S|^2 (frames, channels, bins): the mean over the
        channels, to ``self.power / 2``; (frames, bins)."""
        return np.mean(power, axis=1) ** (self.power / 2)


def _outer(z: np.ndarray, power: np.ndarray) -> np.ndarray:
    """``sum_t S S^H`` per bin, (channels, channels, bins) complex128, from the spectra S
    (frames, channels, bins) and their power |S|^2: the diagonal is the power's sum, and
    each pair of channels one product (an einsum over all pairs took twice as long)."""
    channels = z.shape[1]
    outer = np.empty((channels, channels, z.shape[2]), complex)
    for i in range(channels):
        outer[i, i] = np.sum(power[:, i], axis=0)
        for j in range(i + 1, channels):
            outer[i, j] = np.sum(z[:, i] * z[:, j].conj(), axis=0)
            outer[j, i] = outer[i, j].conj()
    return outer


def _wiener(levels: np.ndarray, images: np.ndarray, mixture: np.ndarray, wanted: list[int]):
    """``v_k R_k (sum_j v_j R_j)^-1 x`` for each stem k in ``wanted``, from the levels v
    (stems, frames, bins), the spatial covariances R (stems, channels, channels, bins) and
    the mixture's spectrum x (frames, channels, bins); any number of channels."""
    channels = images.shape[1]
    both = np.einsum("stb,sijb->tbij", levels, images)  # float64: tiny determinants
    scale = np.trace(both, axis1=-2, axis2=-1).real / channels
    both += (REGULARISE * scale + TINY)[..., None, None] * np.eye(channels)
    solved = np.linalg.solve(both, np.moveaxis(mixture, 1, 2)[..., None])[..., 0]
    solved = solved.astype(np.complex64)  # (frames, bins, channels)
    images = images.astype(np.complex64)
    return {k: levels[k][:, None] * np.einsum("ijb,tbj->tib", images[k], solved) for k in wanted}


def _wiener_stereo(levels: np.ndarray, images: np.ndarray, mixture: np.ndarray, wanted: list):
    """``_wiener`` for two channels, in closed form: R = [[a, c], [c*, d]] per bin, and
    the same for the levels' sum; about three times as fast as ``_wiener``'s matrices."""
    a, c, d = images[:, 0, 0].real, images[:, 0, 1], images[:, 1, 1].real
    parts = np.stack([a, c.real, c.imag, d], axis=1)  # (stems, 4, bins)
    # sum_k v_k R_k: four real (frames, bins) sums, in float64 (tiny determinants).
    sum_a, real, imag, sum_d = np.einsum("stb,sqb->qtb", levels.astype(float), parts)
    regularise = REGULARISE * (sum_a + sum_d) / 2 + TINY
    sum_a += regularise
    sum_d += regularise
    det = sum_a * sum_d - (real**2 + imag**2)
    # Its inverse, [[sum_d, -sum_c], [-sum_c*, sum_a]] / det, times the mixture x, also
    # in float64: where det is tiny the two products nearly cancel (in complex64 the
    # bundled model's ONNX and Keras stems, 5e-7 apart, came out 7e-5 apart, not 2e-6).
    sum_c = real + 1j * imag
    x, y = mixture[:, 0], mixture[:, 1]
    first = ((sum_d * x - sum_c * y) / det).astype(np.complex64)
    second = ((sum_a * y - sum_c.conj() * x) / det).astype(np.complex64)
    a, c, d = a.astype(np.float32), c.astype(np.complex64), d.astype(np.float32)
    filtered = {}
    for k in wanted:  # v_k R_k (first, second)
        stem = np.empty(mixture.shape, np.complex64)
        np.multiply(a[k], first, out=stem[:, 0])
        stem[:, 0] += c[k] * second
        np.multiply(c[k].conj(), first, out=stem[:, 1])
        stem[:, 1] += d[k] * second
        stem *= levels[k][:, None]
        filtered[k] = stem
    return filtered


def _take(chunks: list[np.ndarray], count: int) -> np.ndarray:
    """The first ``count`` rows of the arrays in ``chunks`` (end to end), taken out of it."""
    parts = []
    while count and chunks:
        parts.append(chunks[0][:count])
        count -= len(parts[-1])
        chunks[0] = chunks[0][len(parts[-1]) :]
        if not len(chunks[0]):
            chunks.pop(0)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _grown(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` with zero rows appended up to ``length`` rows."""
    if len(x) >= length:
        return x
    return np.concatenate([x, np.zeros((length - len(x), x.shape[1]), x.dtype)])


def model_mask(model) -> SoftMask | None:
    """The soft mask a loaded model's folder names in its config.json (``"mask": {...}``,
    the fields of ``SoftMask``), if it names one; else None."""
    return folder_stage(model, "mask", SoftMask, "keras_sep/mask.py")

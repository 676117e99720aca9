"""The one separation routine: chunked overlap-add over a waveform of any length.

Used by the CLI, evaluation and the export parity checks. It takes a Keras
``SeparationModel`` or anything with the same three members (``arch_config``,
``predict_on_batch`` returning one (batch, time, channels) array per source), such
as the SavedModel / TFLite / ONNX runners in ``export`` or the TF Serving client.

The overlap-add yields the stems block by block as soon as no later segment can change
them, so a song streams from its file to its stem files in bounded memory
(``separate_to_folder``), and the in-memory functions collect the same blocks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from keras_sep.audio import (
    BLOCK_FRAMES,
    AudioReader,
    Resampler,
    check_audio,
    check_finite,
    check_length,
    match_channels,
    open_audio,
    stem_writer,
)
from keras_sep.config import BaseConfig, WaveUNetConfig
from keras_sep.errors import AudioWarning
from keras_sep.gate import MODEL_GATE, Gate, model_gate
from keras_sep.mask import MODEL_MASK, SoftMask, model_mask
from keras_sep.threads import background, in_order

# 1024 samples (46 ms) of crossfade per 16384-sample segment: overlap costs 1/(1-0.0625),
# 7% more model time (0.25 would cost 33%).
DEFAULT_OVERLAP = 0.0625
# Segments per model call when none is asked for: see ``default_batch_size``.
DEFAULT_BATCH_SIZE = 4
DILATED_BATCH_SIZE = 2
# Model calls kept running at once for a model that says it takes calls from several
# threads (``parallel_calls``): while one call is in a memory-bound layer (a Wave-U-Net's
# small layers, a dense block's concatenations) or between layers, the other computes, and
# one call's overlap-add runs beside the next. 2 cores, TensorFlow's default threads: the
# bundled model 6.9 ms a segment instead of 7.7 in float32, 4.0 instead of 4.6 in bfloat16;
# the paper DDU (batch 2) 0.979 s a segment instead of 1.022 with oneDNN held to AVX2,
# 0.593 instead of 0.632 with AVX-512, for twice the activations held.
CALLS_AT_ONCE = 2
# A segment whose mixture peaks below -120 dBFS is digital silence: the model is not run
# on it (its biases would make up -26 dBFS of noise) and its stems are silent.
SILENCE = 1e-6
# Test-time augmentation: every batch also goes through the model with its stereo channels
# swapped and its polarity inverted, and the stems, transformed back, are averaged. On our
# produced held-out songs the bundled model gains 0.07 dB SDR from the swap (2 passes) and
# 0.14 dB from both (4 passes) (docs/separation.md); 1 pass turns it off.
DEFAULT_TTA = 4

Progress = bool | str | Callable[[int, int], None]


class Predictor(Protocol):
    arch_config: BaseConfig

    def predict_on_batch(self, x: np.ndarray) -> dict[str, Any]: ...


def window(length: int, overlap: int) -> np.ndarray:
    """Flat-top weights with linear ramps of ``overlap`` samples at both ends, never zero."""
    w = np.ones(length, dtype=np.float32)
    if overlap > 0:
        ramp = np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
        w[:overlap] = np.minimum(w[:overlap], ramp)
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def tta_views(channels: int, tta: int) -> list[tuple[bool, bool]]:
    """(swap channels, invert polarity) of each of ``tta`` passes; each is its own inverse."""
    views = [(False, False), (True, False), (False, True), (True, True)]
    if channels != 2:  # a swap needs two channels
        views = [v for v in views if not v[0]]
    if not 1 <= tta <= len(views):
        raise ValueError(f"tta must be from 1 to {len(views)} for {channels} channel(s), got {tta}")
    return views[:tta]


def apply_view(batch: Any, view: tuple[bool, bool]) -> Any:
    """``batch`` (batch, time, channels) seen through one of ``tta_views``; its own inverse.

    Works on NumPy arrays and on TensorFlow tensors alike: the SavedModel's whole-song
    signature (``export/song.py``) applies the same views in its graph.
    """
    swap, invert = view
    x = batch[:, :, ::-1] if swap else batch
    return -x if invert else x


def predict_views(
    model: Predictor, batch: np.ndarray, views: list[tuple[bool, bool]], together: bool = False
) -> dict[str, np.ndarray]:
    """The model's stems for ``batch``, averaged over the ``tta_views`` transforms of it.

    ``together``: all views in one model call of ``len(views)`` times the batch, rather
    than one call per view (``views_together`` says when that pays).
    """
    seen = [np.ascontiguousarray(apply_view(batch, view)) for view in views]
    if together and len(views) > 1:
        stacked = model.predict_on_batch(np.concatenate(seen))
        n = len(batch)
        parts = range(0, n * len(views), n)
        outputs = [{s: y[k : k + n] for s, y in stacked.items()} for k in parts]
    else:
        outputs = [model.predict_on_batch(x) for x in seen]
    sums: dict[str, np.ndarray] = {}
    for view, estimates in zip(views, outputs, strict=True):
        for source, estimate in estimates.items():
            y = apply_view(np.asarray(estimate, dtype=np.float32), view)
            sums[source] = sums.get(source, 0) + y
    return {source: total / len(views) for source, total in sums.items()}


def views_together(cfg: BaseConfig) -> bool:
    """Whether ``predict_views`` should run the TTA views of a batch in one model call.

    A Wave-U-Net segment is so cheap that a call of 4 segments leaves the cores idle part
    of the time: the bundled model computes a segment in 8.7 ms at batch 4 and 7.0 ms at
    batch 16 (2 cores, TensorFlow), so its 4 views in one call are 20% faster. A dilated
    model's call is all computation, and 4 views in one call would only hold 4 times the
    activations (the paper DDU: 3.8 GB peak instead of 1.4 GB), so its views go one by one.
    """
    return isinstance(cfg, WaveUNetConfig)


def calls_at_once(parallel: bool) -> int:
    """Model calls ``overlap_add`` keeps running at once: two for a model that takes calls
    from several threads (``parallel``), else one."""
    return CALLS_AT_ONCE if parallel else 1


def default_batch_size(cfg: BaseConfig) -> int:
    """Segments per model call for ``cfg``'s model when the caller names none.

    A Wave-U-Net runs 4 segments, whose 4 TTA views go through the model together
    (``views_together``): 16 in one call. A dilated model's call is all computation, so
    smaller batches cost as much per segment (paper DDU, 2 cores, float32: 0.90 s per
    segment at batch 2, 0.93 s at batch 4; with oneDNN held to AVX2, 1.42 and 1.43 s)
    while the last, zero-padded batch wastes less: a song's segments rarely fill the
    last batch, and a padded DDU segment costs as much as a real one. Batch 1 is slower
    (1.64 s at AVX2). Half the batch also halves the activations held.
    """
    return DEFAULT_BATCH_SIZE if views_together(cfg) else DILATED_BATCH_SIZE


@dataclass(frozen=True)
class SegmentPlan:
    """The one segment plan of overlap-add: segment length, overlap, window, starts, padding.

    ``overlap_add`` executes it in NumPy; the SavedModel's ``separate_song`` signature
    (``export/song.py``) executes the same plan in its graph. Make plans with
    ``segment_plan``.
    """

    segment: int  # samples per segment, a length the model accepts
    overlap: int  # samples shared by neighbouring segments, crossfaded by ``window``
    window: np.ndarray  # (segment,) float32 weights, never zero

    @property
    def hop(self) -> int:
        return self.segment - self.overlap

    def starts(self, total: Any, xp: Any = np) -> Any:
        """Starts of the segments covering ``total`` samples: every ``hop``, the last ending
        at the end (one segment from 0 when ``total <= segment``).

        Closed-form, so ``total`` may be an int or a scalar tensor: ``xp`` is any namespace
        with NumPy's ``arange``, ``minimum`` and ``maximum`` (the graph passes TensorFlow's).
        """
        last = total - self.segment
        count = 1 + xp.maximum(0, -(-last // self.hop))  # ceil(last / hop) + 1, at least 1
        return xp.maximum(0, xp.minimum(xp.arange(count) * self.hop, last))

    def padded(self, total: Any, xp: Any = np) -> Any:
        """Samples the segments span: ``total``, zero-padded up to one segment if shorter."""
        return xp.maximum(total, self.segment)


def segment_plan(
    cfg: BaseConfig, segment: int | None = None, overlap: float = DEFAULT_OVERLAP
) -> SegmentPlan:
    """The plan for ``cfg``'s model: ``segment`` samples (default the training segment
    length, rounded up to a length the model accepts) overlapping by the fraction
    ``overlap``, crossfaded with ``window``."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    segment = cfg.valid_length(segment or cfg.segment_length)
    overlap_samples = min(int(round(overlap * segment)), segment - 1)
    return SegmentPlan(segment, overlap_samples, window(segment, overlap_samples))


def _ticker(progress: Progress, total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(tick(done), close()) for ``progress``: a bar (True or a label), a callback, or nothing."""
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    if not progress:
        return (lambda done: None), (lambda: None)
    from keras_sep import progress as display

    label = progress if isinstance(progress, str) else "separating"
    bar = display.Progress(label, total, "batch", lines=display.END)
    return bar.set, bar.close


def overlap_add(
    model: Predictor,
    read: Callable[[int, int], np.ndarray],
    total: int,
    *,
    segment: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int | None = None,
    progress: Progress = False,
    precision: str | None = None,
    tta: int = DEFAULT_TTA,
) -> Iterator[dict[str, np.ndarray]]:
    """The overlap-add itself: yield consecutive blocks of every source covering ``total``.

    ``read(start, stop)`` returns the mixture's samples [start, stop) at the model's rate
    (fewer at the end); starts only increase, so it can be a stream. A block is yielded
    as soon as no later segment overlaps it, so memory holds the batches in flight
    (``calls_at_once`` running and one queued: ``keras_sep.threads.in_order``) and their outputs.
    ``precision`` ("auto", "float32", "bfloat16") runs a Keras model at that precision (a
    converted copy: load the model with ``precision=`` to convert it once); None runs it
    as it is. The overlap-add itself is float32 either way. ``tta``: how many of the
    mixture, its channel swap and their polarity inversions each batch is separated as,
    averaged (``tta_views``; 1 turns test-time augmentation off).
    """
    if precision is not None:  # Keras only when a precision is asked for
        from keras_sep.models import convert_precision

        model = convert_precision(model, precision)
    cfg = model.arch_config
    plan = segment_plan(cfg, segment, overlap)
    if batch_size is None:
        batch_size = default_batch_size(cfg)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    views = tta_views(cfg.channels, tta)
    together = views_together(cfg)
    # A model that takes any batch size at no cost and builds nothing on its first call
    # (``any_batch``: the bundled model's ONNX copy) gets a short last batch and no first
    # call alone; a Keras model gets full batches (a new shape is a new trace).
    flexible = getattr(model, "any_batch", False)
    segment, weights = plan.segment, plan.window
    starts = [int(start) for start in plan.starts(total)]
    batches = range(0, len(starts), batch_size)
    tick, close = _ticker(progress, len(batches))
    # Sums of weighted estimates and of weights for the samples [base, base + len(norm)).
    base, norm = 0, np.zeros(0, dtype=np.float32)
    sums = {s: np.zeros((0, cfg.channels), dtype=np.float32) for s in cfg.sources}

    def prepared() -> Iterator[tuple[int, list[int], np.ndarray, list[bool]]]:
        """(first segment, starts, batch, which segments are heard), read in order."""
        for first in batches:
            chunk = starts[first : first + batch_size]
            # Full batches unless ``flexible``, so compiled shapes never change.
            rows = len(chunk) if flexible else batch_size
            batch = np.zeros((rows, segment, cfg.channels), dtype=np.float32)
            for j, start in enumerate(chunk):
                piece = read(start, start + segment)
                batch[j, : len(piece)] = piece
            yield (
                first,
                chunk,
                batch,
                [bool(np.abs(b).max() >= SILENCE) for b in batch[: len(chunk)]],
            )

    def estimate(prepared_batch) -> dict[str, np.ndarray]:
        _, _, batch, heard = prepared_batch
        return predict_views(model, batch, views, together) if any(heard) else {}

    calls = calls_at_once(getattr(model, "parallel_calls", False))
    try:
        for n, ((first, chunk, _, heard), estimates) in enumerate(
            in_order(prepared(), estimate, calls, first_alone=not flexible)
        ):
            grow = min(chunk[-1] + segment, total) - base - len(norm)
            norm = np.concatenate([norm, np.zeros(grow, dtype=np.float32)])
            for s in sums:
                sums[s] = np.concatenate([sums[s], np.zeros((grow, cfg.channels), np.float32)])
            for source in cfg.sources if estimates else ():
                stem = np.asarray(estimates[source])
                for j, start in enumerate(chunk):
                    end = min(start + segment, total)
                    if heard[j]:
                        sums[source][start - base : end - base] += (
                            stem[j, : end - start] * weights[: end - start, None]
                        )
            for j, start in enumerate(chunk):
                end = min(start + segment, total)
                if heard[j]:
                    norm[start - base : end - base] += weights[: end - start]
            # Samples before the next segment's start are final.
            done = starts[first + batch_size] if first + batch_size < len(starts) else total
            k = done - base
            # Weights never vanish, so only samples that silent segments alone cover
            # have no weight; they stay silent.
            yield {
                s: np.divide(
                    v[:k], norm[:k, None], out=np.zeros_like(v[:k]), where=norm[:k, None] > 0
                )
                for s, v in sums.items()
            }
            base, norm = done, norm[k:]
            sums = {s: v[k:] for s, v in sums.items()}
            tick(n + 1)
    finally:
        close()


def _run_plan(
    model: Predictor,
    read: Callable[[int, int], np.ndarray],
    total: int,
    gate: Gate | None | str = MODEL_GATE,
    mask: SoftMask | None | str = MODEL_MASK,
    **kwargs: Any,
):
    """``overlap_add``, or the model's own executor of the plan (``separate_blocks``, same
    arguments) when it has one: the TF Serving client sends whole songs to the SavedModel's
    ``separate_song`` signature, which runs the same plan in its graph. Then ``gate``
    (``keras_sep.gate``): the model folder's own (``MODEL_GATE``, the default), a ``Gate``,
    or None for the stems exactly as the model gives them."""
    own = getattr(model, "separate_blocks", None)
    if own is not None:
        blocks = own(read, total, **kwargs)
    else:
        blocks = overlap_add(model, read, total, **kwargs)
    rate = model.arch_config.sample_rate
    if mask == MODEL_MASK:
        mask = model_mask(model)
    if mask is not None:
        blocks = mask.apply(blocks, rate)
    if gate == MODEL_GATE:
        gate = model_gate(model)
    return blocks if gate is None else gate.apply(blocks, rate)


def _collect(blocks: Iterator[dict[str, np.ndarray]], total: int) -> dict[str, np.ndarray]:
    """Concatenate streamed stem blocks into one array per stem of ``total`` samples."""
    stems: dict[str, np.ndarray] = {}
    at = 0
    for block in blocks:
        for name, value in block.items():
            if name not in stems:
                stems[name] = np.zeros((total, *value.shape[1:]), dtype=np.float32)
            stems[name][at : at + len(value)] = value
        at += len(next(iter(block.values()), ()))
    return stems


def separate(
    model: Predictor,
    mixture: np.ndarray,
    *,
    segment: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int | None = None,
    progress: Progress = False,
    precision: str | None = None,
    tta: int = DEFAULT_TTA,
    gate: Gate | None | str = MODEL_GATE,
    mask: SoftMask | None | str = MODEL_MASK,
) -> dict[str, np.ndarray]:
    """Separate ``mixture`` (time, channels) float32 at the model's sample rate.

    The waveform is cut into segments of ``segment`` samples (default: the model's
    training segment length, rounded up to a length it accepts) overlapping by the
    fraction ``overlap``, run ``batch_size`` at a time (default: ``default_batch_size``),
    and overlap-added with flat-top weights normalised to sum to one, so a model
    returning its input reconstructs the input exactly. Segments of digital silence are
    not run and give silence. ``progress`` shows a progress bar (a string labels it) or,
    if callable, is called with (batches done, batches in all). ``precision``, ``tta``:
    see ``overlap_add``. ``mask``, ``gate``: the model folder's soft mask and level gate
    (the default), a ``keras_sep.mask.SoftMask`` / ``keras_sep.gate.Gate``, or None;
    ``mask=None, gate=None`` gives the stems exactly as the model gives them.
    Returns one (time, channels) float32 array per source, in the model's source order.
    """
    cfg = model.arch_config
    mixture = np.asarray(mixture, dtype=np.float32)
    if mixture.ndim != 2 or mixture.shape[1] != cfg.channels:
        raise ValueError(f"mixture must be (time, {cfg.channels}), got {mixture.shape}")
    blocks = _run_plan(
        model,
        lambda start, stop: mixture[start:stop],
        len(mixture),
        segment=segment,
        overlap=overlap,
        batch_size=batch_size,
        progress=progress,
        precision=precision,
        tta=tta,
        gate=gate,
        mask=mask,
    )
    return _collect(blocks, len(mixture))


class _Window:
    """``read(start, stop)`` over a stream of blocks, keeping only what later reads need."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self.blocks, self.buf, self.base = blocks, None, 0

    def __call__(self, start: int, stop: int) -> np.ndarray:
        pieces = [] if self.buf is None else [self.buf[start - self.base :]]
        have = self.base + len(self.buf) if self.buf is not None else 0
        while have < stop:
            block = next(self.blocks, None)
            if block is None:
                break
            pieces.append(block)
            have += len(block)
        # Copies one segment and one block per block read: small next to a model call.
        self.buf = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        self.base = start
        return self.buf[: stop - start]


def separate_stream(
    model: Predictor, reader: AudioReader, *, pipeline: bool = True, **kwargs: Any
) -> Iterator[dict[str, np.ndarray]]:
    """Separate what ``reader`` decodes, yielding consecutive blocks of every stem.

    Blocks are at the reader's sample rate and channel count (a mono file gives mono
    stems through a stereo model); ``kwargs`` go to ``overlap_add``. Memory stays bounded
    whatever the length: the file is decoded, resampled and separated a block at a time.

    ``pipeline``: decoding and resampling the next blocks, the model on the current
    batch, and resampling back (and whatever the caller does with a block, such as
    writing it) run at once, each stage in its own thread a few blocks ahead of the next
    (``keras_sep.threads.background``). The stems are the same either way: every stage
    does the same arithmetic in the same order. An error in any stage is raised here.
    """
    cfg = model.arch_config
    name, rate, frames = reader.name, reader.rate, reader.frames
    check_length(frames, rate, name)
    mono = reader.channels == 1 and cfg.channels != 1
    down = Resampler(rate, cfg.sample_rate)

    def mixture() -> Iterator[np.ndarray]:
        left = frames
        while left > 0:
            block = reader.read(min(BLOCK_FRAMES, left))
            if len(block) == 0:
                # The decoder ends before the length its header gave: pad, and say so.
                warnings.warn(
                    f"{name} ends after {(frames - left) / rate:.2f} s, before the "
                    f"{frames / rate:.2f} s its header promises; the rest is treated as silence",
                    AudioWarning,
                    stacklevel=2,
                )
                block = np.zeros((left, reader.channels), np.float32)
            check_finite(block, name)
            left -= len(block)
            yield down(match_channels(block, cfg.channels, name), last=left == 0)

    total = -(-frames * down.up // down.down)
    up = {s: Resampler(cfg.sample_rate, rate) for s in cfg.sources}
    written = 0
    decoded = background(mixture()) if pipeline else mixture()
    blocks = _run_plan(model, _Window(decoded), total, **kwargs)
    if pipeline:
        blocks = background(blocks)
    try:
        for last, block in _mark_last(blocks):
            out = {s: up[s](v, last=last) for s, v in block.items()}
            length = min(len(next(iter(out.values()))), frames - written)
            written += length
            yield {
                s: v[:length].mean(axis=1, keepdims=True) if mono else v[:length]
                for s, v in out.items()
            }
    finally:  # stop the stages now (the model's first), not when they are collected
        blocks.close()
        decoded.close()


def _mark_last(items: Iterator) -> Iterator[tuple[bool, Any]]:
    """(is_last, item) for each item of an iterator."""
    previous = next(items, None)
    for item in items:
        yield False, previous
        previous = item
    if previous is not None:
        yield True, previous


@dataclass
class Separation:
    """Stems of one file at its original sample rate and channel count."""

    stems: dict[str, np.ndarray]
    sample_rate: int
    seconds: float


@dataclass
class SeparatedFiles:
    """Stem files written for one song, at its sample rate."""

    files: dict[str, Path]
    sample_rate: int
    seconds: float


def separate_file(
    model: Predictor, path: str | os.PathLike, decoder: str = "auto", **kwargs: Any
) -> Separation:
    """Read an audio file and separate it; stems come back at the file's rate and channels.

    Mono files go through a stereo model as two equal channels and come back mono.
    ``kwargs`` go to ``separate``.
    """
    with open_audio(path, decoder) as reader:
        stems = _collect(separate_stream(model, reader, **kwargs), reader.frames)
    return Separation(stems, reader.rate, reader.frames / reader.rate)


def separate_waveform(
    model: Predictor, audio: np.ndarray, rate: int, name: str = "audio", **kwargs: Any
) -> Separation:
    """``separate`` for (time, channels) audio at any rate and channel count the model takes.

    ``kwargs`` (``segment``, ``overlap``, ``batch_size``, ``progress``, ``precision``,
    ``tta``) go to ``overlap_add``.
    """
    audio = check_audio(audio, rate, name)
    reader = AudioReader.from_array(audio, rate, name)
    stems = _collect(separate_stream(model, reader, **kwargs), len(audio))
    return Separation(stems, rate, len(audio) / rate)


def stem_names(wanted: list[str], two: str | None = None) -> list[str]:
    """The names of the stems ``pick_stems`` gives for these arguments."""
    return [*wanted, f"no_{two}"] if two else list(wanted)


def pick_stems(stems: dict, wanted: list[str], two: str | None = None) -> dict:
    """The stems to write; with ``two``, also ``no_<two>``: the sum of all other sources."""
    picked = {s: stems[s] for s in wanted}
    if two:
        picked[f"no_{two}"] = sum(v for s, v in stems.items() if s != two)
    return picked


def separate_to_folder(
    model: Predictor,
    path: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    stems: list[str] | None = None,
    two_stems: str | None = None,
    fmt: str = "wav",
    bit_depth: str | None = None,
    decoder: str = "auto",
    overwrite: bool = False,
    **kwargs: Any,
) -> SeparatedFiles:
    """Separate a file straight into ``folder/<stem>.<fmt>``, streaming, all or nothing.

    Peak memory does not grow with the song's length. ``stems`` picks sources (default
    all); ``two_stems`` writes that source and ``no_<source>``. Each stem is written under
    a temporary name and published at the end (``keras_sep.files``): other files in
    ``folder`` stay, and a stem file keras-sep did not write is replaced only with
    ``overwrite``.
    """
    wanted = [two_stems] if two_stems else list(stems or model.arch_config.sources)
    names = stem_names(wanted, two_stems)
    with open_audio(path, decoder) as reader:
        channels = reader.channels if reader.channels == 1 else model.arch_config.channels
        with stem_writer(folder, names, reader.rate, channels, fmt, bit_depth, overwrite) as write:
            for block in separate_stream(model, reader, **kwargs):
                write(pick_stems(block, wanted, two_stems))
    files = {name: Path(folder) / f"{name}.{fmt}" for name in names}
    return SeparatedFiles(files, reader.rate, reader.frames / reader.rate)

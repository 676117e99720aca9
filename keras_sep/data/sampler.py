"""Training segments drawn from cached tracks: the paper's augmentation and optional extras.

Both training pipelines (``tf.data`` and the TensorFlow-free ``PyDataset``) draw from a
``SegmentSampler``. Example ``n`` is a pure function of (seed, shard, n): its random
draws come from an RNG keyed by those numbers, so the two pipelines, any number of
worker threads and a resumed run all see the same segments, gains and flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_sep.data.cache import CachedTrack
from keras_sep.data.production import EFFECTS, Production
from keras_sep.data.timbre import TIMBRE_EFFECTS, Alteration
from keras_sep.errors import DataError

# "production" is shorthand for every effect in keras_sep.data.production.EFFECTS, "timbre"
# for every one in keras_sep.data.timbre.TIMBRE_EFFECTS.
AUGMENTATIONS = ("channel_swap", "polarity", "remix", "production", *EFFECTS)
AUGMENTATIONS += ("timbre", *TIMBRE_EFFECTS)
# Redraws allowed when skipping near-silent targets, before accepting a quiet segment.
SILENCE_ATTEMPTS = 10
# Keys validation draws apart from training draws (which use shard counts here).
VALIDATION_KEY = 2**31 - 1


@dataclass(frozen=True)
class Augmentation:
    """Per-example random changes. The paper uses only the per-source gain in [0.7, 1]."""

    gain_min: float = 0.7
    gain_max: float = 1.0
    channel_swap: bool = False  # swap left and right of every source
    polarity: bool = False  # flip the sign of each source independently
    # Probability that an example takes each source from an independent random track
    # and offset (Demucs / Open-Unmix style remixing); 0 keeps the stems of one song.
    remix: float = 0.0
    # Mixing and mastering effects (keras_sep.data.production), or None for dry stems.
    production: Production | None = None
    # Per-stem timbre changes and missing stems (keras_sep.data.timbre), before production.
    alteration: Alteration = Alteration()

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        gain: tuple[float, float] = (0.7, 1.0),
        remix: float = 0.5,
        timbre_probability: dict | None = None,
        missing: dict | None = None,
        **production: Any,
    ) -> Augmentation:
        """The augmentations named in a config; effect names (or ``production`` for all of
        them) build a ``Production`` with the keyword options (see ``Production``), timbre
        effect names (or ``timbre``) and ``missing`` an ``Alteration``."""
        unknown = sorted(set(names) - set(AUGMENTATIONS))
        if unknown:
            raise DataError(f"unknown augmentation(s) {unknown}; valid: {list(AUGMENTATIONS)}")
        if not 0 < gain[0] <= gain[1]:
            raise DataError(f"gain range must satisfy 0 < min <= max, got {gain}")
        effects = EFFECTS if "production" in names else tuple(n for n in names if n in EFFECTS)
        timbre = (
            TIMBRE_EFFECTS if "timbre" in names else tuple(n for n in names if n in TIMBRE_EFFECTS)
        )
        return cls(
            gain_min=gain[0],
            gain_max=gain[1],
            channel_swap="channel_swap" in names,
            polarity="polarity" in names,
            remix=remix if "remix" in names else 0.0,
            production=Production(effects, **production) if effects else None,
            alteration=Alteration(timbre, timbre_probability or {}, missing or {}),
        )


def mix(raw: np.ndarray, factors: np.ndarray, swap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale each source by its factor, optionally swap channels; mixture = their sum.

    ``training.pipeline`` repeats these operations with TensorFlow ops in the same order,
    so both pipelines produce bit-identical batches.
    """
    targets = raw * factors[:, None, None]
    if swap:
        targets = targets[:, :, ::-1]
    mixture = targets[0]
    for target in targets[1:]:
        mixture = mixture + target
    return mixture, targets


class SegmentSampler:
    """Random (mixture, targets) segments of ``segment_length`` samples from ``tracks``."""

    def __init__(
        self,
        tracks: Sequence[CachedTrack],
        sources: Sequence[str],
        segment_length: int,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        silence_threshold_db: float | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if not tracks:
            raise DataError("no training tracks; check the dataset root and split")
        missing = [t.name for t in tracks if set(sources) - set(t.sources)]
        if missing:
            raise DataError(f"tracks {missing[:3]} lack some of the sources {list(sources)}")
        self.tracks = list(tracks)
        self.sources = tuple(sources)
        self.segment_length = int(segment_length)
        self.seed = int(seed)
        self.augmentation = augmentation or Augmentation()
        self.silence_threshold_db = silence_threshold_db
        self.shard_index, self.num_shards = shard
        self.channels = self.tracks[0].sources[self.sources[0]].shape[1]

    def _offset(self, rng: np.random.Generator, track: int) -> int:
        return int(rng.integers(0, max(1, self.tracks[track].length - self.segment_length + 1)))

    def gather(
        self, track_ids: np.ndarray, offsets: np.ndarray, length: int | None = None, plan=None
    ) -> np.ndarray:
        """(sources, length, channels) float32: source k from track_ids[k] at offsets[k].

        ``length`` defaults to the segment length; audio before a track's start (a negative
        offset) and after its end reads as silence. ``plan`` (``Alteration.plan``) changes
        each source's timbre and silences missing ones.
        """
        length = self.segment_length if length is None else length
        out = np.zeros((len(self.sources), length, self.channels), np.float32)
        for k, (track, offset) in enumerate(zip(track_ids, offsets, strict=True)):
            if plan is None:
                self._read(out[k], k, int(track), int(offset))
                continue
            stem = plan[k]
            piece = np.zeros((Alteration.read_length(stem, length), self.channels), np.float32)
            self._read(piece, k, int(track), int(offset))
            out[k] = Alteration.apply(piece, stem, length, self.tracks[int(track)].rate)
        return out

    def _read(self, out: np.ndarray, k: int, track: int, offset: int) -> None:
        """Fill ``out`` with source k of ``track`` from ``offset`` (silence outside it)."""
        start = max(0, -offset)
        piece = self.tracks[track].sources[self.sources[k]][max(0, offset) : offset + len(out)]
        out[start : start + len(piece)] = piece

    def produce(
        self, track_ids: np.ndarray, offsets: np.ndarray, factors: np.ndarray, rng, plan=None
    ) -> np.ndarray:
        """Segment stems at ``offsets`` scaled by ``factors``, through the production chain,
        which reads its context from before the segment."""
        production = self.augmentation.production
        speed, before, total = production.window(rng, self.segment_length)
        window = self.gather(track_ids, np.asarray(offsets) - before, total, plan)
        window *= factors[:, None, None]
        rate = self.tracks[int(track_ids[0])].rate
        return production.process(window, speed, self.segment_length, rng, rate)

    def _quiet(self, raw: np.ndarray) -> bool:
        power = np.mean(np.square(raw, dtype=np.float64), axis=(1, 2))
        return bool(np.any(10 * np.log10(power + 1e-12) < self.silence_threshold_db))

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Example ``n`` before mixing: raw sources, per-source factors (gain x sign), swap."""
        rng = np.random.default_rng([self.seed, self.shard_index, self.num_shards, n])
        aug, k = self.augmentation, len(self.sources)
        for _ in range(SILENCE_ATTEMPTS):
            if aug.remix and rng.random() < aug.remix:
                track_ids = rng.integers(0, len(self.tracks), k)
                offsets = np.array([self._offset(rng, t) for t in track_ids])
            else:
                track = int(rng.integers(0, len(self.tracks)))
                track_ids = np.full(k, track)
                offsets = np.full(k, self._offset(rng, track))
            raw = self.gather(track_ids, offsets)
            if self.silence_threshold_db is None or not self._quiet(raw):
                break
        # Drawn only when configured, so examples without it stay as they were.
        plan = aug.alteration.plan(rng, self.sources) if aug.alteration else None
        factors = rng.uniform(aug.gain_min, aug.gain_max, k).astype(np.float32)
        if aug.polarity:
            factors *= rng.choice(np.array([-1.0, 1.0], np.float32), k)
        swap = bool(aug.channel_swap and rng.random() < 0.5)
        if aug.production is not None and aug.production.applies(rng):
            # Gains, flips and swap are applied before the effects (compressors respond to
            # level), so the produced stems are the targets as they are.
            targets = self.produce(track_ids, offsets, factors, rng, plan)
            if plan is not None:
                targets = Alteration.silence(targets, plan, self.tracks[int(track_ids[0])].rate)
            return (targets[:, :, ::-1] if swap else targets), np.ones(k, np.float32), False
        if plan is not None:
            raw = self.gather(track_ids, offsets, plan=plan)
            raw = Alteration.silence(raw, plan, self.tracks[int(track_ids[0])].rate)
        return raw, factors, swap

    def example(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Example ``n``: mixture (segment, channels) and targets (sources, segment, channels)."""
        return mix(*self.draw(n))

    def batch(self, index: int, batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Batch ``index``: examples index * batch_size ... (index + 1) * batch_size - 1."""
        pairs = [self.example(index * batch_size + j) for j in range(batch_size)]
        mixture = np.stack([p[0] for p in pairs])
        targets = np.stack([p[1] for p in pairs], axis=1)
        return mixture, dict(zip(self.sources, targets, strict=True))

    def validation_plan(self, segments_per_track: int) -> list[tuple[int, int]]:
        """Fixed (track, offset) pairs: evenly spaced segments of every track, no randomness."""
        plan = []
        for t, track in enumerate(self.tracks):
            last = max(0, track.length - self.segment_length)
            count = min(segments_per_track, 1 + last // self.segment_length)
            plan += [(t, int(o)) for o in np.linspace(0, last, count).astype(int)]
        return plan

    def validation_example(self, track: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """The segment at ``offset`` of ``track``; with production, through one fixed draw of
        the chain (keyed by track and offset), so every epoch validates on the same audio."""
        k = len(self.sources)
        ids, offsets, ones = np.full(k, track), np.full(k, offset), np.ones(k, np.float32)
        production = self.augmentation.production
        rng = np.random.default_rng([self.seed, VALIDATION_KEY, track, offset])
        if production is None or not production.applies(rng):
            return mix(self.gather(ids, offsets), ones, False)
        return mix(self.produce(ids, offsets, ones, rng), ones, False)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches for one pass's worth of audio: total track length / (segment x batch)."""
        total = sum(t.length for t in self.tracks)
        return max(1, total // (self.segment_length * batch_size * self.num_shards))

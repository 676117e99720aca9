"""The SavedModel's whole-song signatures: ``keras_sep.separate``'s segment plan, run in the graph.

``separate_song`` takes a song (time, channels) at the model's sample rate and returns one
(time, channels) stem per source; ``separate_wav`` takes a WAV file and returns one WAV
file per source. Both are a second executor of the one segment plan
(``keras_sep.separate.segment_plan``, which ``overlap_add`` executes in NumPy): the same
segments, window and padding, the same test-time augmentation views
(``keras_sep.separate.apply_view``), the same silence rule and full batches, so their
stems equal ``keras_sep.separate``'s. Only core TensorFlow ops (no Python function, no
tensorflow-io), so the stock ``tensorflow_model_server`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

from keras_sep.config import BaseConfig
from keras_sep.errors import UsageError, require
from keras_sep.separate import (
    DEFAULT_OVERLAP,
    DEFAULT_TTA,
    SILENCE,
    apply_view,
    default_batch_size,
    segment_plan,
    tta_views,
)
from keras_sep.serving import BYTES_SUFFIX, SONG_INPUT, SONG_SIGNATURE, WAV_INPUT, WAV_SIGNATURE


@dataclass(frozen=True)
class SongSettings:
    """What the whole-song signatures were built with (recorded in the manifest).

    ``segment`` and ``overlap`` are ``keras_sep.separate.separate``'s arguments of the same
    names (``segment`` already rounded to a length the model accepts); ``tta`` the number
    of test-time augmentation passes; ``batch_size`` the segments per model call.
    """

    segment: int
    overlap: float
    tta: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def song_settings(
    cfg: BaseConfig,
    tta: int = DEFAULT_TTA,
    batch_size: int | None = None,
    segment: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
) -> SongSettings:
    """Checked settings for ``cfg``'s model; a bad value is a ``UsageError``."""
    try:
        tta_views(cfg.channels, tta)
        plan = segment_plan(cfg, segment, overlap)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if batch_size is None:
        batch_size = default_batch_size(cfg)
    if batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    return SongSettings(plan.segment, overlap, tta, batch_size)


def song_function(
    predict: Callable[[Any], dict[str, Any]], cfg: BaseConfig, settings: SongSettings
) -> Callable:
    """``separate_song``: a function of a (time, channels) tensor, ready to trace.

    ``predict`` maps a (batch, segment, channels) float32 tensor to one such tensor per
    source (a Keras model called with ``training=False``).
    """
    tf = require("tensorflow", "the whole-song signatures")
    plan = segment_plan(cfg, settings.segment, settings.overlap)
    views = tta_views(cfg.channels, settings.tta)
    size, segment, channels = settings.batch_size, plan.segment, cfg.channels
    ops = SimpleNamespace(arange=tf.range, minimum=tf.minimum, maximum=tf.maximum)
    window = tf.constant(plan.window)

    def run_batch(batch):
        """``predict_views`` of keras_sep.separate: the mean over the TTA views."""
        sums: dict[str, Any] = {}
        for view in views:
            estimates = predict(apply_view(batch, view))
            for source in cfg.sources:
                y = apply_view(tf.cast(estimates[source], tf.float32), view)
                sums[source] = y if source not in sums else sums[source] + y
        return {source: sums[source] / len(views) for source in cfg.sources}

    def separate_song(audio):
        total, have = tf.shape(audio)[0], tf.shape(audio)[1]
        accepted = "1 (mono)" if channels == 1 else f"1 (mono) or {channels}"
        checks = [
            tf.debugging.assert_positive(
                total, message="audio holds no samples: send [time, channels] with time >= 1"
            ),
            tf.debugging.assert_equal(
                tf.logical_or(tf.equal(have, 1), tf.equal(have, channels)),
                True,
                message=f"audio must be [time, channels] with {accepted} channels",
            ),
        ]
        with tf.control_dependencies(checks):
            audio = tf.debugging.check_numerics(
                audio, "audio contains NaN or infinite samples; fix the input"
            )
            # Mono goes through a stereo model as two equal channels, as in separate_stream.
            x = tf.broadcast_to(audio, [total, channels])
        starts = plan.starts(total, xp=ops)
        padded = plan.padded(total, xp=ops)
        x = tf.pad(x, [[0, padded - total], [0, 0]])
        # Full batches, as overlap_add sends them: filler segments are zeros and unheard.
        count = tf.size(starts)
        slots = -(-count // size) * size
        real = tf.range(slots) < count
        starts = tf.pad(starts, [[0, slots - count]])
        positions = starts[:, None] + tf.range(segment)[None, :]  # (slots, segment)
        segments = tf.gather(x, positions) * tf.cast(real, tf.float32)[:, None, None]
        heard = tf.logical_and(real, tf.reduce_max(tf.abs(segments), axis=[1, 2]) >= SILENCE)
        # One batch at a time (parallel_iterations=1): memory holds one batch's activations.
        estimates = tf.map_fn(
            run_batch,
            tf.reshape(segments, [-1, size, segment, channels]),
            fn_output_signature={
                s: tf.TensorSpec([size, segment, channels], tf.float32) for s in cfg.sources
            },
            parallel_iterations=1,
        )
        # Overlap-add: weighted estimates and weights summed per sample; silent segments
        # add nothing, and samples only they cover stay silent.
        weights = window[None, :] * tf.cast(heard, tf.float32)[:, None]
        index = tf.reshape(positions, [-1, 1])
        norm = tf.scatter_nd(index, tf.reshape(weights, [-1]), [padded])
        mono = tf.logical_and(tf.equal(have, 1), channels != 1)
        stems = {}
        for source in cfg.sources:
            weighted = tf.reshape(estimates[source], [slots, segment, channels])
            weighted = tf.reshape(weighted * weights[:, :, None], [-1, channels])
            sums = tf.scatter_nd(index, weighted, [padded, channels])
            stem = tf.math.divide_no_nan(sums, norm[:, None])[:total]
            # Mono in, mono out: the mean of the two channels, as separate_stream does.
            stems[source] = tf.cond(
                mono,
                lambda stem=stem: tf.reduce_mean(stem, 1, keepdims=True),
                lambda stem=stem: stem,
            )
        return stems

    return separate_song


def wav_function(separate_song: Callable, cfg: BaseConfig) -> Callable:
    """``separate_wav``: WAV bytes in, ``separate_song``'s stems out as WAV bytes.

    ``separate_song`` may be the traced song endpoint, so the graph holds the model once.
    """
    tf = require("tensorflow", "the whole-song signatures")

    def separate_wav(wav):
        audio, rate = tf.audio.decode_wav(wav)
        check = tf.debugging.assert_equal(
            rate,
            cfg.sample_rate,
            message=(
                f"the WAV file must be at the model sample rate, {cfg.sample_rate} Hz (x "
                f"below is the file rate): resample it first (ffmpeg -i IN -ar "
                f"{cfg.sample_rate} OUT.wav)"
            ),
        )
        with tf.control_dependencies([check]):
            stems = separate_song(tf.identity(audio))
        return {s + BYTES_SUFFIX: tf.audio.encode_wav(v, rate) for s, v in stems.items()}

    return separate_wav


def song_signatures(tf: Any) -> dict[str, list]:
    """The input signature of each whole-song endpoint, by name."""
    return {
        SONG_SIGNATURE: [tf.TensorSpec([None, None], tf.float32, name=SONG_INPUT)],
        WAV_SIGNATURE: [tf.TensorSpec([], tf.string, name=WAV_INPUT)],
    }

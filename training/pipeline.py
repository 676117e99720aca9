"""Batches for ``model.fit``: a tf.data pipeline, or a PyDataset where TensorFlow is absent.

Both draw example ``n`` from the same ``SegmentSampler``, so a seed gives identical
batches either way (tests/test_training.py checks it). Examples are indexed globally
across epochs (``fit`` keeps one iterator when ``steps_per_epoch`` is set), so epoch e
sees new segments and a resumed run continues the sequence where it stopped.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_sep.data.sampler import SegmentSampler


def tf_dataset(sampler: SegmentSampler, batch_size: int, start_batch: int, num_batches: int):
    """Training batches ``start_batch ...`` as a ``tf.data.Dataset``.

    Decoding is already done (the cache is memory-mapped), so the map that reads the
    segments runs in parallel and the augmentation is TensorFlow ops on top.
    """
    import tensorflow as tf

    k, length, channels = len(sampler.sources), sampler.segment_length, sampler.channels

    def draw(n):
        raw, factors, swap = sampler.draw(int(n))
        return raw, factors, np.bool_(swap)

    def read(n):
        raw, factors, swap = tf.numpy_function(
            draw, [n], (tf.float32, tf.float32, tf.bool), stateful=False
        )
        raw.set_shape((k, length, channels))
        factors.set_shape((k,))
        swap.set_shape(())
        return raw, factors, swap

    def augment(raw, factors, swap):
        # Same operations, same order as keras_sep.data.sampler.mix: bit-identical batches.
        targets = raw * factors[:, None, None]
        targets = tf.cond(swap, lambda: tf.reverse(targets, axis=[2]), lambda: targets)
        mixture = targets[0]
        for i in range(1, k):
            mixture = mixture + targets[i]
        return mixture, {source: targets[i] for i, source in enumerate(sampler.sources)}

    first = start_batch * batch_size
    dataset = tf.data.Dataset.range(first, first + num_batches * batch_size)
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def tf_validation_dataset(
    sampler: SegmentSampler, batch_size: int, segments_per_track: int, plan: list | None = None
):
    """Fixed validation segments (evenly spaced, no augmentation) as a ``tf.data.Dataset``.

    ``plan``: the (track, offset) pairs to read, if not all of ``sampler.validation_plan``.
    """
    import tensorflow as tf

    if plan is None:
        plan = sampler.validation_plan(segments_per_track)
    plan = np.array(plan, dtype=np.int64)
    k, length, channels = len(sampler.sources), sampler.segment_length, sampler.channels

    def read(pair):
        mixture, targets = tf.numpy_function(
            lambda p: sampler.validation_example(int(p[0]), int(p[1])),
            [pair],
            (tf.float32, tf.float32),
            stateful=False,
        )
        mixture.set_shape((length, channels))
        targets.set_shape((k, length, channels))
        return mixture, {source: targets[i] for i, source in enumerate(sampler.sources)}

    dataset = tf.data.Dataset.from_tensor_slices(plan)
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class TrainBatches(keras.utils.PyDataset):
    """Training batches ``start_batch ...`` without TensorFlow, in worker threads."""

    def __init__(
        self,
        sampler: SegmentSampler,
        batch_size: int,
        start_batch: int,
        num_batches: int,
        workers: int = 2,
    ):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.sampler, self.batch_size = sampler, batch_size
        self.start_batch, self.num_batches_ = start_batch, num_batches

    def __len__(self) -> int:
        return self.num_batches_

    def __getitem__(self, index: int):
        return self.sampler.batch(self.start_batch + index, self.batch_size)


class ValidationBatches(keras.utils.PyDataset):
    """The fixed validation segments without TensorFlow (``plan``: as for tf_validation_dataset)."""

    def __init__(
        self,
        sampler: SegmentSampler,
        batch_size: int,
        segments_per_track: int,
        plan: list | None = None,
    ):
        super().__init__()
        self.sampler, self.batch_size = sampler, batch_size
        self.plan = sampler.validation_plan(segments_per_track) if plan is None else plan

    def __len__(self) -> int:
        return -(-len(self.plan) // self.batch_size)

    def __getitem__(self, index: int):
        pairs = self.plan[index * self.batch_size : (index + 1) * self.batch_size]
        examples = [self.sampler.validation_example(t, o) for t, o in pairs]
        targets = np.stack([e[1] for e in examples], axis=1)
        mixture = np.stack([e[0] for e in examples])
        return mixture, dict(zip(self.sampler.sources, targets, strict=True))

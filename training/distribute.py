"""tf.distribute for train.py: the strategies, each worker's role, and multi-worker fit.

``--strategy mirrored`` is ``tf.distribute.MirroredStrategy`` over the local GPUs.
``--strategy multiworker`` is ``tf.distribute.MultiWorkerMirroredStrategy``: start the same
train.py command on every machine with ``TF_CONFIG`` naming the cluster and that machine's
task (docs/training.md). Every worker draws its own shard of the training examples; the
chief (worker 0) writes the run folder, the others write into ``<out>/worker-<i>`` (their
backup for resuming) and delete it when the run ends.

Keras 3.15's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585),
in two places that ``adapt_for_multiworker`` routes around; see its docstring.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from keras_sep.errors import ConfigError


@dataclass(frozen=True)
class Worker:
    """This process's place in the cluster."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def make_strategy(name: str):
    """The ``tf.distribute`` strategy called ``name``, or None for ``default``.

    Create it before any other TensorFlow work: a multi-worker strategy configures the
    runtime's collective ops.
    """
    if name == "default":
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"--strategy {name} uses tf.distribute and needs --backend tensorflow")
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if not os.environ.get("TF_CONFIG"):
        print(
            "note: --strategy multiworker without TF_CONFIG trains as a single worker",
            file=sys.stderr,
        )
    else:
        check_tf_config(os.environ["TF_CONFIG"])
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_tf_config(text: str) -> None:
    """Fail in one line on a TF_CONFIG that TensorFlow would reject with a traceback."""
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"TF_CONFIG is not valid ({type(e).__name__}: {e}); it must look like "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from None
    if kind not in config["cluster"] or index >= len(config["cluster"][kind]) or not workers:
        raise ConfigError(f"TF_CONFIG's task {task} is not in its cluster {config['cluster']}")


def worker_of(strategy) -> Worker:
    """This process's index among the workers (the chief, if the cluster has one, is 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return Worker()
    spec = resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief", []))
    count = chiefs + len(spec.get("worker", []))
    if resolver.task_type == "chief":
        return Worker(0, count)
    return Worker(chiefs + int(resolver.task_id), count)


def is_multiworker(strategy) -> bool:
    """True when ``strategy`` all-reduces across processes (what trips up Keras's fit)."""
    if strategy is None:
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        worker_of(strategy).count > 1
    )


def adapt_for_multiworker(model, strategy) -> None:
    """Let ``model.fit`` / ``evaluate`` run under a multi-worker strategy (keras-team/keras#20585).

    Keras 3.15's TensorFlow trainer fails there in two places, both measured with two
    workers on localhost and a one-layer model:

    1. ``_maybe_symbolic_build`` all-reduces the first batch with ``strategy.reduce``
       outside ``tf.function`` to get example shapes: "Attempt to convert a value
       (PerReplica...) to a Tensor". The shapes of this worker's own first replica are all
       it needs, so we build from those.
    2. ``reduce_per_replica`` averages the step's logs with ``strategy.reduce("MEAN", v,
       axis=0)``, which fails on the scalar losses ("Invalid reduction dimension 0 for
       input with 0 dimensions"). Our train and test steps hand it each log as a
       one-element vector, whose mean over axis 0 across all replicas is the same scalar.

    Both changes are to this model instance only, and only in multi-worker mode; the
    gradient all-reduce, the optimizer and the data sharding are TensorFlow's own.
    Revisit when the Keras pin moves: tests/test_training.py trains two real workers.
    """
    if not is_multiworker(strategy):
        return
    import tensorflow as tf

    def build_from_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], batch
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def as_vectors(step):
        def wrapped(data):
            return {name: tf.reshape(value, (1,)) for name, value in step(data).items()}

        return wrapped

    model._maybe_symbolic_build = build_from_local_batch
    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)


def shard_datasets(strategy, global_batch: int, make_dataset):
    """A distributed dataset where each worker's input pipeline draws its own shard.

    ``make_dataset(shard, per_replica_batch, local_replicas)`` returns the dataset of one
    input pipeline: ``shard`` is (pipeline index, pipeline count), and each step takes
    ``local_replicas`` batches of ``per_replica_batch`` from it.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ConfigError(
            f"batch size {global_batch} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )

    def dataset_fn(context):
        shard = (context.input_pipeline_id, context.num_input_pipelines)
        local = replicas // context.num_input_pipelines
        return make_dataset(shard, context.get_per_replica_batch_size(global_batch), local)

    return strategy.distribute_datasets_from_function(dataset_fn)

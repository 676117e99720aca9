"""Data-parallel training for train.py: the strategies, each worker's role, and their data.

Under TensorFlow, ``--strategy mirrored`` is ``tf.distribute.MirroredStrategy`` over the
local GPUs and ``--strategy multiworker`` is ``tf.distribute.MultiWorkerMirroredStrategy``:
start the same train.py command on every machine with ``TF_CONFIG`` naming the cluster and
that machine's task (docs/training.md).

Under JAX, both are ``keras.distribution.DataParallel`` over every device: the local ones
(mirrored), or those of every process of a cluster that ``keras.distribution.initialize``
joins (multiworker; the coordinator, process count and process id come from
``--coordinator`` / ``--num-processes`` / ``--process-id`` or Keras's
``KERAS_DISTRIBUTION_*`` variables). PyTorch has no such path through Keras.

Every worker (process) draws its own shard of the training examples; the chief (worker 0)
writes the run folder, the others write into ``<out>/worker-<i>`` (their backup for
resuming) and delete it when the run ends.

Keras 3.15's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585),
in two places that ``adapt_for_multiworker`` routes around; see its docstring.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import astuple, dataclass

from keras_sep.errors import ConfigError


@dataclass(frozen=True)
class Worker:
    """This process's place in the cluster."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


# Keras's own variables for keras.distribution.initialize (its docstring): the job addresses
# (the first is JAX's coordinator), the process count and this process's id.
CLUSTER_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
CLUSTER_FLAGS = ("--coordinator", "--num-processes", "--process-id")


@dataclass(frozen=True)
class Cluster:
    """A multi-process JAX cluster as given: any field may still be missing."""

    coordinator: str | None = None
    processes: int | None = None
    process_id: int | None = None

    @classmethod
    def from_environment(cls, environ=os.environ) -> Cluster:
        """The cluster in Keras's ``KERAS_DISTRIBUTION_*`` variables."""
        addresses, processes, process_id = (environ.get(name) or None for name in CLUSTER_ENV)
        values = []
        for name, value in zip(CLUSTER_ENV[1:], (processes, process_id), strict=True):
            try:
                values.append(None if value is None else int(value))
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
        coordinator = None
        if addresses:
            jobs = addresses.split(",")
            if values[0] is not None and len(jobs) > 1 and len(jobs) != values[0]:
                raise ConfigError(
                    f"{CLUSTER_ENV[0]} lists {len(jobs)} addresses but "
                    f"{CLUSTER_ENV[1]} is {values[0]}"
                )
            coordinator = jobs[0].strip()
        return cls(coordinator, *values)

    def given(self) -> bool:
        return self != Cluster()

    def merged(self, other: Cluster) -> Cluster:
        """These fields, each missing one taken from ``other``."""
        pairs = zip(astuple(self), astuple(other), strict=True)
        return Cluster(*(mine if mine is not None else theirs for mine, theirs in pairs))

    def check(self) -> None:
        """Fail in one line, before any work, on a cluster that cannot start."""
        how = "pass {flag} or set {env} (docs/training.md)"
        for value, flag, env in zip(astuple(self), CLUSTER_FLAGS, CLUSTER_ENV, strict=True):
            if value is None:
                raise ConfigError(
                    f"the JAX cluster has no {flag[2:].replace('-', ' ')}: "
                    + how.format(flag=flag, env=env)
                )
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"the coordinator address must be HOST:PORT (process 0's machine and a free "
                f"port), got {self.coordinator!r}"
            )
        if self.processes < 1:
            raise ConfigError(f"the process count must be at least 1, got {self.processes}")
        if not 0 <= self.process_id < self.processes:
            raise ConfigError(
                f"process id {self.process_id} is out of range for {self.processes} processes "
                f"(0 to {self.processes - 1})"
            )


def make_strategy(name: str, cluster: Cluster = Cluster()):
    """The strategy called ``name`` for the current backend, or None for ``default``.

    A ``tf.distribute`` strategy under TensorFlow, a ``keras.distribution.DataParallel``
    under JAX. ``cluster`` holds the JAX cluster flags (completed from the environment).
    Create it before any other TensorFlow or JAX work: a multi-worker strategy configures
    the runtime's collective ops.
    """
    import keras

    backend = keras.backend.backend()
    if cluster.given() and (backend != "jax" or name != "multiworker"):
        raise ConfigError(
            f"{', '.join(CLUSTER_FLAGS)} describe a JAX cluster: use them with --backend jax "
            "--strategy multiworker (TensorFlow reads TF_CONFIG)"
        )
    if name == "default":
        return None
    if backend == "jax":
        return jax_data_parallel(name, cluster)
    if backend != "tensorflow":
        raise ConfigError(
            f"--strategy {name} needs --backend jax (keras.distribution) or --backend "
            f"tensorflow (tf.distribute); {backend} trains on one device"
        )
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


def jax_data_parallel(name: str, cluster: Cluster):
    """``keras.distribution.DataParallel`` over every device, after joining the cluster."""
    import keras

    if name == "multiworker":
        cluster = cluster.merged(Cluster.from_environment())
        if not cluster.given():
            print(
                "note: --strategy multiworker without a JAX cluster (--coordinator, "
                "--num-processes, --process-id) trains as a single process",
                file=sys.stderr,
            )
        else:
            cluster.check()
            keras.distribution.initialize(
                cluster.coordinator, cluster.processes, cluster.process_id
            )
    # Each process feeds its own shard (train.py), so Keras must not shard the datasets again.
    return keras.distribution.DataParallel(
        devices=keras.distribution.list_devices(), auto_shard_dataset=False
    )


def is_data_parallel(strategy) -> bool:
    """True for our ``keras.distribution`` strategy (JAX), False for tf.distribute or None."""
    if strategy is None:
        return False
    import keras

    return isinstance(strategy, keras.distribution.DataParallel)


def replicas_of(strategy) -> int:
    """How many model replicas share each global batch."""
    if strategy is None:
        return 1
    if is_data_parallel(strategy):
        return strategy.num_model_replicas
    return strategy.num_replicas_in_sync


def fit_scope(strategy):
    """What ``fit`` runs in: a ``keras.distribution`` applies only inside its scope, while a
    tf.distribute model keeps the strategy it was built under."""
    return strategy.scope() if is_data_parallel(strategy) else contextlib.nullcontext()


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
    if is_data_parallel(strategy):
        import jax

        return Worker(jax.process_index(), jax.process_count())
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
    """True when a tf.distribute ``strategy`` all-reduces across processes (what trips up
    Keras's TensorFlow fit)."""
    if strategy is None or is_data_parallel(strategy):
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
    check_batch_split(global_batch, replicas)

    def dataset_fn(context):
        shard = (context.input_pipeline_id, context.num_input_pipelines)
        local = replicas // context.num_input_pipelines
        return make_dataset(shard, context.get_per_replica_batch_size(global_batch), local)

    return strategy.distribute_datasets_from_function(dataset_fn)


def check_batch_split(global_batch: int, replicas: int) -> None:
    """Fail in one line when the global batch cannot be split evenly over the replicas."""
    if global_batch % replicas:
        raise ConfigError(
            f"batch size {global_batch} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )


def validation_share(plan: list, worker: Worker, replicas: int) -> list:
    """This process's part of the validation segments under ``keras.distribution``.

    Every batch must split evenly over the devices, so the plan is cut to a whole number
    of segments per replica (fewer than ``replicas`` are dropped), then into one
    contiguous part per process: equal parts, so every process runs the same steps.
    """
    kept = len(plan) - len(plan) % replicas
    if not kept:
        raise ConfigError(
            f"{len(plan)} validation segments cannot be split over {replicas} replicas; "
            f"raise valid_segments_per_track or add validation songs"
        )
    part = kept // worker.count
    return plan[worker.index * part : (worker.index + 1) * part]


def process_share(global_batch: int, plan: list, worker: Worker, replicas: int):
    """(batch, validation plan) that this process feeds under ``keras.distribution``.

    Each process feeds a 1/count share of every global batch, drawn from its own shard of
    the training examples, and its share of the validation segments (``validation_share``).
    """
    check_batch_split(global_batch, replicas)
    share = validation_share(plan, worker, replicas)
    kept = len(share) * worker.count
    if kept < len(plan) and worker.is_chief:
        print(
            f"note: validating on {kept} of {len(plan)} segments (a whole number per replica)",
            file=sys.stderr,
        )
    return global_batch // worker.count, share

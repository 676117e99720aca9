"""Concurrency for separation: pipeline stages in threads, and a cap on the backend's threads.

``background(items)`` runs an iterator in a thread of its own, a few items ahead of its
consumer, so that decoding, the model and writing overlap instead of taking turns
(``separate.separate_stream``); ``in_order(items, work, depth)`` keeps ``depth`` calls of
``work`` running at once and hands their results back in order (``separate.overlap_add``'s
model calls). NumPy, SciPy, libsndfile and the backends release the GIL while they
compute, so the stages really run at once.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# How far a stage may run ahead of the next: enough to hide one slow item, and memory
# stays bounded (two blocks of audio or two batches of stems per stage).
DEPTH = 2
_END = object()


class _Raised:
    """An exception a stage raised, carried to its consumer's thread."""

    def __init__(self, error: BaseException):
        self.error = error


def background(items: Iterator[T], depth: int = DEPTH) -> Iterator[T]:
    """Yield what ``items`` yields, computed in a thread up to ``depth`` items ahead.

    An exception in ``items`` is raised here, in the consumer's thread, with its
    traceback. When the consumer stops early (an error of its own, or ``close()``), the
    thread stops after the item it is computing and ``items`` is closed in that thread,
    so its ``finally`` blocks run; nothing is left running.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Queue ``item``, waiting for room; False once the consumer has stopped."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as e:  # carried to the consumer and raised there
            put(_Raised(e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="keras-sep stage", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


def in_order(
    items: Iterable[T], work: Callable[[T], R], depth: int, first_alone: bool = True
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, work(item))`` for each item in order, ``depth`` calls running at once.

    ``items`` is consumed in the caller's thread; ``work`` runs in ``depth`` threads,
    except, with ``first_alone``, for the first item, which runs alone in the caller's
    thread (a Keras model builds its predict function on its first call). One call more
    than ``depth`` waits in the queue, so a thread that finishes a call starts the next
    at once instead of waiting for the consumer to take a result (``separate``'s
    consumer adds up and masks the stems between results: the bundled model kept 1.69 of
    2 cores busy without the queued call, 1.84 with it). An exception in ``work`` is
    raised here; when the consumer stops early, the calls already running finish and
    nothing else starts. ``depth`` 1 is a plain loop.
    """
    items = iter(items)
    if first_alone:
        first = next(items, _END)
        if first is _END:
            return
        yield first, work(first)
    if depth <= 1:
        for item in items:
            yield item, work(item)
        return
    with ThreadPoolExecutor(depth, thread_name_prefix="keras-sep call") as pool:
        running: deque = deque()
        try:
            for item in items:
                running.append((item, pool.submit(work, item)))
                if len(running) > depth:
                    done, future = running.popleft()
                    yield done, future.result()
            while running:
                done, future = running.popleft()
                yield done, future.result()
        finally:
            for _, future in running:
                future.cancel()


def usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def limit_threads(threads: int) -> str | None:
    """Cap the Keras backend's compute threads at ``threads``; None when applied, else why not.

    Call before the backend has run anything. TensorFlow: ``threads`` intra-op threads and
    one inter-op thread; torch: ``torch.set_num_threads``; JAX: not applied (XLA sizes
    its CPU thread pool itself when it starts).
    """
    import keras

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already ran something in this process
            return "TensorFlow had already started in this process"
        return None
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        return None
    return f"the {backend} backend sizes its CPU thread pool itself"

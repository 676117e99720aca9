"""Inference precision: float32, or bfloat16 where the device computes it natively.

Under bfloat16 the network body runs Keras's ``mixed_bfloat16`` policy: weights stay
float32 variables (a float32 model folder loads as it is, with no second copy on disk)
and are cast to bfloat16 as each layer runs. The source head, the energy-conservation
difference and the overlap-add stay float32 (``blocks.source_head``, ``separate``).

``auto`` picks bfloat16 only where the device has bfloat16 units: a GPU of compute
capability 8.0 or newer, a TPU, or a CPU with ``avx512_bf16`` / ``amx_bf16`` (x86) or
``bf16`` (Arm). Elsewhere bfloat16 is emulated and slower than float32, so ``auto``
picks float32.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from keras_sep.errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16")
# The Keras dtype policy each precision builds the network under.
# (float16 only for models trained under mixed_float16 and saved as .keras.)
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# /proc/cpuinfo flags of CPUs with bfloat16 dot-product units.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class Device:
    """Where the backend computes, and whether it has bfloat16 units."""

    name: str
    native_bf16: bool
    why: str


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``); empty where unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no flags known, so auto stays float32
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name, as /proc/cpuinfo spells it."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def cpu_device(flags: Iterable[str] | None = None, name: str | None = None) -> Device:
    """The CPU as a ``Device``: native bfloat16 iff it has one of ``BF16_CPU_FLAGS``."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    name = name or cpu_name()
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    if found:
        return Device(name, True, f"{name} has {', '.join(found)}")
    return Device(
        name, False, f"{name} has no bfloat16 units (none of {', '.join(BF16_CPU_FLAGS)})"
    )


def _gpu_device(name: str, capability: tuple[int, int]) -> Device:
    native = capability >= (8, 0)
    cc = f"compute capability {capability[0]}.{capability[1]}"
    return Device(name, native, f"{name}, {cc} ({'>=' if native else '<'} 8.0)")


def accelerator() -> Device | None:
    """The GPU / TPU the Keras backend computes on, or None when it runs on the CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return _gpu_device(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "tpu":
            return Device(device.device_kind, True, f"{device.device_kind} (TPU)")
        if device.platform != "gpu":
            return None
        major, minor = str(getattr(device, "compute_capability", "8.0")).split(".")
        return _gpu_device(device.device_kind, (int(major), int(minor)))
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return _gpu_device(details.get("device_name", "GPU"), details.get("compute_capability", (8, 0)))


@functools.cache
def device() -> Device:
    """The device the Keras backend computes on (its accelerator, else the CPU)."""
    return accelerator() or cpu_device()


@functools.cache
def backend_bf16_error() -> str | None:
    """Why this backend cannot run a bfloat16 convolution here; None when it can."""
    import keras
    import numpy as np

    x = keras.ops.convert_to_tensor(np.ones((1, 8, 2)), dtype="bfloat16")
    kernel = keras.ops.convert_to_tensor(np.ones((3, 2, 2)), dtype="bfloat16")
    try:
        keras.ops.convert_to_numpy(keras.ops.conv(x, kernel, padding="same", dilation_rate=2))
    except Exception as e:  # each backend raises its own type for a missing kernel
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def choose(precision: str, dev: Device | None = None) -> tuple[str, str]:
    """(``"float32"`` or ``"bfloat16"``, why) for a ``precision`` of ``PRECISIONS``.

    Raises ``ConfigError`` for an unknown name, or for bfloat16 on a backend that
    cannot run it here.
    """
    import keras

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    if precision == "float32":
        return "float32", "asked for"
    dev = dev or device()
    if precision == "auto" and not dev.native_bf16:
        return "float32", f"auto: {dev.why}"
    error = backend_bf16_error()
    if precision == "auto":
        if error:
            return "float32", f"auto: {keras.backend.backend()} cannot run bfloat16 here"
        return "bfloat16", f"auto: {dev.why}"
    if error:
        raise ConfigError(
            f"the {keras.backend.backend()} backend cannot run bfloat16 on {dev.name} "
            f"({error}); use --precision float32 or another backend"
        )
    if not dev.native_bf16:
        return "bfloat16", f"asked for; slower than float32 here: {dev.why}"
    return "bfloat16", "asked for"


_announced: set[tuple[str, str]] = set()


def resolve(precision: str) -> str:
    """``choose``'s precision; the first ``auto`` or emulated choice is printed to stderr."""
    chosen, why = choose(precision)
    if why != "asked for" and (chosen, why) not in _announced:
        _announced.add((chosen, why))
        print(f"precision: {chosen} ({why})", file=sys.stderr)
    return chosen


def model_precision(model) -> str:
    """``"bfloat16"`` if ``model``'s body computes in bfloat16, else ``"float32"``."""
    return getattr(model, "precision", "float32")


@contextlib.contextmanager
def policy_scope(precision: str) -> Iterator[None]:
    """Layers created inside use ``precision``'s dtype policy (unless they name their own)."""
    import keras

    if precision not in POLICIES:
        raise ConfigError(f"unknown precision {precision!r}; valid: {list(POLICIES)}")
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def describe_machine() -> str:
    """One line for benchmark output: the CPU and its flags, the device, backend and load."""
    import os

    import keras

    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", *BF16_CPU_FLAGS) if f in flags]
    dev = device()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"CPU {cpu_name()} ({os.cpu_count()} threads; flags: {' '.join(shown) or '-'}), "
        f"device {dev.name} (bfloat16 units: {'yes' if dev.native_bf16 else 'no'}), "
        f"Keras {keras.__version__} on {keras.backend.backend()}, load average {load}"
    )


def add_argument(parser, default: str = "auto") -> None:
    """The ``--precision`` option, shared by ``keras-sep separate`` and ``evaluate``."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="compute precision: auto picks bfloat16 where the CPU or GPU has bfloat16 units "
        "(avx512_bf16 / amx_bf16, compute capability >= 8.0), else float32 "
        "(default: %(default)s)",
    )

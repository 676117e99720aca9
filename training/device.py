"""Where training runs: the device the Keras backend computes on, and what a CPU costs.

train.py prints this at start and records it in the run folder, because a GPU machine
with a CPU-only install (or no CUDA libraries) otherwise trains on the CPU silently.
"""

from __future__ import annotations

# Seconds per training step (batch 16, 16384-sample segments) of the paper-size dilated
# models on a 2-core CPU under TensorFlow: docs/performance.md, benchmarks/training_speed.py.
CPU_STEP_SECONDS = {"dilated": 80.6, "dilated_dense": 196.5}
# One MUSDB18 epoch (86 training songs) at batch 16.
MUSDB_STEPS = 1700
# The extra that brings each backend's GPU build (pyproject.toml, docs/training.md).
GPU_EXTRAS = {"tensorflow": "cuda", "jax": "jax-cuda", "torch": "torch"}


def _names(names: list[str]) -> str:
    """``GPU name``, or ``2 x GPU name`` for several identical devices."""
    distinct = sorted(set(names))
    if len(distinct) == 1 and len(names) > 1:
        return f"{len(names)} x {distinct[0]}"
    return ", ".join(distinct)


def training_device(backend: str) -> str:
    """The accelerator ``backend`` trains on (its name), or ``"CPU"``."""
    if backend == "jax":
        import jax

        devices = [d for d in jax.devices() if d.platform != "cpu"]
        return _names([d.device_kind for d in devices]) if devices else "CPU"
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return "CPU"
        return _names([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    return _names([d.get("device_name", g.name) for d, g in zip(details, gpus, strict=True)])


def cpu_cost_note(architecture: str, preset: str, backend: str) -> str | None:
    """One line on what a paper-size dilated model costs per step on a CPU, and the GPU path."""
    seconds = CPU_STEP_SECONDS.get(architecture)
    if seconds is None or preset != "paper":
        return None
    hours = seconds * MUSDB_STEPS / 3600
    gpu = f'pip install "keras-sep[{GPU_EXTRAS[backend]}]"'
    if backend != "jax":
        gpu += ', or pip install "keras-sep[jax-cuda]" and --backend jax'
    return (
        f"note: training the paper-size {architecture} on the CPU: about {seconds:.0f} s a step "
        f"at batch 16 on a 2-core CPU ({hours:.0f} h a MUSDB18 epoch, docs/performance.md); "
        f"on an NVIDIA GPU, {gpu} (docs/training.md)"
    )

"""Custom layers, written with ``keras.ops`` only so they run on every Keras backend.

``DilatedConv1D`` is the one convolution every model uses; ``DilatedConv1DTranspose`` is its
stride-1 transposed twin. A stride-1 transposed convolution is an ordinary convolution with
the kernel flipped in time, its channel axes swapped and the 'same' padding mirrored, so
both compute through ``dilated_conv`` and export anywhere a convolution does (TFLite has no
dilated transposed convolution).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from keras_sep.config import CONV_IMPLS
from keras_sep.precision import accelerator


def same_padding(kernel_size: int, dilation: int, transpose: bool = False) -> tuple[int, int]:
    """(left, right) zero padding that keeps the length, as Keras 'same' does.

    Keras puts the odd sample on the right; the transposed convolution is the adjoint
    of that convolution, so its padding is mirrored.
    """
    total = (kernel_size - 1) * dilation
    small, big = total // 2, total - total // 2
    return (big, small) if transpose else (small, big)


@functools.cache
def on_accelerator() -> bool:
    """Whether the Keras backend computes on a GPU or TPU (not the CPU)."""
    return accelerator() is not None


# On the CPU, ``auto`` folds layers (``_fold_conv``) from this dilation up, per backend
# (on another Keras backend, unmeasured, never): there the fold was faster than each
# backend's dilated convolution, and below it under TensorFlow and JAX no faster
# (docs/performance.md, "What auto picks").
FOLD_FROM = {"tensorflow": 64, "jax": 64, "torch": 2}


def auto_impl(backend: str, accelerated: bool, dilation: int, spectral: bool = False) -> str:
    """The formulation ``auto`` picks for one layer: the fastest measured there.

    On CPUs, a layer that computes in float32 where the spectral convolution fits and is
    predicted to pay (``spectral``: ``spectral_fits`` and ``spectral_pays``) runs through
    short Fourier transforms (``_spectral_conv``): the paper DDU's forward 1.3 to 1.6-fold
    faster on every backend. Other layers: measured on an H100/H200 (docs/performance.md),
    under JAX space-to-batch made the paper DDU training step 3x faster than plain Keras
    layers; under PyTorch the plain Keras layers were fastest (our flipped-kernel
    convolution 25% slower, space-to-batch 2x slower), so torch computes exactly as
    ``keras.layers.Conv1D`` / ``Conv1DTranspose`` do on GPUs. On CPUs "fold" computes a
    dilated layer as an undilated 2-D convolution down rows of ``dilation`` samples
    (``_fold_conv``), from ``FOLD_FROM`` up: the paper DDU's forward 14 to 31% faster on
    every backend; other layers run natively (plain Keras under torch), which also runs on
    TensorFlow, whose CPU kernel refuses dilated transposed convolutions.
    """
    if not accelerated and spectral:
        return "spectral"
    if not accelerated and dilation >= FOLD_FROM.get(backend, dilation + 1):
        return "fold"
    if backend == "torch":
        return "keras"
    if backend == "jax" and accelerated and dilation > 1:
        return "phase"
    return "native"


def resolve_impl(impl: str, dilation: int, spectral: bool = False) -> str:
    """The formulation ``impl`` stands for on this backend and device.

    "native", "phase", "fold", "spectral" or "keras" (what the plain Keras layers call);
    "phase" and "fold" only where the layer is dilated, since the formulations coincide
    otherwise. ``spectral`` is ``auto_impl``'s.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv impl must be one of {list(CONV_IMPLS)}, got {impl!r}")
    if impl == "auto":
        impl = auto_impl(keras.backend.backend(), on_accelerator(), dilation, spectral)
    return "native" if impl in ("phase", "fold") and dilation == 1 else impl


def dilated_conv(x, kernel, dilation: int, padding: tuple[int, int], impl: str = "native"):
    """Stride-1 convolution of ``x`` (batch, time, in) with ``kernel`` (k, in, out).

    ``padding`` zeros are added on the left and right of the time axis first ("keras"
    computes as "native", which is what ``keras.layers.Conv1D`` calls). With
    ``impl="phase"`` the dilated convolution runs as an undilated one over the
    ``dilation`` interleaved phases of the signal (space-to-batch); with ``impl="fold"``
    the signal is folded into rows of ``dilation`` samples for an undilated 2-D
    convolution (``_fold_conv``) wherever the length is known and whole rows and the
    padding is 'same' of an odd kernel, and runs natively elsewhere. The result is the
    same.
    """
    left, right = padding
    if impl == "phase" and dilation > 1:
        return _phase_conv(x, kernel, dilation, left, right)
    if impl == "spectral" and spectral_fits(x.shape[1], kernel.shape[0], dilation, padding):
        return _spectral_conv(x, kernel, dilation)
    if impl in ("fold", "spectral") and foldable(x.shape[1], kernel.shape[0], dilation, padding):
        return _fold_conv(x, kernel, dilation)
    if (left, right) == same_padding(kernel.shape[0], dilation):
        # Keras's own 'same' (every forward conv, odd-kernel transposed ones): no copy.
        padding = "same"
    else:
        x = ops.pad(x, [[0, 0], [left, right], [0, 0]])
        padding = "valid"
    return ops.conv(x, kernel, padding=padding, dilation_rate=dilation, data_format="channels_last")


def foldable(length: int | None, k: int, d: int, padding: tuple[int, int]) -> bool:
    """Whether ``_fold_conv`` computes this convolution: a dilated one over a known
    length of whole rows of ``d`` samples, with an odd kernel padded 'same' (whole rows
    either side); ``length`` is None when a graph is traced for any length."""
    if not length or d < 2:
        return False
    return length % d == 0 and k % 2 == 1 and padding == ((k - 1) // 2 * d,) * 2


def _fold_conv(x, kernel, d: int):
    """The dilated 'same' convolution as an undilated 2-D one down rows of ``d`` samples.

    Folding the signal (batch, n * d, in) into (batch, n, d, in) is a reshape, not a copy:
    tap j then reads j rows further down the same column, so a (k, 1) kernel without
    dilation, padded by whole rows, computes the same sums. oneDNN computes it faster than
    the dilated 1-D convolution from about d = 64 on (``FOLD_FROM``), and skips on its own
    what the widest dilations' taps read of the padding; unlike space-to-batch
    (``_phase_conv``) it needs no transpose.
    """
    length, channels = x.shape[1], x.shape[2]
    rows = ops.reshape(x, (-1, length // d, d, channels))
    y = ops.conv(rows, kernel[:, None], padding="same", data_format="channels_last")
    return ops.reshape(y, (-1, length, kernel.shape[-1]))


# Frames of the spectral convolution: at most ``FRAME`` rows, a power of two, so each
# frame yields ``frame - k + 1`` rows of output (overlap-save).
FRAME = 64
# What a spectral layer costs beyond its multiply-adds, per channel (in or out) of each
# output sample, counted in multiply-adds: its copies (the frames, two transposes, the
# crop). One-layer timings of the paper DDU's layers fit about 200; in the whole DDU,
# every layer that fits was as fast spectrally or faster, so less (docs/performance.md).
SPECTRAL_COPY_COST = 100


def spectral_frame(rows: int, k: int) -> tuple[int, int]:
    """(frame, hop) for columns of ``rows`` rows: one frame of a power of two for short
    columns, else frames of ``FRAME`` rows; the hop is at least half the frame."""
    frame = min(FRAME, 1 << (rows + k - 2).bit_length())
    return frame, frame - k + 1


def spectral_fits(length: int | None, k: int, d: int, padding: tuple[int, int]) -> bool:
    """Whether ``_spectral_conv`` computes this convolution: a known length of whole rows
    of ``d`` samples (``d = 1``: any), at least ``k`` of them, and an odd kernel of 3 taps
    or more padded 'same'."""
    if not length or k < 3 or k % 2 == 0 or padding != ((k - 1) // 2 * d,) * 2:
        return False
    return length % d == 0 and length // d >= k


def spectral_pays(length: int, k: int, d: int, channels: int, filters: int) -> bool:
    """Whether the spectral convolution is predicted to be faster than the taps for a
    layer that ``spectral_fits``: its multiply-adds per output sample (the frames'
    transforms, one channel mix per frequency, the inverse) plus ``SPECTRAL_COPY_COST``
    per channel, against the taps' multiply-adds, less those that read only padding
    (which oneDNN's folded convolution skips). Wide layers pay (most of the paper DDU's
    kernel-15 layers, 45 to 375 channels: 1.3 to 2-fold faster each); narrow ones do not
    (the bundled Wave-U-Net's first levels, 10 to 40 channels)."""
    rows = length // d
    frame, hop = spectral_frame(rows, k)
    bins = frame // 2 + 1
    per_frame = 2 * bins * (frame * channels + 2 * channels * filters + hop * filters)
    spectral = -(-rows // hop) * per_frame / rows + SPECTRAL_COPY_COST * (channels + filters)
    c = (k - 1) // 2
    taps = k * channels * filters * (1 - c * (c + 1) / (k * rows))
    return spectral < taps


@functools.cache
def _spectral_bases(frame: int, hop: int, k: int):
    """The real DFT of a frame (2F x frame: cosines, then minus sines), the kernel's
    conjugate spectrum from its taps (2F x k) and the inverse DFT of the first ``hop``
    samples (hop x 2F), F = frame / 2 + 1 frequencies, in float64 for the caller to cast."""
    f = np.arange(frame // 2 + 1)
    angle = 2 * np.pi * np.outer(f, np.arange(frame)) / frame
    forward = np.concatenate([np.cos(angle), -np.sin(angle)])
    taps = np.concatenate([np.cos(angle[:, :k]), np.sin(angle[:, :k])])
    weight = np.where((f == 0) | (2 * f == frame), 1.0, 2.0) / frame
    angle = 2 * np.pi * np.outer(np.arange(hop), f) / frame
    inverse = np.concatenate([np.cos(angle) * weight, -np.sin(angle) * weight], axis=1)
    return forward, taps, inverse


def _spectral_conv(x, kernel, d: int):
    """The 'same' convolution through the discrete Fourier transform of short frames.

    Folded into rows of ``d`` samples as ``_fold_conv`` does, each column is cut into
    frames of ``FRAME`` rows that overlap by ``k - 1``; in a frame's spectrum the
    convolution mixes the channels once per frequency instead of once per tap, so a frame
    of 64 rows costs 4 x 33 channel mixes for its 50 rows of output where the taps cost
    15 x 50 (kernel 15): the layer's multiply-adds fall about 4-fold. Every step is a
    matrix product (the transforms too, for frames this short), so it runs at the
    machine's matrix rate on every backend; the result is the same sums up to float
    rounding (within 2e-5 of the taps for unit-scale signals and 300 channels, measured).
    """
    length, channels = x.shape[1], x.shape[2]
    k, _, filters = kernel.shape
    rows = length // d
    frame, hop = spectral_frame(rows, k)
    frames = -(-rows // hop)
    bins = frame // 2 + 1
    forward, taps, inverse = (
        ops.convert_to_tensor(m, dtype=x.dtype) for m in _spectral_bases(frame, hop, k)
    )
    # The kernel's spectrum as one (2 in, 2 out) real matrix per frequency: [re, im] of
    # the frame's spectrum times it gives [re, im] of the output's.
    spectrum = ops.reshape(
        ops.matmul(taps, ops.reshape(kernel, (k, -1))), (2, bins, channels, filters)
    )
    re, im = spectrum[0], spectrum[1]
    mix = ops.concatenate(
        [ops.concatenate([re, im], axis=2), ops.concatenate([-im, re], axis=2)], axis=1
    )
    # Blocks of ``hop`` rows, padded 'same' and to whole blocks; frame i is block i and
    # the first ``frame - hop`` rows of block i + 1.
    x = ops.reshape(x, (-1, rows, d * channels))
    centre = (k - 1) // 2
    x = ops.pad(x, [[0, 0], [centre, (frames + 1) * hop - rows - centre], [0, 0]])
    blocks = ops.reshape(x, (-1, frames + 1, hop, d * channels))
    x = ops.concatenate([blocks[:, :-1], blocks[:, 1:, : frame - hop]], axis=2)
    x = ops.matmul(forward, ops.reshape(x, (-1, frame, d * channels)))  # (B nb, 2F, d in)
    x = ops.reshape(x, (-1, 2, bins, d, channels))
    x = ops.reshape(ops.transpose(x, (2, 0, 3, 1, 4)), (bins, -1, 2 * channels))
    y = ops.matmul(x, mix)  # (F, B nb d, 2 out)
    y = ops.reshape(y, (bins, -1, d, 2, filters))
    y = ops.reshape(ops.transpose(y, (1, 3, 0, 2, 4)), (-1, 2 * bins, d * filters))
    y = ops.matmul(inverse, y)  # (B nb, hop, d out)
    y = ops.reshape(y, (-1, frames * hop, d, filters))[:, :rows]
    return ops.reshape(y, (-1, length, filters))


def _phase_conv(x, kernel, d: int, left: int, right: int):
    batch, length, channels = ops.shape(x)
    k, _, filters = kernel.shape
    n = (length + d - 1) // d  # output samples per phase
    # Pad so the padded length is a whole number of phases: (n + k - 1) * d.
    x = ops.pad(x, [[0, 0], [left, right + n * d - length], [0, 0]])
    m = n + k - 1
    x = ops.reshape(x, (batch, m, d, channels))
    x = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (batch * d, m, channels))
    y = ops.conv(x, kernel, padding="valid", data_format="channels_last")
    y = ops.transpose(ops.reshape(y, (batch, d, n, filters)), (0, 2, 1, 3))
    return ops.reshape(y, (batch, n * d, filters))[:, :length]


@keras.saving.register_keras_serializable(package="keras_sep")
class DilatedConv1D(keras.layers.Layer):
    """Conv1D with stride 1, 'same' padding and a dilation rate.

    Weights are named and shaped like ``keras.layers.Conv1D``'s (kernel: k x in x out),
    so they can be copied either way. ``impl`` picks the formulation: "native",
    "phase" (space-to-batch), "fold" (rows of d samples), "spectral" (short Fourier
    transforms of those rows), "keras" (the plain Keras layers' computation) or "auto" (per
    backend, device, precision and layer: ``auto_impl``); all give the same result.
    """

    transpose = False

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        dilation_rate: int = 1,
        activation=None,
        impl: str = "auto",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.activation = keras.activations.get(activation)
        resolve_impl(impl, self.dilation_rate)  # validates the name
        self.impl = impl
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        k = self.kernel_size
        shape = (k, self.filters, in_channels) if self.transpose else (k, in_channels, self.filters)
        self.kernel = self.add_weight(
            name="kernel", shape=shape, initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.filters,), initializer=self.bias_initializer
        )

    def call(self, inputs):
        k, d, length = self.kernel_size, self.dilation_rate, inputs.shape[1]
        padding = same_padding(k, d, self.transpose)
        spectral = (  # only ``auto`` weighs it
            self.impl == "auto"
            and keras.backend.standardize_dtype(inputs.dtype) == "float32"
            and spectral_fits(length, k, d, padding)
            and spectral_pays(length, k, d, inputs.shape[-1], self.filters)
        )
        impl = resolve_impl(self.impl, d, spectral)
        kernel = self.kernel
        if self.transpose and impl == "keras":
            # keras.layers.Conv1DTranspose's own computation (the fastest under PyTorch).
            y = ops.conv_transpose(
                inputs, kernel, 1, "same", dilation_rate=d, data_format="channels_last"
            )
        else:
            if self.transpose:
                kernel = ops.transpose(ops.flip(kernel, axis=0), (0, 2, 1))
            y = dilated_conv(inputs, kernel, d, padding, impl)
        y = ops.add(y, self.bias)
        return self.activation(y) if self.activation is not None else y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "activation": keras.activations.serialize(self.activation),
            "impl": self.impl,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_sep")
class DilatedConv1DTranspose(DilatedConv1D):
    """Conv1DTranspose with stride 1, 'same' padding and a dilation rate.

    Same function and weight layout (kernel: k x out x in) as
    ``keras.layers.Conv1DTranspose``, computed as a convolution.
    """

    transpose = True


@keras.saving.register_keras_serializable(package="keras_sep")
class Decimate1D(keras.layers.Layer):
    """Keep every second time step (Wave-U-Net's downsampling)."""

    def call(self, inputs):
        return inputs[:, ::2, :]

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        return (input_shape[0], None if length is None else (length + 1) // 2, input_shape[2])


@keras.saving.register_keras_serializable(package="keras_sep")
class LinearUpsample1D(keras.layers.Layer):
    """Double the time resolution by linear interpolation (Wave-U-Net's upsampling).

    Output 2t is input t, output 2t+1 the mean of inputs t and t+1 (the last
    sample repeats at the edge), so the length is exactly doubled.
    """

    def call(self, inputs):
        shape = ops.shape(inputs)
        following = ops.concatenate([inputs[:, 1:], inputs[:, -1:]], axis=1)
        between = (inputs + following) * 0.5
        interleaved = ops.stack([inputs, between], axis=2)
        return ops.reshape(interleaved, (shape[0], shape[1] * 2, shape[2]))

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        return (input_shape[0], None if length is None else length * 2, input_shape[2])

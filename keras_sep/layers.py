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


def auto_impl(backend: str, accelerated: bool, dilation: int) -> str:
    """The formulation ``auto`` picks for one layer: the fastest measured there.

    Measured on an H100/H200 (docs/performance.md): under JAX, space-to-batch made the
    paper DDU training step 3x faster than plain Keras layers; under PyTorch the plain
    Keras layers were fastest (our flipped-kernel convolution 25% slower, space-to-batch 2x
    slower), so torch computes exactly as ``keras.layers.Conv1D`` / ``Conv1DTranspose``
    do on GPUs. On CPUs "fold" computes a dilated layer as an undilated 2-D convolution
    down rows of ``dilation`` samples (``_fold_conv``), from ``FOLD_FROM`` up: the paper
    DDU's forward 14 to 31% faster on every backend; other layers run natively (plain
    Keras under torch), which also runs on TensorFlow, whose CPU kernel refuses dilated
    transposed convolutions.
    """
    if not accelerated and dilation >= FOLD_FROM.get(backend, dilation + 1):
        return "fold"
    if backend == "torch":
        return "keras"
    if backend == "jax" and accelerated and dilation > 1:
        return "phase"
    return "native"


def resolve_impl(impl: str, dilation: int) -> str:
    """The formulation ``impl`` stands for on this backend and device.

    "native", "phase", "fold" or "keras" (what the plain Keras layers call); "phase" and
    "fold" only where the layer is dilated, since the formulations coincide otherwise.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv impl must be one of {list(CONV_IMPLS)}, got {impl!r}")
    if impl == "auto":
        impl = auto_impl(keras.backend.backend(), on_accelerator(), dilation)
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
    if impl == "fold" and foldable(x.shape[1], kernel.shape[0], dilation, padding):
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
    "phase" (space-to-batch), "keras" (the plain Keras layers' computation) or "auto" (per
    backend, device and layer: ``auto_impl``); all give the same result.
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
        impl = resolve_impl(self.impl, self.dilation_rate)
        kernel = self.kernel
        if self.transpose and impl == "keras":
            # keras.layers.Conv1DTranspose's own computation (the fastest under PyTorch).
            y = ops.conv_transpose(
                inputs,
                kernel,
                1,
                "same",
                dilation_rate=self.dilation_rate,
                data_format="channels_last",
            )
        else:
            if self.transpose:
                kernel = ops.transpose(ops.flip(kernel, axis=0), (0, 2, 1))
            padding = same_padding(self.kernel_size, self.dilation_rate, self.transpose)
            y = dilated_conv(inputs, kernel, self.dilation_rate, padding, impl)
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

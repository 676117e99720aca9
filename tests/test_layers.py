"""Our convolution layers compute exactly what Keras's Conv1D / Conv1DTranspose compute.

Every formulation ("native" dilated conv, "phase" space-to-batch, "taps" one product per
tap inside the signal, "keras" the plain layers' own computation), odd and even kernels,
lengths that are not a multiple of the dilation.
Runs on every backend.
"""

import keras
import numpy as np
import pytest

from keras_sep.layers import (
    Decimate1D,
    DilatedConv1D,
    DilatedConv1DTranspose,
    LinearUpsample1D,
    auto_impl,
    inside_share,
    on_accelerator,
    resolve_impl,
    same_padding,
)

BACKEND = keras.backend.backend()
# (kernel, dilation, length): odd and even kernels, lengths below the dilation, not a
# multiple of it, and a single sample.
CASES = [
    (1, 1, 7),
    (2, 1, 101),
    (2, 3, 7),
    (4, 8, 1),
    (5, 3, 101),
    (5, 8, 13),
    (15, 8, 64),
    (15, 2, 3),
]

IMPLS = ["native", "phase", "taps", "keras"]
# TF's CPU kernel refuses dilated transposed convolutions ("Current CPU implementations do
# not yet support dilation rates larger than 1"): the reason this layer exists. So the
# plain layers' own computation is compared there only where it runs.
TRANSPOSE_CASES = [
    (k, d, t, impl)
    for k, d, t in CASES
    for impl in IMPLS
    if not (impl == "keras" and d > 1 and BACKEND == "tensorflow" and not on_accelerator())
]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def conv_transpose_reference(x, kernel, bias, dilation):
    """Stride-1 'same' transposed convolution by its definition: scatter, then crop.

    Every input sample t adds kernel[j] at output t + j*d of the full result; 'same'
    keeps the window that starts at the floor half of the (k-1)*d extra samples (the
    left padding of the forward convolution it is the adjoint of).
    """
    batch, length, _ = x.shape
    k = kernel.shape[0]
    full = np.zeros((batch, length + (k - 1) * dilation, kernel.shape[1]), np.float64)
    for j in range(k):
        full[:, j * dilation : j * dilation + length] += x @ kernel[j].T
    start = same_padding(k, dilation)[0]
    return full[:, start : start + length] + bias


def copy_of(reference, ours_cls, x, **kwargs):
    ours = ours_cls(
        reference.filters, reference.kernel_size[0], reference.dilation_rate[0], **kwargs
    )
    ours.build(x.shape)
    ours.set_weights(reference.get_weights())
    return ours


def formulations(impl: str) -> list[tuple[float, float]]:
    """(TAPS_BELOW, TAP_INSIDE) to run ``impl`` at: for "taps", as chosen, every dilated
    layer tap by tap with the inner taps native, and every tap a product."""
    return [(0.6, 0.5), (1.01, 0.5), (1.01, 1.01)] if impl == "taps" else [(0.6, 0.5)]


def run_as(monkeypatch, below: float, inside: float) -> None:
    monkeypatch.setattr("keras_sep.layers.TAPS_BELOW", below)
    monkeypatch.setattr("keras_sep.layers.TAP_INSIDE", inside)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k,d,t", CASES)
def test_conv_matches_keras_conv1d(k, d, t, impl, monkeypatch):
    x = np.random.default_rng(k * 100 + d + t).standard_normal((2, t, 3)).astype("float32")
    reference = keras.layers.Conv1D(4, k, padding="same", dilation_rate=d)
    expected = numpy(reference(x))
    ours = copy_of(reference, DilatedConv1D, x, impl=impl)
    for below, inside in formulations(impl):
        run_as(monkeypatch, below, inside)
        np.testing.assert_allclose(numpy(ours(x)), expected, atol=1e-5)


@pytest.mark.parametrize("k,d,t,impl", TRANSPOSE_CASES)
def test_transpose_matches_keras_conv1d_transpose(k, d, t, impl, monkeypatch):
    x = np.random.default_rng(k * 100 + d + t).standard_normal((2, t, 3)).astype("float32")
    reference = keras.layers.Conv1DTranspose(4, k, padding="same", dilation_rate=d)
    reference.build(x.shape)
    kernel, bias = reference.get_weights()
    if BACKEND == "tensorflow" and d > 1:
        # See TRANSPOSE_CASES: compare with the definition instead.
        expected = conv_transpose_reference(x, kernel, bias, d)
    else:
        expected = numpy(reference(x))
        np.testing.assert_allclose(
            conv_transpose_reference(x, kernel, bias, d), expected, atol=1e-5
        )
    ours = copy_of(reference, DilatedConv1DTranspose, x, impl=impl)
    for below, inside in formulations(impl):
        run_as(monkeypatch, below, inside)
        np.testing.assert_allclose(numpy(ours(x)), expected, atol=1e-5)


def test_activation_and_serialization():
    layer = DilatedConv1DTranspose(3, 5, 4, activation="leaky_relu", impl="phase", name="up")
    x = np.random.default_rng(0).standard_normal((1, 50, 2)).astype("float32")
    y = numpy(layer(x))
    clone = DilatedConv1DTranspose.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(numpy(clone(x)), y, atol=1e-6)
    assert clone.impl == "phase" and clone.dilation_rate == 4
    assert y.min() < 0 and (y < 0).mean() < 0.9  # leaky: negatives shrunk, not removed


def test_impl_resolution():
    assert resolve_impl("phase", 1) == "native"  # identical when undilated
    assert resolve_impl("phase", 4) == "phase"
    assert resolve_impl("native", 4) == "native"
    assert resolve_impl("keras", 4) == "keras"
    assert resolve_impl("taps", 1) == "native" and resolve_impl("taps", 4) == "taps"
    for d in (1, 4):
        assert resolve_impl("auto", d) == auto_impl(BACKEND, on_accelerator(), d)
    with pytest.raises(ValueError, match="conv impl"):
        resolve_impl("fast", 2)


@pytest.mark.parametrize(
    "backend,accelerated,dilation,expected",
    [
        ("jax", True, 4, "phase"),  # 3x faster DDU step on an H100/H200
        ("jax", True, 1, "native"),  # undilated: nothing to gain from phases
        ("jax", False, 4, "native"),  # CPUs keep what was measured there
        ("torch", True, 4, "keras"),  # the plain layers were fastest under torch on GPU
        ("torch", True, 1, "keras"),
        ("torch", False, 4, "keras"),
        ("tensorflow", True, 4, "native"),
        ("tensorflow", False, 4, "taps"),  # skips what wide dilations read of the padding
        ("tensorflow", False, 1, "native"),  # runs where the plain transposed layer cannot
    ],
)
def test_auto_picks_per_backend_device_and_layer(backend, accelerated, dilation, expected):
    assert auto_impl(backend, accelerated, dilation) == expected


def test_decimate_and_linear_upsample():
    x = np.arange(8, dtype="float32").reshape(1, 4, 2)
    np.testing.assert_array_equal(numpy(Decimate1D()(x)), x[:, ::2])
    up = numpy(LinearUpsample1D()(x))
    assert up.shape == (1, 8, 2)
    np.testing.assert_array_equal(up[0, ::2], x[0])  # original samples kept
    np.testing.assert_array_equal(up[0, 1:-1:2], (x[0, :-1] + x[0, 1:]) / 2)  # midpoints
    np.testing.assert_array_equal(up[0, -1], x[0, -1])  # edge repeats


def test_inside_share_counts_the_multiply_adds_that_read_the_signal():
    same = same_padding(15, 4096)
    # The paper DDU's dilation-4096 layers at 16384 samples: taps 0, +-1, +-2, +-3 read
    # 16384, 12288, 8192 and 4096 samples inside; the 8 outer taps only padding.
    assert inside_share(15, 4096, same, 16384) == pytest.approx((16384 + 2 * 24576) / (15 * 16384))
    assert inside_share(15, 1, (7, 7), 16384) == pytest.approx(1 - 56 / (15 * 16384))
    assert inside_share(5, 100, (200, 200), 3) == pytest.approx(1 / 5)  # the centre tap alone

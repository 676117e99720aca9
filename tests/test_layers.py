"""Our convolution layers compute exactly what Keras's Conv1D / Conv1DTranspose compute.

Every formulation ("native" dilated conv, "phase" space-to-batch, "fold" an undilated
2-D conv down rows of d samples, "spectral" short Fourier transforms of those rows, "keras"
the plain layers' own computation), odd and even kernels, lengths that are not a multiple
of the dilation and lengths that are, in one spectral frame and in several.
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
    foldable,
    on_accelerator,
    resolve_impl,
    same_padding,
    spectral_fits,
    spectral_pays,
)

BACKEND = keras.backend.backend()
# (kernel, dilation, length): odd and even kernels, lengths below the dilation, not a
# multiple of it, a single sample, and whole rows of d samples ("fold" folds those; at
# least k of them, "spectral" transforms them).
CASES = [
    (3, 2, 10),
    (5, 16, 32),
    (1, 1, 7),
    (2, 1, 101),
    (2, 3, 7),
    (4, 8, 1),
    (5, 3, 101),
    (5, 8, 13),
    (15, 8, 64),
    (15, 2, 3),
    (3, 1, 7),  # "spectral": one frame of 16 rows
    (5, 4, 40),
    (15, 1, 130),  # three frames of 64 rows
    (15, 2, 256),
]

IMPLS = ["native", "phase", "fold", "spectral", "keras"]
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


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k,d,t", CASES)
def test_conv_matches_keras_conv1d(k, d, t, impl):
    x = np.random.default_rng(k * 100 + d + t).standard_normal((2, t, 3)).astype("float32")
    reference = keras.layers.Conv1D(4, k, padding="same", dilation_rate=d)
    expected = numpy(reference(x))
    ours = copy_of(reference, DilatedConv1D, x, impl=impl)
    np.testing.assert_allclose(numpy(ours(x)), expected, atol=1e-5)


@pytest.mark.parametrize("k,d,t,impl", TRANSPOSE_CASES)
def test_transpose_matches_keras_conv1d_transpose(k, d, t, impl):
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


def test_fold_takes_whole_rows_of_an_odd_same_padded_kernel_only():
    assert foldable(64, 15, 8, (56, 56))
    assert foldable(16384, 15, 4096, same_padding(15, 4096))  # the paper DDU's widest
    assert not foldable(None, 15, 8, (56, 56))  # traced for any length
    assert not foldable(60, 15, 8, (56, 56))  # not whole rows
    assert not foldable(64, 4, 8, (12, 12))  # even kernel: half rows of padding
    assert not foldable(64, 15, 8, (0, 112))  # not 'same'
    assert not foldable(64, 15, 1, (7, 7))  # undilated: nothing to fold


def test_spectral_takes_k_whole_rows_of_an_odd_same_padded_kernel_only():
    assert spectral_fits(7, 3, 1, (1, 1)) and spectral_fits(16384, 15, 1024, (7168, 7168))
    assert not spectral_fits(16384, 15, 2048, (14336, 14336))  # 8 rows: fewer than k
    assert not spectral_fits(None, 3, 1, (1, 1))  # traced for any length
    assert not spectral_fits(100, 15, 8, (56, 56))  # not whole rows
    assert not spectral_fits(64, 4, 1, (1, 2))  # even kernel
    assert not spectral_fits(64, 1, 1, (0, 0))  # one tap: nothing to transform
    assert not spectral_fits(64, 3, 1, (0, 2))  # not 'same'


def test_spectral_pays_for_wide_layers_only():
    # The paper DDU's widest layers: 4-fold fewer multiply-adds than the taps.
    assert spectral_pays(16384, 15, 1, 300, 105) and spectral_pays(16384, 15, 1024, 375, 90)
    # Narrow ones, as the bundled Wave-U-Net's first levels: the copies cost more.
    assert not spectral_pays(16384, 15, 1, 10, 20) and not spectral_pays(16384, 15, 2, 17, 15)


@pytest.mark.parametrize("policy,spectral", [("float32", True), ("mixed_bfloat16", False)])
def test_auto_computes_wide_float32_layers_spectrally_on_cpus(monkeypatch, policy, spectral):
    import keras_sep.layers as layers

    calls = []
    compute = layers._spectral_conv
    monkeypatch.setattr(layers, "_spectral_conv", lambda *a: calls.append(a) or compute(*a))
    layer = DilatedConv1D(105, 15, 1, dtype=policy)
    x = np.random.default_rng(0).standard_normal((1, 256, 300)).astype("float32")
    y = numpy(layer(x))
    assert y.shape == (1, 256, 105) and np.isfinite(y).all()
    # In bfloat16 the paper DDU's forward was no faster spectrally (1.14 against 1.12 s
    # folded) and its outputs 4e-3 from the folded ones: auto keeps folding there.
    assert bool(calls) == (spectral and not on_accelerator())


def test_impl_resolution():
    assert resolve_impl("phase", 1) == "native"  # identical when undilated
    assert resolve_impl("phase", 4) == "phase"
    assert resolve_impl("native", 4) == "native"
    assert resolve_impl("keras", 4) == "keras"
    assert resolve_impl("fold", 1) == "native" and resolve_impl("fold", 4) == "fold"
    assert resolve_impl("spectral", 1) == "spectral"
    for d in (1, 4):
        assert resolve_impl("auto", d) == auto_impl(BACKEND, on_accelerator(), d)
    with pytest.raises(ValueError, match="conv impl"):
        resolve_impl("fast", 2)


@pytest.mark.parametrize(
    "backend,accelerated,dilation,expected",
    [
        ("jax", True, 4, "phase"),  # 3x faster DDU step on an H100/H200
        ("jax", True, 1, "native"),  # undilated: nothing to gain from phases
        ("jax", False, 4, "native"),  # below FOLD_FROM, XLA's dilated conv is as fast
        ("torch", True, 4, "keras"),  # the plain layers were fastest under torch on GPU
        ("torch", True, 1, "keras"),
        ("torch", False, 2, "fold"),  # torch's own dilated CPU convs are slow at any d
        ("torch", False, 1, "keras"),
        ("tensorflow", True, 4, "native"),
        ("tensorflow", False, 64, "fold"),  # 2-D conv down rows: faster from d = 64
        ("tensorflow", False, 32, "native"),  # oneDNN's dilated conv is as fast below
        ("jax", False, 64, "fold"),
        ("tensorflow", False, 1, "native"),  # runs where the plain transposed layer cannot
    ],
)
def test_auto_picks_per_backend_device_and_layer(backend, accelerated, dilation, expected):
    assert auto_impl(backend, accelerated, dilation) == expected
    # Where the spectral convolution fits and pays (float32), every CPU backend takes it.
    spectral = expected if accelerated else "spectral"
    assert auto_impl(backend, accelerated, dilation, spectral=True) == spectral


def test_decimate_and_linear_upsample():
    x = np.arange(8, dtype="float32").reshape(1, 4, 2)
    np.testing.assert_array_equal(numpy(Decimate1D()(x)), x[:, ::2])
    up = numpy(LinearUpsample1D()(x))
    assert up.shape == (1, 8, 2)
    np.testing.assert_array_equal(up[0, ::2], x[0])  # original samples kept
    np.testing.assert_array_equal(up[0, 1:-1:2], (x[0, :-1] + x[0, 1:]) / 2)  # midpoints
    np.testing.assert_array_equal(up[0, -1], x[0, -1])  # edge repeats

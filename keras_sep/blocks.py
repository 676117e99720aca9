"""The named building blocks of the three architectures: tensor in, tensor out.

Layers are named after their place (``down3_conv2``, ``up6_transition``), so
``model.summary()`` reads like the paper's figures.
"""

from __future__ import annotations

import keras

from keras_sep.config import BaseConfig
from keras_sep.layers import Decimate1D, DilatedConv1D, DilatedConv1DTranspose, LinearUpsample1D


def conv_layer(filters, kernel_size, dilation, name, impl, transpose=False, **kwargs):
    """The convolution layer for ``impl``: ours, or plain Keras layers for ``impl="keras"``.

    Both hold the same weights (kernel and bias, Keras's layouts), so they can be swapped.
    """
    if impl == "keras":
        layer = keras.layers.Conv1DTranspose if transpose else keras.layers.Conv1D
        return layer(
            filters, kernel_size, padding="same", dilation_rate=dilation, name=name, **kwargs
        )
    layer = DilatedConv1DTranspose if transpose else DilatedConv1D
    return layer(filters, kernel_size, dilation, impl=impl, name=name, **kwargs)


def conv_leaky_relu(
    x, filters: int, kernel_size: int, dilation: int, name: str, impl: str, transpose=False
):
    """A (transposed) dilated convolution followed by LeakyReLU, as every layer of the paper."""
    layer = conv_layer(
        filters, kernel_size, dilation, name, impl, transpose, activation="leaky_relu"
    )
    return layer(x)


def concat(tensors: list, name: str):
    return tensors[0] if len(tensors) == 1 else keras.layers.Concatenate(name=name)(tensors)


def dilated_block(x, filters, kernel_size, dilations, name, impl, transpose=False):
    """Plain block: one convolution per dilation rate, each fed the previous one's output."""
    for i, dilation in enumerate(dilations, 1):
        x = conv_leaky_relu(x, filters, kernel_size, dilation, f"{name}_conv{i}", impl, transpose)
    return x


def dense_block(x, growth_rate, kernel_size, dilations, name, impl, transpose=False):
    """Dense block: every layer's input is the block input and all earlier layers' outputs.

    Returns the concatenation of the block input and all layer outputs, as in DenseNet.
    """
    return _dense_layers([x], growth_rate, kernel_size, dilations, name, impl, transpose)


def dense_skip_block(x, skip, growth_rate, kernel_size, dilations, name, impl, transpose=False):
    """An up dense block with the paper's dense skip connection.

    ``skip`` (the matching down block's output) joins the input of every layer, not only
    the first, beside the block input and all earlier layers' outputs.
    """
    return _dense_layers([x, skip], growth_rate, kernel_size, dilations, name, impl, transpose)


def _dense_layers(features: list, growth_rate, kernel_size, dilations, name, impl, transpose):
    features = list(features)
    for i, dilation in enumerate(dilations, 1):
        layer_input = concat(features, f"{name}_conv{i}_input")
        features.append(
            conv_leaky_relu(
                layer_input, growth_rate, kernel_size, dilation, f"{name}_conv{i}", impl, transpose
            )
        )
    return concat(features, f"{name}_output")


def transition(x, filters: int, name: str, impl: str):
    """1x1 convolution that reduces a dense block's channel count."""
    return conv_leaky_relu(x, filters, 1, 1, name, impl)


def down_level(x, filters: int, kernel_size: int, name: str, impl: str):
    """Wave-U-Net down level: convolution (kept for the skip), then decimation by 2."""
    features = conv_leaky_relu(x, filters, kernel_size, 1, f"{name}_conv", impl)
    return features, Decimate1D(name=f"{name}_decimate")(features)


def up_level(x, skip, filters: int, kernel_size: int, name: str, impl: str):
    """Wave-U-Net up level: linear upsampling x2, concatenation with the skip, convolution."""
    x = LinearUpsample1D(name=f"{name}_upsample")(x)
    x = keras.layers.Concatenate(name=f"{name}_skip")([x, skip])
    return conv_leaky_relu(x, filters, kernel_size, 1, f"{name}_conv", impl)


def source_head(features, mixture, cfg: BaseConfig) -> dict:
    """One 1x1 tanh convolution per estimated source, on the features and the mixture.

    With ``cfg.output == "difference"`` the last source is the mixture minus the
    sum of the others (energy conservation), so the outputs always sum to the input.
    The head, from its input on, stays float32 under mixed precision: the mixture joins
    it unrounded and the difference is exact.
    """
    x = keras.layers.Concatenate(name="head_input", dtype="float32")([features, mixture])
    outputs = {
        source: conv_layer(
            cfg.channels, 1, 1, source, cfg.conv_impl, activation="tanh", dtype="float32"
        )(x)
        for source in cfg.estimated_sources
    }
    if cfg.output == "difference":
        estimates = list(outputs.values())
        total = estimates[0]
        if len(estimates) > 1:
            total = keras.layers.Add(name="estimates_sum", dtype="float32")(estimates)
        last = cfg.sources[-1]
        outputs[last] = keras.layers.Subtract(name=last, dtype="float32")([mixture, total])
    return {source: outputs[source] for source in cfg.sources}

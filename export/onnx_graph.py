"""A Wave-U-Net written straight as an ONNX graph, channels first, for ONNX Runtime.

tf2onnx converts the Keras graph as TensorFlow computes it, channels last: every
convolution sits between two transposes (45 in the bundled model), and ONNX Runtime spent
22% of a call on them. This graph keeps (batch, channels, time) from the input's one
transpose to the outputs' and splits each up level's convolution over its two inputs
(upsampled features and skip), so the skip is never concatenated. The bundled model, 2
cores, 60 s of audio separated with two calls at once: 2.26 s, against 3.06 s for the
tf2onnx graph and 2.12 s for Keras in float32 (docs/performance.md).

The function is the Keras model's (``keras_sep.blocks``): 'same' convolutions with
LeakyReLU (slope 0.2), decimation by 2, linear upsampling by 2 whose last sample repeats,
the tanh source heads on the features and the mixture, and the difference output.
``write_onnx_copy`` checks every graph it writes against Keras (1e-4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from keras_sep.errors import require

if TYPE_CHECKING:
    from keras_sep.models import SeparationModel

OPSET = 17
# The oldest opset whose operators this graph uses as written (Unsqueeze's axes as an input).
MIN_OPSET = 13
# keras.activations.leaky_relu's default negative slope, which the Keras layers use.
LEAKY_SLOPE = 0.2
# "To the end" for Slice.
END = np.iinfo(np.int64).max


class _Graph:
    """Nodes and constants of a graph under construction, with unique names."""

    def __init__(self) -> None:
        self.onnx = require("onnx", "writing an ONNX model")
        self.nodes: list = []
        self.constants: list = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, value, prefix: str = "c") -> str:
        name = self._name(prefix)
        self.constants.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self._name(op_type)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def time_slice(self, x: str, start: int, stop: int = END, step: int = 1) -> str:
        """``x[:, :, start:stop:step]``."""
        ints = [np.array([v], np.int64) for v in (start, stop, 2, step)]
        return self.op("Slice", [x, *(self.const(v) for v in ints)])

    def conv(self, x: str, kernel: np.ndarray, bias: np.ndarray, activation: str | None) -> str:
        """A 'same' convolution of a Keras kernel (k, in, out) on (batch, in, time)."""
        k = kernel.shape[0]
        weight = np.ascontiguousarray(np.transpose(kernel, (2, 1, 0)), dtype=np.float32)
        left = (k - 1) // 2
        inputs = [x, self.const(weight, "W"), self.const(np.asarray(bias, np.float32), "B")]
        y = self.op("Conv", inputs, pads=[left, k - 1 - left])
        if activation == "leaky_relu":
            return self.op("LeakyRelu", [y], alpha=LEAKY_SLOPE)
        if activation == "tanh":
            return self.op("Tanh", [y])
        return y


def _weights(model: SeparationModel, name: str) -> tuple[np.ndarray, np.ndarray]:
    kernel, bias = model.get_layer(name).get_weights()
    return kernel, bias


def _upsample(g: _Graph, x: str) -> str:
    """Linear upsampling by 2: output 2t is x[t], 2t+1 the mean of x[t] and x[t+1] (the
    last sample repeats), as ``keras_sep.layers.LinearUpsample1D``."""
    following = g.op("Concat", [g.time_slice(x, 1), g.time_slice(x, -1)], axis=2)
    between = g.op("Mul", [g.op("Add", [x, following]), g.const(np.float32(0.5))])
    pair = [g.op("Unsqueeze", [v, g.const(np.array([3], np.int64))]) for v in (x, between)]
    interleaved = g.op("Concat", pair, axis=3)  # (batch, channels, time, 2)
    lead = g.op("Slice", [g.op("Shape", [x]), *(g.const(np.array([v], np.int64)) for v in (0, 2))])
    shape = g.op("Concat", [lead, g.const(np.array([-1], np.int64))], axis=0)
    return g.op("Reshape", [interleaved, shape])


def wave_u_net_graph(model: SeparationModel, opset: int = OPSET):
    """The ONNX ``ModelProto`` of a Keras Wave-U-Net ``SeparationModel``: input
    ``mixture`` (batch, time, channels), one output per source, named after it; ``opset``
    from ``MIN_OPSET`` on."""
    cfg = model.arch_config
    g = _Graph()
    helper = g.onnx.helper
    mixture = g.op("Transpose", ["mixture"], perm=[0, 2, 1])  # (batch, channels, time)
    x, skips = mixture, []
    for i in range(1, cfg.levels + 1):
        skips.append(g.conv(x, *_weights(model, f"down{i}_conv"), "leaky_relu"))
        x = g.time_slice(skips[-1], 0, END, 2)
    x = g.conv(x, *_weights(model, "bottleneck_conv"), "leaky_relu")
    for i in range(cfg.levels, 0, -1):
        # conv(concat(up, skip)) as conv(up) + conv(skip): the kernel's input channels
        # are the upsampled features' first, then the skip's.
        kernel, bias = _weights(model, f"up{i}_conv")
        features = kernel.shape[1] - cfg.filters * i
        up = g.conv(_upsample(g, x), kernel[:, :features], bias, None)
        skip = g.conv(skips[i - 1], kernel[:, features:], np.zeros_like(bias), None)
        x = g.op("LeakyRelu", [g.op("Add", [up, skip])], alpha=LEAKY_SLOPE)
    head = g.op("Concat", [x, mixture], axis=1)
    outputs = {s: g.conv(head, *_weights(model, s), "tanh") for s in cfg.estimated_sources}
    if cfg.output == "difference":
        estimates = list(outputs.values())
        total = estimates[0]
        for estimate in estimates[1:]:
            total = g.op("Add", [total, estimate])
        outputs[cfg.sources[-1]] = g.op("Sub", [mixture, total])
    for source in cfg.sources:
        g.op("Transpose", [outputs[source]], source, perm=[0, 2, 1])

    def value(name: str):
        shape = ["batch", "time", cfg.channels]
        return helper.make_tensor_value_info(name, g.onnx.TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        g.nodes, "wave_u_net", [value("mixture")], [value(s) for s in cfg.sources], g.constants
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    g.onnx.checker.check_model(proto)
    return proto

"""A Wave-U-Net written straight as an ONNX graph, channels first, for ONNX Runtime.

tf2onnx converts the Keras graph as TensorFlow computes it, channels last: every
convolution sits between two transposes (45 in the bundled model), and ONNX Runtime spent
22% of a call on them. This graph keeps (batch, channels, time) from the input's one
transpose to the outputs' and splits each up level's convolution over its two inputs
(upsampled features and skip), so the skip is never concatenated; the upsampled features'
part is computed before upsampling (``_upsampled_conv``), so nothing is upsampled. The
bundled model, 2 cores, 60 s of audio separated with two calls at once: 2.26 s, against
3.06 s for the tf2onnx graph and 2.12 s for Keras in float32; computing the up levels
before upsampling took another 12% off a 20 s song (docs/performance.md).

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
# The oldest opset whose operators this graph uses as written (ScatterElements' reduction).
MIN_OPSET = 16
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

    def conv(
        self,
        x: str,
        kernel: np.ndarray,
        bias: np.ndarray,
        activation: str | None,
        left: int | None = None,
    ) -> str:
        """A convolution of a Keras kernel (k, in, out) on (batch, in, time), zero-padded by
        ``left`` samples in front and k - 1 - left behind ('same': (k - 1) // 2)."""
        k = kernel.shape[0]
        weight = np.ascontiguousarray(np.transpose(kernel, (2, 1, 0)), dtype=np.float32)
        left = (k - 1) // 2 if left is None else left
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


def _phase_kernels(kernel: np.ndarray) -> tuple[np.ndarray, int]:
    """A 'same' kernel (k, in, out) for the upsampled signal as a kernel for the signal
    itself: (taps, in, 2 * out), output channel 2c + p giving sample 2t + p, and its left
    padding.

    Output 2t + p reads upsampled sample m = 2t + p + j - left through tap j, and upsampled
    sample m is x[t'] where m = 2t' and the mean of x[t'] and x[t' + 1] where m = 2t' + 1:
    every 2t' + r (r = -1, 0, 1) weighs x[t'] by 1 - |r| / 2. So tap j meets x[t + d]
    where p + j - left - r = 2d.
    """
    k = kernel.shape[0]
    left = (k - 1) // 2
    taps: dict[int, np.ndarray] = {}
    for p in (0, 1):
        for j in range(k):
            for r in (-1, 0, 1):
                if (p + j - left - r) % 2 == 0:
                    tap = taps.setdefault((p + j - left - r) // 2, np.zeros((2, *kernel.shape[1:])))
                    tap[p] += (1 - abs(r) / 2) * kernel[j]
    first, last = min(taps), max(taps)
    stacked = np.stack([taps[d] for d in range(first, last + 1)])  # (taps, 2, in, out)
    merged = np.transpose(stacked, (0, 2, 3, 1)).reshape(len(stacked), kernel.shape[1], -1)
    return merged, -first


def _upsampled_conv(g: _Graph, x: str, kernel: np.ndarray, bias: np.ndarray) -> str:
    """A 'same' convolution of ``x`` upsampled by ``keras_sep.layers.LinearUpsample1D``
    (output 2t is x[t], 2t+1 the mean of x[t] and x[t+1], the last sample repeating),
    computed at x's rate: each tap of the upsampled signal is a mix of at most two of
    x's, so both output phases are one convolution of x (4 taps instead of 5 at twice the
    rate for k = 5), interleaved after. Nothing is upsampled.

    That convolution pads x with zeros, which upsamples to what the layer computes except
    at two samples: -1, which the convolution's padding makes 0 and x's padding x[0]/2, and
    2T-1, x[T-1] (the last sample repeats) against x[T-1]/2. Their part of the output,
    a few samples at each end, is added after (``ScatterElements``, opset 16).
    """
    k, channels_in, channels_out = kernel.shape
    left = (k - 1) // 2
    merged, pad = _phase_kernels(kernel)
    y = g.conv(x, merged, np.repeat(np.asarray(bias, np.float32), 2), None, left=pad)
    int64 = lambda values: g.const(np.array(values, np.int64))  # noqa: E731
    y = g.op("Reshape", [y, int64([0, channels_out, 2, -1])])
    y = g.op("Transpose", [y], perm=[0, 1, 3, 2])  # (batch, out, T, 2): interleaved
    y = g.op("Reshape", [y, int64([0, channels_out, -1])])
    # What the two samples add: sample -1 (-x[0] / 2) reaches output left - 1 - j through
    # tap j < left, sample 2T-1 (+x[T-1] / 2) output 2T - 1 + left - j through tap j >= left.
    # Outputs outside the signal (short signals) are dropped: zeroed and put at an end.
    length = g.op("Mul", [g.op("Shape", [x], start=2, end=3), int64([2])])
    updates, positions = [], []
    sides = ((-0.5, 0, range(left), None), (0.5, -1, range(left, k), length))
    for sign, at, taps, origin in sides:
        if not taps:
            continue
        w = np.stack([sign * kernel[j] for j in taps], axis=-1)  # (in, out, taps)
        w = np.ascontiguousarray(w.reshape(channels_in, -1).T[:, :, None], dtype=np.float32)
        update = g.op("Conv", [g.time_slice(x, at, at + 1 or END), g.const(w, "W")])
        updates.append(g.op("Reshape", [update, int64([0, channels_out, -1])]))
        offsets = int64([left - 1 - j for j in taps])
        positions.append(offsets if origin is None else g.op("Add", [origin, offsets]))
    update = g.op("Concat", updates, axis=2)
    position = g.op("Concat", positions, axis=0)
    index = g.op("Max", [g.op("Min", [position, g.op("Sub", [length, int64([1])])]), int64([0])])
    inside = g.op("Cast", [g.op("Equal", [index, position])], to=g.onnx.TensorProto.FLOAT)
    update = g.op("Mul", [update, inside])
    index = g.op("Expand", [index, g.op("Shape", [update])])
    return g.op("ScatterElements", [y, index, update], axis=2, reduction="add")


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
        up = _upsampled_conv(g, x, kernel[:, :features], bias)
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

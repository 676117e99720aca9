"""Receptive field and convolution FLOPs of a built model, read off its layer graph.

Every tensor gets (left, right, stride): how many input samples to the left and right of
an output position can influence it, and how many input samples one of its steps spans
(Wave-U-Net halves and doubles the resolution). Convolutions add their padding times
the stride; Wave-U-Net's linear upsampling also looks one coarse step ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_sep.layers import Decimate1D, DilatedConv1D, LinearUpsample1D, same_padding


@dataclass(frozen=True)
class Reach:
    left: float
    right: float
    stride: float


@dataclass(frozen=True)
class ModelStats:
    params: int
    receptive_field: int  # input samples that can influence one output sample
    flops_per_sample: float  # multiply-adds x 2 of all convolutions, per input sample

    def gflop(self, samples: int) -> float:
        return self.flops_per_sample * samples / 1e9


def _conv_geometry(layer) -> tuple[int, int, bool] | None:
    """(kernel size, dilation, transposed) of our conv layers and of plain Keras ones."""
    import keras

    if isinstance(layer, DilatedConv1D):
        return layer.kernel_size, layer.dilation_rate, layer.transpose
    if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv1DTranspose):
        transpose = isinstance(layer, keras.layers.Conv1DTranspose)
        return layer.kernel_size[0], layer.dilation_rate[0], transpose
    return None


def model_stats(model) -> ModelStats:
    """Parameters, receptive field (samples) and forward FLOPs per input sample."""
    reach: dict[int, Reach] = {}
    for tensor in model.inputs:
        reach[id(tensor)] = Reach(0, 0, 1)
    flops = 0.0
    depths = sorted(model._nodes_by_depth, reverse=True)  # inputs first
    for depth in depths:
        for node in model._nodes_by_depth[depth]:
            layer, inputs = node.operation, node.input_tensors
            if not inputs:
                continue
            known = [reach[id(t)] for t in inputs]
            out = Reach(max(r.left for r in known), max(r.right for r in known), known[0].stride)
            conv = _conv_geometry(layer)
            if conv:
                kernel, dilation, transpose = conv
                pad_left, pad_right = same_padding(kernel, dilation, transpose)
                out = Reach(
                    out.left + pad_left * out.stride, out.right + pad_right * out.stride, out.stride
                )
                in_channels = inputs[0].shape[-1]
                flops += 2 * kernel * in_channels * layer.filters / out.stride
            elif isinstance(layer, Decimate1D):
                out = Reach(out.left, out.right, out.stride * 2)
            elif isinstance(layer, LinearUpsample1D):
                out = Reach(out.left, out.right + out.stride, out.stride / 2)
            for tensor in node.output_tensors:
                reach[id(tensor)] = out
    final = [reach[id(t)] for t in model.outputs]
    field = max(int(r.left + r.right) + 1 for r in final)
    return ModelStats(model.count_params(), field, flops)

"""Where a model's forward time goes, layer kind by layer kind, beside the machine's sgemm.

Runs the model once eagerly with every layer timed (each layer's ``call`` wrapped), then
sums the times by kind: the convolutions by dilation, the dense blocks' concatenations,
the activations, the rest. A convolution's rate is its multiply-adds (2 x kernel x in x
out x time) over its time, comparable with NumPy's float32 sgemm on the same cores.
Eager per-layer timing adds a little dispatch time to each layer; the whole-graph
forward (``predict_on_batch``) is printed beside it for reference.

    python benchmarks/layer_profile.py [--arch dilated_dense] [--batch 2] [--rounds 3]
    python benchmarks/layer_profile.py --model keras_sep/pretrained/demo --batch 16
    KERAS_BACKEND=torch python benchmarks/layer_profile.py
    ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell python benchmarks/layer_profile.py
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import keras
import numpy as np

# The same sgemm rate and timer as speed.py (this folder is on sys.path when run as a script).
from speed import _timed, sgemm_gflops

import keras_sep
from keras_sep.layers import DilatedConv1D

SEGMENT = 16384


def wait(y) -> None:
    """Return once ``y`` is computed: TensorFlow and torch compute eagerly on the CPU;
    JAX dispatches asynchronously."""
    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready(y)


def kind(layer, inputs) -> str:
    if isinstance(layer, DilatedConv1D):
        way = "transposed conv" if layer.transpose else "conv"
        return f"{way}, dilation {layer.dilation_rate}"
    if isinstance(layer, keras.layers.Concatenate):
        return "concatenate"
    return type(layer).__name__


def conv_flops(layer, x) -> float:
    if not isinstance(layer, DilatedConv1D):
        return 0.0
    batch, length, channels = x.shape
    return 2.0 * layer.kernel_size * channels * layer.filters * length * batch


def profile(model, x, rounds: int) -> dict[str, list[float]]:
    """Seconds and FLOPs per layer kind, the fastest of ``rounds`` eager forwards."""
    totals: dict[str, list[float]] = {}
    for _ in range(rounds + 1):  # the first round warms up
        spent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        originals = {}
        for layer in model.layers:
            original = layer.call
            originals[layer] = original

            def timed(*args, _layer=layer, _call=original, _spent=spent, **kwargs):
                started = time.perf_counter()
                y = _call(*args, **kwargs)
                wait(y)
                entry = _spent[kind(_layer, args[0])]
                entry[0] += time.perf_counter() - started
                first = args[0][0] if isinstance(args[0], list | tuple) else args[0]
                entry[1] += conv_flops(_layer, first)
                entry[2] += 1
                return y

            layer.call = timed
        try:
            model(x, training=False)
        finally:
            for layer, original in originals.items():
                layer.call = original
        whole = sum(v[0] for v in spent.values())
        if not totals or whole < sum(v[0] for v in totals.values()):
            totals = dict(spent)
    return totals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="dilated_dense")
    p.add_argument("--preset", default="paper")
    p.add_argument("--model", help="a model folder instead of --arch and --preset")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if args.model:
        model = keras_sep.load(args.model)
        what = args.model
    else:
        model = keras_sep.build(args.arch, preset=args.preset)
        what = f"{args.arch} ({args.preset})"
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (args.batch, SEGMENT, 2)).astype("float32")
    model.predict_on_batch(x)
    graph = min(_timed(lambda: model.predict_on_batch(x)) for _ in range(args.rounds))
    spent = profile(model, x, args.rounds)
    eager = sum(v[0] for v in spent.values())
    print(
        f"{what} on {keras.backend.backend()}, batch {args.batch} x "
        f"{SEGMENT} samples; sgemm {sgemm_gflops():.0f} GFLOP/s\n"
    )
    print(f"whole forward: {graph:.2f} s in a graph, {eager:.2f} s layer by layer\n")
    print("| layer kind | calls | seconds | share | GFLOP/s |\n|---|---|---|---|---|")
    for name, (seconds, flops, calls) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        rate = f"{flops / seconds / 1e9:.0f}" if flops else "-"
        print(f"| {name} | {calls} | {seconds:.3f} | {seconds / eager:.0%} | {rate} |")


if __name__ == "__main__":
    main()

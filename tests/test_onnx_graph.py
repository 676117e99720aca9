"""The hand-written ONNX Wave-U-Net computes what the Keras model computes."""

from __future__ import annotations

import numpy as np
import pytest

import keras_sep
from keras_sep.export.onnx_graph import wave_u_net_graph

ort = pytest.importorskip("onnxruntime")


def run_graph(proto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"mixture": x}), strict=True))


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # tiny: 4 levels, odd kernels, stereo, difference output
        {"output": "direct", "channels": 1},
        {"down_kernel": 4, "up_kernel": 2, "filters": 3},  # even kernels pad one more right
        {"up_kernel": 1},  # a single tap: only the repeated last sample is added after
        {"up_kernel": 7},
    ],
)
@pytest.mark.parametrize("shortest", [False, True])
def test_the_graph_gives_the_keras_models_stems(overrides, shortest):
    """Every length: the up levels convolve before upsampling and add what the ends take
    from the repeated last sample and the zero padding; at the shortest length the deepest
    level is one sample long, so both ends' additions meet and some fall outside."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras_sep.build("wave_u_net", preset="tiny", **overrides)
    # Random biases too (they start at zero), so a misplaced bias shows.
    model.set_weights(
        [w + np.random.default_rng(2).normal(0, 0.1, w.shape) for w in model.get_weights()]
    )
    cfg = model.arch_config
    length = cfg.length_multiple if shortest else cfg.valid_length(1000)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (3, length, cfg.channels))
    x = x.astype(np.float32)
    expected = model.predict_on_batch(x)
    stems = run_graph(wave_u_net_graph(model), x)
    assert list(stems) == list(cfg.sources)
    for source in cfg.sources:
        assert stems[source].shape == x.shape
        assert np.max(np.abs(stems[source] - np.asarray(expected[source]))) < 1e-5
    assert max(float(np.std(v)) for v in stems.values()) > 1e-3  # not a constant


def test_export_writes_the_graph_from_opset_16_and_converts_below(tmp_path):
    import onnx

    from keras_sep.export.onnx_model import convert_onnx

    model = keras_sep.build("wave_u_net", preset="tiny")
    cfg = model.arch_config
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (2, cfg.valid_length(500), cfg.channels))
    x = x.astype(np.float32)
    expected = model.predict_on_batch(x)
    transposes = {}
    for opset in (16, 15):
        proto = onnx.load(str(convert_onnx(model, tmp_path / f"m{opset}.onnx", opset)))
        assert proto.opset_import[0].version == opset
        transposes[opset] = sum(node.op_type == "Transpose" for node in proto.graph.node)
        stems = run_graph(proto, x)
        for source in cfg.sources:
            assert np.max(np.abs(stems[source] - np.asarray(expected[source]))) < 1e-5
    # ours: in, out, and one interleaving each up level's two phases
    assert transposes[16] == 1 + len(cfg.sources) + cfg.levels
    assert transposes[15] > transposes[16]  # tf2onnx's: around the convolutions

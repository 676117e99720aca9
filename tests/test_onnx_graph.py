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
    ],
)
def test_the_graph_gives_the_keras_models_stems(overrides):
    import keras

    keras.utils.set_random_seed(1)
    model = keras_sep.build("wave_u_net", preset="tiny", **overrides)
    # Random biases too (they start at zero), so a misplaced bias shows.
    model.set_weights(
        [w + np.random.default_rng(2).normal(0, 0.1, w.shape) for w in model.get_weights()]
    )
    cfg = model.arch_config
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (3, cfg.valid_length(1000), cfg.channels))
    x = x.astype(np.float32)
    expected = model.predict_on_batch(x)
    stems = run_graph(wave_u_net_graph(model), x)
    assert list(stems) == list(cfg.sources)
    for source in cfg.sources:
        assert stems[source].shape == x.shape
        assert np.max(np.abs(stems[source] - np.asarray(expected[source]))) < 1e-5
    assert max(float(np.std(v)) for v in stems.values()) > 1e-3  # not a constant

"""Receptive field and FLOPs read off the graph agree with experiment and with FACTS.md."""

import numpy as np
import pytest

import keras_sep
from keras_sep.analysis import model_stats


@pytest.mark.parametrize("name", ["wave_u_net", "dilated", "dilated_dense"])
def test_receptive_field_matches_an_impulse_experiment(name):
    model = keras_sep.build(name, preset="tiny")
    field = model_stats(model).receptive_field
    length = model.valid_length(4 * field)
    base = np.zeros((1, length, 2), "float32")
    impulse = base.copy()
    impulse[0, length // 2] = 0.5
    changed = (
        np.abs(
            model.predict_on_batch(impulse)["vocals"] - model.predict_on_batch(base)["vocals"]
        ).max(axis=-1)[0]
        > 0
    )
    reached = np.flatnonzero(changed)
    extent = reached[-1] - reached[0] + 1
    if name == "wave_u_net":
        # Decimation keeps every other sample, so one impulse sees part of the field.
        assert field / 2 <= extent <= field
    else:
        assert extent == field


@pytest.mark.slow
@pytest.mark.paper
def test_paper_flops_match_the_measured_prototype():
    # FACTS.md: 190 (DDU), 86 (Dilated U-Net) and 4.9 (Wave-U-Net, f = 24) GFLOP per segment.
    expected = {
        ("dilated_dense", "paper"): 189,
        ("dilated", "paper"): 86,
        ("wave_u_net", "original"): 4.9,
    }
    for (name, preset), gflop in expected.items():
        stats = model_stats(keras_sep.build(name, preset=preset))
        assert stats.gflop(16384) == pytest.approx(gflop, rel=0.02)
    assert model_stats(keras_sep.build("dilated_dense")).receptive_field == 267_583

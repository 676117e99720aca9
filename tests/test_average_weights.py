"""training/average_weights.py: the uniform average of weight snapshots, as a model folder."""

from __future__ import annotations

import numpy as np
import pytest

import keras_sep
from keras_sep.folder import read_info
from keras_sep.training.average_weights import main


def test_the_average_of_snapshots_is_their_mean_with_a_record(tmp_path, model_folder):
    model = keras_sep.load(model_folder)
    base = model.get_weights()
    snapshots = []
    for k, scale in enumerate((1.0, 2.0, 6.0)):
        model.set_weights([w * scale for w in base])
        model.save_weights(tmp_path / f"epoch_{k}.weights.h5")
        snapshots.append(str(tmp_path / f"epoch_{k}.weights.h5"))
    out = tmp_path / "swa"
    assert main([str(model_folder), str(out), *snapshots]) == 0
    averaged = keras_sep.load(out).get_weights()
    for a, w in zip(averaged, base, strict=True):
        np.testing.assert_allclose(a, w * 3.0, rtol=1e-6, atol=1e-7)
    assert any(np.abs(w).max() > 0 for w in base)  # not a trivially zero network
    record = read_info(out)["swa"]
    assert record["snapshots"] == ["epoch_0.weights.h5", "epoch_1.weights.h5", "epoch_2.weights.h5"]


@pytest.mark.parametrize("name", ["model.weights.h5", "config.json"])
def test_a_users_file_in_the_way_is_kept_unless_told(tmp_path, model_folder, capsys, name):
    model = keras_sep.load(model_folder)
    model.save_weights(tmp_path / "epoch_0.weights.h5")
    mine = tmp_path / "swa" / name
    mine.parent.mkdir()
    mine.write_text("mine")
    argv = [str(model_folder), str(tmp_path / "swa"), str(tmp_path / "epoch_0.weights.h5")]
    assert main(argv) != 0
    assert mine.read_text() == "mine"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    for a, w in zip(
        keras_sep.load(tmp_path / "swa").get_weights(), model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(a, w, rtol=1e-6)

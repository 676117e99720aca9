"""training/average_weights.py: the uniform average of weight snapshots, as a model folder,
and the snapshots that train.py keeps with keep_epochs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_finetune import small_config

import keras_sep
from keras_sep.files import OutputExistsError
from keras_sep.folder import read_info
from keras_sep.training.average_weights import main
from keras_sep.training.train import train


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


class EpochWeights(keras.callbacks.Callback):
    """The model's weights at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([np.array(w) for w in self.model.get_weights()])


@pytest.mark.slow
def test_keep_epochs_saves_each_epochs_weights_for_the_average(tmp_path):
    seen = EpochWeights()
    cfg = small_config(tmp_path, "epochs=2", "steps_per_epoch=2", "keep_epochs=true")
    run = tmp_path / "run"
    train(cfg, run, progress=False, callbacks=[seen])
    kept = sorted((run / "epochs").glob("*.weights.h5"))
    assert [p.name for p in kept] == ["epoch0001.weights.h5", "epoch0002.weights.h5"]
    assert main([str(run), str(tmp_path / "swa"), *map(str, kept)]) == 0
    averaged = keras_sep.load(tmp_path / "swa").get_weights()
    first, second = seen.epochs
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    for a, w1, w2 in zip(averaged, first, second, strict=True):
        np.testing.assert_allclose(a, (w1 + w2) / 2, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_keep_epochs_refuses_a_users_file_before_training(tmp_path):
    mine = tmp_path / "run" / "epochs" / "epoch0002.weights.h5"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    cfg = small_config(tmp_path, "epochs=2", "steps_per_epoch=2", "keep_epochs=true")
    with pytest.raises(OutputExistsError, match="epoch0002.weights.h5 exists"):
        train(cfg, tmp_path / "run", progress=False)
    assert mine.read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["epochs"]

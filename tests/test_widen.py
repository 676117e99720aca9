"""training/widen.py: a wider Wave-U-Net that separates exactly as the narrow one."""

from __future__ import annotations

import numpy as np
import pytest

import keras_sep
from keras_sep.errors import UsageError
from keras_sep.folder import read_info
from keras_sep.training.widen import main, widen


@pytest.fixture(scope="module")
def narrow():
    import keras

    keras.utils.set_random_seed(1)
    return keras_sep.build("wave_u_net", preset="tiny", segment_length=2048)


def outputs(model, x):
    return model.predict_on_batch(x)


@pytest.mark.parametrize("filters", [5, 9])
def test_the_wide_copy_gives_the_same_stems(narrow, filters):
    x = np.random.default_rng(0).normal(0, 0.3, (2, 4096, 2)).astype(np.float32)
    wide = widen(narrow, filters)
    assert wide.arch_config.filters == filters
    assert wide.count_params() > narrow.count_params()
    want, got = outputs(narrow, x), outputs(wide, x)
    for s in want:
        np.testing.assert_allclose(got[s], want[s], rtol=0, atol=1e-5)
    assert max(float(np.abs(v).max()) for v in want.values()) > 1e-3  # not a silent network
    # The copies differ (random shares of the outgoing weights), so training tells them apart.
    kernel = wide.get_layer("up1_conv").get_weights()[0]  # reads up2's and down1's copies
    old = narrow.get_layer("up1_conv").get_weights()[0]
    assert kernel.shape[1] > old.shape[1]
    assert len({round(float(v), 6) for v in np.abs(kernel).ravel()}) > old.size


def test_noise_changes_the_function_a_little(narrow):
    x = np.random.default_rng(1).normal(0, 0.3, (1, 4096, 2)).astype(np.float32)
    want, got = outputs(narrow, x), outputs(widen(narrow, 6, noise=0.01), x)
    error = max(float(np.abs(got[s] - want[s]).max()) for s in want)
    assert 1e-6 < error < 0.05


def test_what_widen_refuses(narrow):
    with pytest.raises(UsageError, match="narrower"):
        widen(narrow, narrow.arch_config.filters - 1)
    with pytest.raises(UsageError, match="wave_u_net"):
        widen(keras_sep.build("dilated", preset="tiny", segment_length=4096), 8)


def test_the_command_writes_a_model_folder_with_a_record(tmp_path, narrow):
    keras_sep.save(narrow, tmp_path / "narrow")
    assert main([str(tmp_path / "narrow"), str(tmp_path / "wide"), "--filters", "5"]) == 0
    wide = keras_sep.load(tmp_path / "wide")
    assert wide.arch_config.filters == 5
    assert read_info(tmp_path / "wide")["widened_from"]["folder"] == str(tmp_path / "narrow")


def test_the_command_keeps_a_users_file_in_the_way_unless_told(tmp_path, narrow, capsys):
    keras_sep.save(narrow, tmp_path / "narrow")
    mine = tmp_path / "wide" / "model.weights.h5"
    mine.parent.mkdir()
    mine.write_bytes(b"my own weights")
    argv = [str(tmp_path / "narrow"), str(tmp_path / "wide"), "--filters", "5"]
    assert main(argv) != 0
    assert mine.read_bytes() == b"my own weights"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    assert keras_sep.load(tmp_path / "wide").arch_config.filters == 5

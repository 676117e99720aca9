"""The level gate on stems that should be silent (keras_sep.gate)."""

import json
import shutil

import numpy as np
import pytest

import keras_sep
from keras_sep.config import WaveUNetConfig
from keras_sep.errors import ModelFolderError
from keras_sep.gate import Gate, model_gate
from keras_sep.separate import separate

RATE = 1000
SOURCES = ("vocals", "drums", "bass", "other")


def stems(n=40_000, quiet=(0, 15_000), seed=0):
    """Noise stems; vocals 40 dB down over ``quiet`` (a leak), at the others' level elsewhere."""
    rng = np.random.default_rng(seed)
    out = {s: rng.normal(0, 0.1, (n, 2)).astype(np.float32) for s in SOURCES}
    out["vocals"][quiet[0] : quiet[1]] *= 0.01
    return out


def gated(gate, blocks):
    out = list(gate.apply(iter(blocks), RATE))
    return {s: np.concatenate([b[s] for b in out]) for s in SOURCES}


def test_a_quiet_stem_is_silenced_into_other_and_a_playing_one_is_left_alone():
    x = stems()
    y = gated(Gate(window=3.0), [x])
    # Silent wherever the whole window is quiet; untouched where it plays.
    assert not np.any(y["vocals"][: 15_000 - 1500])
    np.testing.assert_array_equal(y["vocals"][16_500:], x["vocals"][16_500:])
    for s in ("drums", "bass"):
        np.testing.assert_array_equal(y[s], x[s])
    np.testing.assert_allclose(sum(y.values()), sum(x.values()), atol=1e-6)
    np.testing.assert_allclose(y["other"][:10_000], (x["other"] + x["vocals"])[:10_000], atol=1e-7)


@pytest.mark.parametrize("sizes", [[1] * 5 + [39_995], [7, 1234, 3, 20_000], [5000] * 8, [1499, 2]])
def test_blocks_of_any_size_give_the_stems_of_the_whole_song(sizes):
    x = stems(seed=1)
    whole = gated(Gate(window=3.0), [x])
    cuts = [c for c in np.cumsum(sizes) if c < len(x["vocals"])]
    parts = np.split(np.arange(len(x["vocals"])), cuts)
    streamed = gated(Gate(window=3.0), [{s: v[p] for s, v in x.items()} for p in parts])
    for s in SOURCES:  # the same but for float64 rounding of the running energy sums
        np.testing.assert_allclose(streamed[s], whole[s], rtol=0, atol=1e-6)


def test_gain_is_a_ramp_in_decibels():
    gate = Gate(threshold_db=-14.0, ramp_db=6.0)
    level_db = np.array([-30.0, -20.0, -17.0, -14.0, 0.0])
    gains = gate.gain(10 ** (level_db / 10), np.ones(5))
    np.testing.assert_allclose(gains, [0, 0, 0.5, 1, 1], atol=1e-9)
    assert gate.gain(np.zeros(1), np.zeros(1))[0] == 1.0  # silence against silence: kept


def test_a_gate_needs_its_stems():
    with pytest.raises(ValueError, match="needs stems"):
        list(Gate().apply(iter([{"a": np.zeros((10, 2)), "b": np.zeros((10, 2))}]), RATE))


class Leaky:
    """A model whose vocals are the mixture 30 dB down and whose other stem is the rest."""

    def __init__(self, folder_info=None):
        self.arch_config = WaveUNetConfig.preset("tiny", segment_length=1024)
        if folder_info is not None:
            self.folder_info = folder_info

    def predict_on_batch(self, x):
        leak = 10 ** (-30 / 20)
        return {"vocals": leak * x, "drums": 0 * x, "bass": 0 * x, "other": (1 - leak) * x}


def test_separate_gates_as_the_model_folder_says_and_not_otherwise():
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (3 * 22050, 2)).astype(np.float32)
    info = {"gate": {"stems": ["vocals"], "threshold_db": -14.0, "ramp_db": 6.0, "window": 1.0}}
    plain = separate(Leaky(), x, tta=1)
    assert np.abs(plain["vocals"]).max() > 0.01  # no gate named: the stems as they are
    own = separate(Leaky(info), x, tta=1)
    assert not np.any(own["vocals"])
    np.testing.assert_allclose(own["other"], x, atol=1e-5)
    off = separate(Leaky(info), x, tta=1, gate=None)
    np.testing.assert_array_equal(off["vocals"], plain["vocals"])
    asked = separate(Leaky(), x, tta=1, gate=Gate(stems=("vocals",), window=1.0))
    np.testing.assert_array_equal(asked["vocals"], own["vocals"])


def test_model_gate_reads_the_folder_config(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(keras_sep.DEFAULT_MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    config["gate"] = {"stems": ["vocals"], "threshold_db": -10.0}
    (folder / "config.json").write_text(json.dumps(config))
    model = keras_sep.load(folder)
    assert model_gate(model) == Gate(stems=("vocals",), threshold_db=-10.0)
    config["gate"]["stems"] = ["choir"]  # a stem the model does not have: no gate
    (folder / "config.json").write_text(json.dumps(config))
    assert model_gate(keras_sep.load(folder)) is None


@pytest.mark.parametrize(
    "bad", [{"window": "long"}, {"ramp_db": 0}, {"stems": []}, {"loudness": 3}, {"into": 5}]
)
def test_a_bad_gate_in_a_folder_is_a_one_line_model_folder_error(bad):
    model = Leaky({"gate": bad})
    with pytest.raises(ModelFolderError, match='bad "gate"') as e:
        model_gate(model)
    assert "\n" not in str(e.value)

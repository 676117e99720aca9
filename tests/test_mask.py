"""The soft-mask post-filter (keras_sep.mask)."""

import warnings

import numpy as np
import pytest
from scipy.signal import istft, stft

from keras_sep.errors import ModelFolderError
from keras_sep.mask import FRAMES_PER_CALL, OVERLAP, REGULARISE, SoftMask, model_mask
from keras_sep.separate import separate

RATE = 2730  # the default 0.75 s window is 2048 samples here
SOURCES = ("vocals", "drums", "bass", "other")
# The plain mask and the spatial one, with a lookahead shorter than the test songs.
MASKS = [SoftMask(), SoftMask(power=1.25, spatial=True, lookahead=1.0)]


def stems(n=20_000, seed=0):
    """Noise stems with different spectra and levels over time."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None]
    out = {}
    for i, s in enumerate(SOURCES):
        x = rng.normal(0, 0.1, (n, 2)).astype(np.float32)
        out[s] = np.cumsum(x, 0) * 0.05 if i % 2 else x * t**i  # low and broadband
    return out


def masked(mask, blocks, rate=RATE):
    out = list(mask.apply(iter(blocks), rate))
    return {s: np.concatenate([b[s] for b in out]) for s in blocks[0]}


def reference(mask, x, rate=RATE):
    """The same filter offline, with scipy's STFT on the zero-padded song."""
    n = mask.frame(rate)
    hop = n // 4
    length = len(x["vocals"])
    padded = {s: np.pad(v, ((n - hop, n), (0, 0))) for s, v in x.items()}
    spectra = {
        s: stft(v.T, window="hann", nperseg=n, noverlap=n - hop, boundary=None, padded=False)[2]
        for s, v in padded.items()
    }
    mixture = sum(spectra.values())
    weights = {s: np.abs(v) ** mask.power for s, v in spectra.items()}
    total = sum(weights.values()) + 1e-20
    with warnings.catch_warnings():  # the padding's first sample has no window weight
        warnings.simplefilter("ignore", UserWarning)
        return {
            s: istft(
                mixture * weights[s] / total,
                window="hann",
                nperseg=n,
                noverlap=n - hop,
                boundary=False,
            )[1].T[n - hop : n - hop + length]
            for s in x
        }


@pytest.mark.parametrize("power", [1.0, 1.25, 2.0])
def test_the_filter_is_a_soft_mask_of_the_mixture_spectrum(power):
    x = stems()
    mask = SoftMask(power=power)
    got, want = masked(mask, [x]), reference(mask, x)
    for s in SOURCES:
        assert got[s].shape == x[s].shape
        np.testing.assert_allclose(got[s], want[s], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sum(got.values()), sum(x.values()), rtol=0, atol=1e-6)
    # It changes the stems: each moves towards the part of the mixture it dominates.
    assert max(np.abs(got[s] - x[s]).max() for s in SOURCES) > 0.01


@pytest.mark.parametrize("mask", MASKS)
def test_a_lone_stem_is_given_back_whole(mask):
    x = stems()
    alone = {s: (v if s == "drums" else np.zeros_like(v)) for s, v in x.items()}
    got = masked(mask, [alone])
    if mask.spatial:
        # The Wiener step's regularisation (REGULARISE of each bin's mean level on the
        # diagonal) holds back a little of even a lone stem, most in its weaker stereo
        # direction: 3e-4 of its RMS here (-70 dB). That goes to the last stem, so the
        # stems still sum to the mixture.
        lost = got["drums"] - alone["drums"]
        assert np.sqrt(np.mean(lost**2)) < 10 * REGULARISE * np.sqrt(np.mean(alone["drums"] ** 2))
        np.testing.assert_allclose(got["other"], -lost, atol=1e-6)
        quiet = ("vocals", "bass")
    else:
        np.testing.assert_allclose(got["drums"], alone["drums"], rtol=0, atol=1e-6)
        quiet = ("vocals", "bass", "other")
    assert max(np.abs(got[s]).max() for s in quiet) < 1e-6


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("sizes", [[1] * 5 + [19_995], [7, 1234, 3, 9000], [2048] * 10, [100]])
def test_blocks_of_any_size_give_the_stems_of_the_whole_song(sizes, mask):
    x = stems(n=40_000 if mask.spatial else 20_000, seed=1)  # spatial: several chunks
    n = len(x["vocals"])
    whole = masked(mask, [x])
    cuts = [c for c in np.cumsum(sizes) if c < n]
    parts = np.split(np.arange(n), cuts)
    streamed = masked(mask, [{s: v[p] for s, v in x.items()} for p in parts])
    for s in SOURCES:
        np.testing.assert_allclose(streamed[s], whole[s], rtol=0, atol=1e-6)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("length", [1, 100, 2047, 2049])
def test_songs_shorter_than_a_frame_keep_their_length_and_sum(length, mask):
    x = stems(n=length, seed=2)
    got = masked(mask, [x])
    assert all(got[s].shape == (length, 2) for s in SOURCES)
    np.testing.assert_allclose(sum(got.values()), sum(x.values()), rtol=0, atol=1e-6)


def panned(n=30_000, seed=4):
    """Two noise sources with one spectrum, panned apart, and estimates that each carry
    a third of the other."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.1, (n, 1)) * np.array([[1.0, 0.3]])
    b = rng.normal(0, 0.1, (n, 1)) * np.array([[0.3, 1.0]])
    truth = {"a": a.astype(np.float32), "b": b.astype(np.float32)}
    estimates = {"a": (2 * a + b) / 3, "b": (a + 2 * b) / 3}
    return truth, {s: v.astype(np.float32) for s, v in estimates.items()}


def test_the_spatial_filter_separates_stems_by_where_they_sit():
    truth, estimates = panned()
    error = {
        name: sum(np.sum((got[s] - truth[s]) ** 2) for s in truth)
        for name, got in (
            ("model", estimates),
            ("soft", masked(SoftMask(), [estimates])),
            ("spatial", masked(SoftMask(spatial=True), [estimates])),
        )
    }
    # Same spectra: magnitudes alone hardly tell the stems apart; their stereo images do.
    assert error["soft"] > 0.9 * error["model"]
    assert error["spatial"] < 0.4 * error["model"]


def test_the_stereo_closed_form_is_the_general_multichannel_filter():
    from keras_sep.mask import _wiener, _wiener_stereo

    rng = np.random.default_rng(4)
    stems_, frames, bins = 4, 5, 33
    z = rng.normal(size=(stems_, 8, 2, bins)) + 1j * rng.normal(size=(stems_, 8, 2, bins))
    images = np.einsum("sfib,sfjb->sijb", z, z.conj()) / 8  # Hermitian, positive
    images[0, :, :, :3] = np.array([[1, 1], [1, 1]])[..., None]  # singular: one direction only
    levels = rng.uniform(0, 2, (stems_, frames, bins)).astype(np.float32)
    levels[:, :, 5] = 0  # every stem silent in a bin
    mixture = (rng.normal(size=(frames, 2, bins)) + 1j * rng.normal(size=(frames, 2, bins))).astype(
        np.complex64
    )
    general = _wiener(levels, images, mixture, [0, 2, 3])
    stereo = _wiener_stereo(levels, images, mixture, [0, 2, 3])
    assert sorted(stereo) == [0, 2, 3]
    for k in stereo:
        assert stereo[k].shape == mixture.shape
        np.testing.assert_allclose(stereo[k], general[k], rtol=1e-4, atol=1e-5)


def test_a_frame_hears_the_song_only_up_to_its_lookahead():
    mask = SoftMask(spatial=True, lookahead=1.0)
    n, hop, ahead = mask.frame(RATE), mask.frame(RATE) // OVERLAP, mask.ahead(RATE)
    x = stems(n=60_000, seed=5)
    change = 40_000
    y = {s: v.copy() for s, v in x.items()}
    y["vocals"][change:] *= 4  # louder singing from here on
    got, other = masked(mask, [x]), masked(mask, [y])
    # Untouched: samples whose frames' chunks sum frames that all end before the change.
    safe = change - (ahead + FRAMES_PER_CALL + OVERLAP) * hop - n
    assert safe > 0
    for s in SOURCES:
        np.testing.assert_array_equal(got[s][:safe], other[s][:safe])
    # But the sums do reach ahead: before the change, the weights already differ.
    before = slice(safe, change - n)
    assert max(np.abs(got[s][before] - other[s][before]).max() for s in SOURCES) > 1e-4


def test_frames_are_powers_of_two():
    assert SoftMask().frame(22050) == 16384 and SoftMask().frame(44100) == 32768
    assert SoftMask(window=0.1).frame(22050) == 2048


class Mixer:
    """A model that gives each source a quarter of the mixture: masks change that."""

    def __init__(self, folder_info=None):
        from keras_sep.config import WaveUNetConfig

        self.arch_config = WaveUNetConfig.preset("tiny", segment_length=1024)
        self.folder_info = folder_info or {}

    def predict_on_batch(self, x):
        lows = np.cumsum(x, axis=1) * 0.01
        return {"vocals": x / 4, "drums": lows, "bass": x / 4, "other": x / 2 - lows}


def test_separate_masks_as_the_model_folder_says_and_not_otherwise():
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (2 * 22050, 2)).astype(np.float32)
    info = {"mask": {"window": 0.1, "power": 1.0}}
    plain = separate(Mixer(), x, tta=1)
    own = separate(Mixer(info), x, tta=1)
    assert max(np.abs(own[s] - plain[s]).max() for s in SOURCES) > 1e-2
    np.testing.assert_allclose(sum(own.values()), x, atol=1e-5)
    off = separate(Mixer(info), x, tta=1, mask=None)
    for s in SOURCES:
        np.testing.assert_array_equal(off[s], plain[s])
    asked = separate(Mixer(), x, tta=1, mask=SoftMask(window=0.1))
    for s in SOURCES:
        np.testing.assert_allclose(asked[s], own[s], atol=1e-7)


@pytest.mark.parametrize(
    "bad",
    [{"window": "long"}, {"power": 0}, {"window": -1}, {"bins": 3}, {"spatial": "yes"}]
    + [{"spatial": True, "lookahead": 0}],
)
def test_a_bad_mask_in_a_folder_is_a_one_line_model_folder_error(bad):
    with pytest.raises(ModelFolderError, match='bad "mask"') as e:
        model_mask(Mixer({"mask": bad}))
    assert "\n" not in str(e.value)
    assert model_mask(Mixer()) is None

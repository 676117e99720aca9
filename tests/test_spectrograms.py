"""The spectrogram figure: readable size, log frequency, silent stems, any number of stems."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from keras_sep.spectrograms import LOWEST_HZ, plot_spectrograms, spectrogram_db

RATE = 22050


def tone(hz: float, seconds: float = 2.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.stack([level * np.sin(2 * np.pi * hz * t)] * 2, axis=1).astype(np.float32)


def test_a_full_scale_sine_reads_0_dbfs_in_its_band_on_a_log_axis():
    image, step = spectrogram_db(tone(1000.0, level=1.0), RATE)
    edges = np.geomspace(LOWEST_HZ, RATE / 2, image.shape[0] + 1)
    band = np.searchsorted(edges, 1000.0) - 1
    assert image[:, 2:-2].max() == pytest.approx(image[band, 2:-2].max())
    # A band holds the mean power of the bins inside it: the peak reads a few dB below
    # 0 dBFS, never above it.
    assert -9 < image[band, 2:-2].mean() <= 0.5
    # Bass gets rows: 40 Hz and 80 Hz land in bands a full octave apart.
    assert np.searchsorted(edges, 80) - np.searchsorted(edges, 40) >= image.shape[0] // 10
    assert step > 0


@pytest.mark.parametrize("with_references", [True, False])
def test_the_figure_is_1600_px_wide_and_small(tmp_path, with_references):
    stems = {"vocals": tone(440), "drums": tone(80), "bass": tone(55)}
    mixture = sum(stems.values())
    references = None
    if with_references:
        references = dict(stems)
        references["drums"] = np.zeros_like(stems["drums"])  # a silent reference
    path = plot_spectrograms(
        tmp_path / "s.png",
        mixture,
        stems,
        RATE,
        references=references,
        notes={"vocals": "SDR 1.0 dB (mixture -5.0, silence 0.0)"},
        title="test",
    )
    with Image.open(path) as image:
        width, height = image.size
        assert width == 1600 and 500 < height < 2000
        assert image.mode == "P"  # a palette PNG
    assert path.stat().st_size < 300_000
    assert not list(tmp_path.glob("*.tmp"))

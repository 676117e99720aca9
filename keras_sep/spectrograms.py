"""The spectrogram figure of a separated song: ``keras-sep demo`` and ``separate --plot``.

One function draws both. With references (the demo), each source gets a row: its
reference and the estimate side by side on the reference's own dB scale, so leakage
shows as what it is, quieter than the target; the estimate's title carries its SDR next
to the mixture and silence baselines. Without references (any song), the stems are drawn
on the mixture's scale, so each one's share of the mix shows. Frequencies run on a log
axis from 30 Hz to the Nyquist frequency, where bass and kick drum get the rows they need.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from keras_sep.files import staged_file

LOWEST_HZ = 30.0
RANGE_DB = 60.0  # each row shows its loudest 60 dB: leakage below that is not heard
SILENT_DB = -100.0  # a panel whose loudest band is below this is silence
LEVELS = 32  # colours of 1.9 dB: the PNG stays small (the README's is under 300 kB)
FONT_PT = 12
WIDTH_IN, DPI = 16.0, 100  # 1600 px wide
# About one band per pixel row and one frame per pixel column of a panel, whatever the
# song's length: finer detail would not be drawn, and noise-like detail bloats the PNG.
BANDS = 120
MAX_FRAMES = 720
TICKS_HZ = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def spectrogram_db(
    audio: np.ndarray, rate: int, n_fft: int = 4096, bands: int = BANDS
) -> tuple[np.ndarray, float]:
    """(dB on log-spaced bands from 30 Hz to Nyquist, (bands, frames); seconds per frame).

    The channel mean's STFT, scaled so that a full-scale sine reads 0 dB (dBFS); each band is the
    mean power of the STFT bins inside it (interpolated where a band is narrower than a
    bin). The hop grows with the length so a long song gives at most ``MAX_FRAMES`` frames.
    """
    mono = np.asarray(audio, dtype=np.float32)
    mono = mono.mean(axis=1) if mono.ndim == 2 else mono
    if len(mono) < n_fft:
        mono = np.pad(mono, (0, n_fft - len(mono)))
    hop = max(256, -(-(len(mono) - n_fft) // MAX_FRAMES))
    frames = 1 + (len(mono) - n_fft) // hop
    window = np.hanning(n_fft).astype(np.float32)
    power = np.empty((n_fft // 2 + 1, frames), dtype=np.float32)
    for start in range(0, frames, 256):  # bounded memory for long songs
        stop = min(frames, start + 256)
        index = np.arange(n_fft)[None, :] + hop * np.arange(start, stop)[:, None]
        spectrum = np.fft.rfft(mono[index] * window, axis=1)
        power[:, start:stop] = (np.abs(spectrum) / (window.sum() / 2)).T ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    edges = np.geomspace(LOWEST_HZ, rate / 2, bands + 1)
    total = np.concatenate([np.zeros((1, frames), np.float32), np.cumsum(power, axis=0)])
    lo, hi = np.searchsorted(freqs, edges[:-1]), np.searchsorted(freqs, edges[1:])
    out = np.empty((bands, frames), dtype=np.float32)
    for b in range(bands):
        if hi[b] > lo[b]:
            out[b] = (total[hi[b]] - total[lo[b]]) / (hi[b] - lo[b])
        else:  # narrower than a bin (low frequencies): interpolate at its centre
            centre = np.sqrt(edges[b] * edges[b + 1])
            k = min(max(np.searchsorted(freqs, centre), 1), len(freqs) - 1)
            w = (centre - freqs[k - 1]) / (freqs[k] - freqs[k - 1])
            out[b] = (1 - w) * power[k - 1] + w * power[k]
    return 10 * np.log10(out + 1e-12), hop / rate


def plot_spectrograms(
    path: str | os.PathLike,
    mixture: np.ndarray,
    stems: Mapping[str, np.ndarray],
    rate: int,
    *,
    references: Mapping[str, np.ndarray] | None = None,
    notes: Mapping[str, str] | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Draw the figure (PNG, 1600 px wide) into ``path``; see the module docstring.

    ``stems`` are the estimates; ``references`` (optional) the true sources; ``notes``
    text after a stem's name in its title (its SDR and the baselines'). Arrays are
    (time, channels) at ``rate``; each is read once, so a lazy mapping keeps memory low.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import gridspec
    from matplotlib.figure import Figure

    notes = notes or {}
    names = list(stems)
    mix_db, step = spectrogram_db(mixture, rate)
    seconds = mix_db.shape[1] * step
    if references is not None:
        rows = [
            [(f"{name}: reference", references[name]), (f"{name}: estimate", stems[name])]
            for name in names
        ]
    else:
        pairs = [names[i : i + 2] for i in range(0, len(names), 2)]
        rows = [[(f"{name}", stems[name]) for name in pair] for pair in pairs]
    fig = Figure(figsize=(WIDTH_IN, 0.6 + 2.45 * (len(rows) + 1)), dpi=DPI)
    grid = gridspec.GridSpec(
        len(rows) + 1, 3, figure=fig, width_ratios=[1, 1, 0.025], wspace=0.12, hspace=0.55
    )
    plt_kw = {"fontsize": FONT_PT}
    top = mix_db.max()
    axes = []

    def draw(ax, image, label, vmax):
        shown = ax.imshow(
            image,
            origin="lower",
            aspect="auto",
            cmap=matplotlib.colormaps["magma"].resampled(LEVELS),
            vmin=vmax - RANGE_DB,
            vmax=vmax,
            extent=(0, seconds, np.log10(LOWEST_HZ), np.log10(rate / 2)),
            interpolation="nearest",
        )
        ax.set_title(label, loc="left", **plt_kw)
        ticks = [f for f in TICKS_HZ if f < rate / 2]
        ax.set_yticks(np.log10(ticks), [f"{f // 1000}k" if f >= 1000 else str(f) for f in ticks])
        ax.tick_params(labelsize=FONT_PT - 1)
        axes.append(ax)
        return shown

    def colour_bar(shown, row):
        bar = fig.colorbar(shown, cax=fig.add_subplot(grid[row, 2]))
        bar.set_label("dBFS", **plt_kw)
        bar.ax.tick_params(labelsize=FONT_PT - 1)

    shown = draw(fig.add_subplot(grid[0, :2]), mix_db, "mixture", top)
    colour_bar(shown, 0)
    for r, row in enumerate(rows, 1):
        images = [spectrogram_db(audio, rate)[0] for _, audio in row]
        # With references, a row's scale is its reference's: the estimate is drawn on it.
        vmax = images[0].max() if references is not None else top
        vmax = top if vmax <= SILENT_DB else vmax  # a silent reference: the mixture's scale
        for c, ((label, _), image) in enumerate(zip(row, images, strict=True)):
            name = label.split(":")[0]
            if image.max() <= SILENT_DB:
                label += ", silent"
            if references is None or c == 1:
                label += f", {notes[name]}" if name in notes else ""
            where = grid[r, c] if len(row) == 2 else grid[r, :2]
            shown = draw(fig.add_subplot(where), image, label, vmax)
        colour_bar(shown, r)
    for ax in axes:
        ax.set_xlim(0, seconds)
        if ax.get_subplotspec().colspan.start == 0:
            ax.set_ylabel("Hz", **plt_kw)
    for ax in axes[-len(rows[-1]) :]:
        ax.set_xlabel("seconds", **plt_kw)
    if title:
        fig.suptitle(title, fontsize=FONT_PT + 2, x=0.06, ha="left")
    fig.subplots_adjust(left=0.06, right=0.95, top=1 - 0.75 / fig.get_figheight(), bottom=0.06)
    return _save_png(fig, Path(path), overwrite)


class _Files(Mapping):
    """{name: audio} read from files on access, so only one is in memory at a time."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def __getitem__(self, name: str) -> np.ndarray:
        from keras_sep.audio import read_audio

        return read_audio(self.files[name])[0]

    def __iter__(self):
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def plot_separated(
    song: str | os.PathLike,
    stems: Mapping[str, Path],
    path: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """The figure of a separated song from its file and its stem files (no references)."""
    from keras_sep.audio import read_audio

    mixture, rate = read_audio(song)
    title = f"{Path(song).name}: the stems on the mixture's dB scale"
    return plot_spectrograms(path, mixture, _Files(stems), rate, title=title, overwrite=overwrite)


def _save_png(fig, path: Path, overwrite: bool = False) -> Path:
    """Save ``fig`` as a palette PNG (a third of the size, no visible loss), atomically."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(2 * LEVELS, dither=Image.Dither.NONE)
    with staged_file(path, suffix=".png", overwrite=overwrite) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path

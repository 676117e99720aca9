"""Audio I/O in one module: decode, check, resample, channel handling, atomic write.

Decoding uses soundfile (libsndfile: wav, flac, ogg, mp3 and more), which works with
every Keras backend and needs no TensorFlow; formats it cannot open (m4a/aac, mp4, ...)
go through the ``ffmpeg`` command when it is on PATH. tensorflow-io is available as
``decoder="tfio"`` with the ``[tfio]`` extra: it reads the same formats as soundfile (not
AAC), so it is never the default. Resampling is scipy's polyphase filter
(``resample_poly``'s, exact for rational ratios such as 44100 -> 22050 Hz), computed here
in NumPy, which is faster and spares ``separate`` the import of scipy.signal (0.6 to 0.9 s
on a 2-core machine).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from keras_sep.errors import AudioError, AudioWarning
from keras_sep.files import staged_file, staged_files

DECODERS = ("auto", "soundfile", "ffmpeg", "tfio")
# decoder="tfio" comes with this extra, which holds TensorFlow at the one series it works with.
TFIO_EXTRA = "keras-sep[tfio]"
TFIO_TENSORFLOW = "2.17"
# Output formats: extension -> (soundfile format, subtype by bit depth). The first bit
# depth is the default; lossy formats have none (key None).
WRITE_FORMATS = {
    "wav": ("WAV", {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}),
    "flac": ("FLAC", {"16": "PCM_16", "24": "PCM_24"}),
    "ogg": ("OGG", {None: "VORBIS"}),
    "mp3": ("MP3", {None: "MPEG_LAYER_III"}),
}
MIN_SECONDS = 0.01
# Frames decoded at a time when streaming: 1.5 s at 44.1 kHz, 0.5 MB of stereo float32.
BLOCK_FRAMES = 1 << 16
# Resampling computes each output phase in a product of its own; rate pairs with more
# phases (no large common divisor, such as 44099 -> 22050 Hz) use scipy's resample_poly.
MAX_PHASES = 1024
# resample_poly's default filter: this many zero crossings of its sinc either side, so
# 10 * max(up, down) taps each side at the upsampled rate.
ZERO_CROSSINGS = 10


class AudioReader:
    """Decoded audio read block by block: ``rate``, ``frames``, ``channels``, ``read(n)``."""

    def __init__(self, name: str, rate: int, frames: int, channels: int, read) -> None:
        self.name, self.rate, self.frames, self.channels = name, rate, frames, channels
        self._read = read

    @classmethod
    def from_array(cls, audio: np.ndarray, rate: int, name: str = "audio") -> AudioReader:
        """A reader over (time, channels) audio already in memory."""
        position = 0

        def read(n: int) -> np.ndarray:
            nonlocal position
            stop = len(audio) if n < 0 else min(len(audio), position + n)
            block, position = audio[position:stop], stop
            return block

        return cls(name, rate, len(audio), audio.shape[1], read)

    def read(self, frames: int = -1) -> np.ndarray:
        """The next ``frames`` frames (all that is left if negative) as (time, channels) float32."""
        return self._read(frames)


@contextmanager
def open_audio(path: str | os.PathLike, decoder: str = "auto") -> Iterator[AudioReader]:
    """Open a file for reading in blocks, or raise ``AudioError`` saying why it cannot be.

    soundfile formats are decoded as they are read; ffmpeg decodes to a temporary wav
    first; tensorflow-io decodes the whole file into memory.
    """
    path = Path(path)
    if decoder not in DECODERS:
        raise AudioError(f"unknown decoder {decoder!r}; valid decoders: {list(DECODERS)}")
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path} is empty (0 bytes); pass an audio file")
    with ExitStack() as stack:
        if decoder == "tfio":
            audio, rate = _read_tfio(path)
            reader = AudioReader.from_array(audio, rate, str(path))
        elif decoder == "ffmpeg":
            reader = stack.enter_context(_open_ffmpeg(path))
        else:
            try:
                reader = stack.enter_context(_open_soundfile(path))
            except AudioError:
                if decoder == "soundfile" or shutil.which("ffmpeg") is None:
                    raise
                reader = stack.enter_context(_open_ffmpeg(path))
        yield reader


def read_audio(path: str | os.PathLike, decoder: str = "auto") -> tuple[np.ndarray, int]:
    """Decode a file to (time, channels) float32 and its sample rate, or raise ``AudioError``."""
    with open_audio(path, decoder) as reader:
        audio = reader.read()
    return check_audio(audio, reader.rate, str(path)), reader.rate


@contextmanager
def _open_soundfile(path: Path, name: str | None = None) -> Iterator[AudioReader]:
    import soundfile as sf

    name = name or str(path)
    hint = "use wav, flac, ogg or mp3, or install ffmpeg for other formats"
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{name} is not audio that soundfile can decode ({str(e).strip()}); {hint}"
        ) from None

    position = 0

    def read(n: int) -> np.ndarray:
        nonlocal position
        try:
            block = f.read(n, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(
                f"{name} cannot be decoded after {position / f.samplerate:.2f} s ({e}); "
                "the file is damaged or truncated: re-export or re-download it"
            ) from None
        position += len(block)
        return block

    with f:
        promised = wav_data_frames(path)
        if promised is not None and promised > f.frames:
            warnings.warn(
                f"{name} is truncated: its header promises {promised / f.samplerate:.2f} s but "
                f"the file holds {f.frames / f.samplerate:.2f} s; using the "
                f"{f.frames / f.samplerate:.2f} s read",
                AudioWarning,
                stacklevel=4,
            )
        yield AudioReader(name, int(f.samplerate), f.frames, f.channels, read)


def wav_data_frames(path: Path) -> int | None:
    """The frame count a wav file's header announces, or None if it is not a plain wav."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block_align, offset = None, 12
    while offset + 8 <= len(head):
        chunk, size = (
            head[offset : offset + 4],
            int.from_bytes(head[offset + 4 : offset + 8], "little"),
        )
        if chunk == b"fmt ":
            block_align = int.from_bytes(head[offset + 20 : offset + 22], "little")
        elif chunk == b"data":
            # 0 and 0xFFFFFFFF are placeholders written by streaming encoders: no promise.
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        offset += 8 + size + (size & 1)
    return None


@contextmanager
def _open_ffmpeg(path: Path) -> Iterator[AudioReader]:
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{path}: decoding this format needs ffmpeg on PATH (apt install ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "decoded.wav"
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-c:a", "pcm_f32le", str(wav)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode or not wav.exists():
            reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise AudioError(f"{path} is not audio that ffmpeg can decode ({reason})")
        with _open_soundfile(wav, str(path)) as reader:
            yield reader


def _read_tfio(path: Path) -> tuple[np.ndarray, int]:
    from keras_sep.errors import MissingDependencyError, require

    tf = require("tensorflow", "decoder='tfio'", TFIO_EXTRA)
    tfio = require("tensorflow_io", "decoder='tfio'", TFIO_EXTRA)
    # tensorflow-io's last release imports under any TensorFlow, but its ops load only in the
    # 2.17 it was built for; elsewhere every call fails with an undefined symbol.
    if not tf.__version__.startswith(TFIO_TENSORFLOW + "."):
        raise MissingDependencyError(
            f"decoder='tfio' needs TensorFlow {TFIO_TENSORFLOW} (tensorflow-io's last release "
            f'was built for it), not {tf.__version__}; pip install "{TFIO_EXTRA}" in its own '
            f"environment, or use decoder='auto'"
        )
    try:
        stream = tfio.audio.AudioIOTensor(str(path))
        audio = stream.to_tensor().numpy()
        rate = int(stream.rate.numpy())
    except Exception as e:  # TF raises InvalidArgumentError and friends
        reason = str(e).strip().splitlines()[-1][:200]
        raise AudioError(f"{path} is not audio that tensorflow-io can decode ({reason})") from None
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    elif audio.dtype == np.int32:
        audio = audio.astype(np.float32) / 2147483648.0
    return audio.astype(np.float32), rate


def check_audio(audio: np.ndarray, rate: int, name: str = "audio") -> np.ndarray:
    """``audio`` as (time, channels) float32, or ``AudioError`` saying what is wrong."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise AudioError(f"{name}: expected (time, channels) audio, got shape {audio.shape}")
    if audio.shape[1] == 0:
        raise AudioError(f"{name} contains no samples")
    check_length(audio.shape[0], rate, name)
    check_finite(audio, name)
    return audio


def check_length(frames: int, rate: int, name: str = "audio") -> None:
    """Refuse audio too short to separate, with a message saying how short."""
    if frames == 0:
        raise AudioError(f"{name} contains no samples")
    if frames < MIN_SECONDS * rate:
        raise AudioError(
            f"{name} is too short ({frames} samples, {1000 * frames / rate:.1f} ms); "
            f"at least {1000 * MIN_SECONDS:.0f} ms are needed"
        )


def check_finite(audio: np.ndarray, name: str = "audio") -> None:
    """Refuse NaN or infinite samples, which would poison every stem."""
    if not np.isfinite(audio).all():
        raise AudioError(f"{name} contains NaN or infinite samples; fix or re-export the file")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (time, channels) audio with a polyphase filter; length ceil(T * out / in)."""
    if rate_in == rate_out:
        return audio
    return Resampler(rate_in, rate_out)(audio, last=True)


@functools.lru_cache(maxsize=16)
def _polyphase_filter(up: int, down: int) -> tuple[np.ndarray, np.ndarray]:
    """scipy's ``resample_poly(x, up, down)`` filter, one row per output phase: output
    ``k * up + r`` is ``sum_t taps[r, t] * x[k * down + starts[r] + t]``.

    The filter is resample_poly's default: scipy's ``firwin`` low-pass with a Kaiser
    window (beta 5), cut off at the lower of the two Nyquist rates, 10 zero crossings
    either side, unit gain at 0 Hz, in float32, times ``up``.
    """
    rate = max(up, down)
    half = ZERO_CROSSINGS * rate
    h = np.sinc(np.arange(-half, half + 1) / rate) * np.kaiser(2 * half + 1, 5.0)
    h = (h / h.sum()).astype(np.float32)
    h *= up
    count = -(-len(h) // up)  # taps per phase
    # Output m is sum_t h[phase + t * up] * x[base - t], (base, phase) = divmod(m*down + half, up).
    base, phase = np.divmod(np.arange(up) * down + half, up)
    h = np.concatenate([h, np.zeros(up, np.float32)])  # a phase's last taps may fall past h
    taps = h[phase[:, None] + (count - 1 - np.arange(count)) * up]  # t reversed: x forwards
    return taps, base - (count - 1)


def _polyphase(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down, axis=0)`` for (time, channels) x, in
    float32, the same to float32 rounding. One product per output phase over strided
    windows of x (not copied), in NumPy's own loops: no BLAS threads beside the model's."""
    if up > MAX_PHASES:
        from scipy.signal import resample_poly

        return resample_poly(np.asarray(x, np.float32), up, down, axis=0).astype(np.float32)
    taps, starts = _polyphase_filter(up, down)
    first = int(starts.min())
    width = int(starts.max()) - first + taps.shape[1]
    outputs = -(-len(x) * up // down)
    rows = -(-outputs // up)
    if rows == 0:
        return np.zeros((0, x.shape[1]), np.float32)
    # Channels first, with zeros around x so that every window lies inside.
    front = max(0, -first)
    back = max(0, (rows - 1) * down + first + width - len(x))
    padded = np.zeros((x.shape[1], front + len(x) + back), np.float32)
    padded[:, front : front + len(x)] = x.T
    windows = np.lib.stride_tricks.sliding_window_view(padded[:, front + first :], width, axis=1)
    windows = windows[:, ::down][:, :rows]  # (channels, rows, width), a view
    y = np.empty((rows, up, x.shape[1]), np.float32)  # output k * up + r is y[k, r]
    for r, start in enumerate(starts - first):
        part = windows[:, :, start : start + taps.shape[1]]
        np.einsum("crw,w->rc", part, taps[r], out=y[:, r])
    return y.reshape(-1, x.shape[1])[:outputs]


class Resampler:
    """``resample`` for a stream cut into blocks of any size, with the same result.

    scipy's polyphase filter reaches a fixed number of input samples either side of each
    output, so the outputs whose inputs have all arrived are computed from a chunk that
    starts on a multiple of the decimation factor (keeping output indices aligned) and the
    rest wait for the next block. Memory holds one block plus the filter's reach.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        g = math.gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        # The filter has ZERO_CROSSINGS * max(up, down) taps each side at the
        # upsampled rate.
        self.reach = ZERO_CROSSINGS * max(self.up, self.down) // self.up + 2
        self.pending: np.ndarray | None = None
        self.start = self.done = self.seen = 0

    def _first_input(self, output: int) -> int:
        return max(0, (output * self.down // self.up - self.reach) // self.down * self.down)

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """The outputs that ``block`` completes (all the remaining ones if ``last``)."""
        if self.up == self.down:
            return block
        buf = block if self.pending is None else np.concatenate([self.pending, block])
        self.seen += len(block)
        if last:
            stop = -(-self.seen * self.up // self.down)
        else:
            stop = max(0, (self.seen - self.reach) * self.up // self.down)
        self.pending = buf
        if stop <= self.done:
            return np.zeros((0, *block.shape[1:]), dtype=np.float32)
        first = self._first_input(self.done)
        y = _polyphase(buf[first - self.start :], self.up, self.down)
        offset = first * self.up // self.down
        out = y[self.done - offset : stop - offset].astype(np.float32)
        self.done = stop
        keep = self._first_input(stop)
        self.pending, self.start = buf[keep - self.start :], keep
        return out


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the time axis to ``length`` samples."""
    if audio.shape[0] >= length:
        return audio[:length]
    return np.pad(audio, [(0, length - audio.shape[0])] + [(0, 0)] * (audio.ndim - 1))


def match_channels(audio: np.ndarray, channels: int, name: str = "audio") -> np.ndarray:
    """Give (time, c) audio the model's channel count: mono duplicated, extra channels refused."""
    have = audio.shape[1]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=1)
    raise AudioError(
        f"{name} has {have} channels but the model takes {channels}; "
        f"downmix it first, e.g. ffmpeg -i IN -ac {channels} OUT.wav"
    )


def sound_format(fmt: str, bit_depth: str | None = None) -> tuple[str, str]:
    """soundfile's (format, subtype) for an output format and bit depth, or ``AudioError``."""
    if fmt not in WRITE_FORMATS:
        raise AudioError(f"cannot write {fmt!r} files; use one of {list(WRITE_FORMATS)}")
    name, subtypes = WRITE_FORMATS[fmt]
    if bit_depth is None:
        bit_depth = next(iter(subtypes))
    if bit_depth not in subtypes:
        if None in subtypes:
            raise AudioError(
                f"{fmt} is a lossy format without a bit depth; leave the bit depth out"
            )
        raise AudioError(f"{fmt} supports bit depths {list(subtypes)}, not {bit_depth!r}")
    return name, subtypes[bit_depth]


def _open_for_writing(path: Path, rate: int, channels: int, fmt: str, bit_depth: str | None):
    import soundfile as sf

    format_, subtype = sound_format(fmt, bit_depth)
    try:
        f = sf.SoundFile(path, "w", rate, channels, subtype, format=format_)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise _write_error(
            path, e, f"cannot write {fmt} at {rate} Hz, {channels} channel(s)"
        ) from None
    # PCM and lossy encoders cannot hold values beyond full scale: clip rather than wrap.
    clip = subtype != "FLOAT"

    def write(audio: np.ndarray) -> None:
        audio = np.asarray(audio, dtype=np.float32)
        try:
            f.write(np.clip(audio, -1.0, 1.0) if clip else audio)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise _write_error(path, e, f"cannot write {fmt}") from None

    @contextmanager
    def closing() -> Iterator[None]:
        try:
            yield
        finally:
            try:
                f.close()
            except (sf.LibsndfileError, RuntimeError) as e:
                raise _write_error(path, e, f"cannot finish {fmt}") from None

    return closing(), write


def _write_error(path: Path, error: Exception, what: str) -> Exception:
    """libsndfile says only "System error." when the disk fills: name the real cause."""
    import errno

    try:
        stats = os.statvfs(path.parent)
        full = stats.f_bavail * stats.f_frsize < 1 << 20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent))
    return AudioError(f"{what} ({str(error).strip()}); choose another format")


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    rate: int,
    bit_depth: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write (time, channels) audio as wav, flac, ogg or mp3 (by extension), atomically.

    The file is written under a temporary name in the same folder and renamed
    (``keras_sep.files``), so a failure never leaves a truncated file, and a file that
    keras-sep did not write is not replaced unless ``overwrite``. Output is clipped to
    [-1, 1] except float wav.
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in WRITE_FORMATS:
        raise AudioError(f"cannot write {path.name}: use one of {list(WRITE_FORMATS)}")
    sound_format(ext, bit_depth)
    audio = np.asarray(audio, dtype=np.float32)
    audio = audio[:, None] if audio.ndim == 1 else audio
    with staged_file(path, overwrite=overwrite) as tmp:
        f, write = _open_for_writing(tmp, rate, audio.shape[-1], ext, bit_depth)
        with f:
            write(audio)
    return path


@contextmanager
def stem_writer(
    folder: str | os.PathLike,
    names: list[str],
    rate: int,
    channels: int,
    fmt: str = "wav",
    bit_depth: str | None = None,
    overwrite: bool = False,
) -> Iterator[Callable[[dict[str, np.ndarray]], None]]:
    """Stream stems into ``folder/<name>.<fmt>``, all or nothing.

    Yields ``write({name: block})``, called with consecutive blocks of every stem; each
    file is written under a temporary name and all are published when the block ends
    (``keras_sep.files.staged_files``). Other files in ``folder`` are left alone.
    """
    sound_format(fmt, bit_depth)
    paths = [Path(folder) / f"{name}.{fmt}" for name in names]
    with staged_files(paths, overwrite, stems=True) as temps, ExitStack() as files:
        writers = {}
        for name, path in zip(names, paths, strict=True):
            f, writers[name] = _open_for_writing(temps[path], rate, channels, fmt, bit_depth)
            files.enter_context(f)

        def write(blocks: dict[str, np.ndarray]) -> None:
            for name, write_one in writers.items():
                write_one(blocks[name])

        yield write


def write_stems(
    folder: str | os.PathLike,
    stems: dict[str, np.ndarray],
    rate: int,
    fmt: str = "wav",
    bit_depth: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``folder/<stem>.<fmt>`` for every (time, channels) stem, all or nothing."""
    stems = {k: np.asarray(v, dtype=np.float32) for k, v in stems.items()}
    stems = {k: v[:, None] if v.ndim == 1 else v for k, v in stems.items()}
    channels = next(iter(stems.values())).shape[-1]
    with stem_writer(folder, list(stems), rate, channels, fmt, bit_depth, overwrite) as write:
        write(stems)
    return Path(folder)

"""Audio I/O in one module: decode, check, resample, channel handling, atomic write.

Decoding uses soundfile (libsndfile: wav, flac, ogg, mp3 and more), which works with
every Keras backend and needs no TensorFlow; formats it cannot open (m4a/aac, mp4, ...)
go through the ``ffmpeg`` command when it is on PATH. tensorflow-io is available as
``decoder="tfio"``: it reads the same formats as soundfile (not AAC), so it is never the
default. Resampling uses scipy's polyphase filter, exact for rational ratios such as
44100 -> 22050 Hz and identical on every machine.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from keras_sep.errors import AudioError
from keras_sep.files import staged_dir, staged_file

DECODERS = ("auto", "soundfile", "ffmpeg", "tfio")
# Output formats: extension -> (soundfile format, subtypes by bit depth name).
WRITE_FORMATS = {
    "wav": ("WAV", {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}),
    "flac": ("FLAC", {"16": "PCM_16", "24": "PCM_24"}),
}
MIN_SECONDS = 0.01


def read_audio(path: str | os.PathLike, decoder: str = "auto") -> tuple[np.ndarray, int]:
    """Decode a file to (time, channels) float32 and its sample rate, or raise ``AudioError``."""
    path = Path(path)
    if decoder not in DECODERS:
        raise AudioError(f"unknown decoder {decoder!r}; valid decoders: {list(DECODERS)}")
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path} is empty (0 bytes); pass an audio file")
    if decoder == "tfio":
        audio, rate = _read_tfio(path)
    elif decoder == "ffmpeg":
        audio, rate = _read_ffmpeg(path)
    else:
        try:
            audio, rate = _read_soundfile(path)
        except AudioError:
            if decoder == "soundfile" or shutil.which("ffmpeg") is None:
                raise
            audio, rate = _read_ffmpeg(path)
    return check_audio(audio, rate, str(path)), rate


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{path} is not audio that soundfile can decode ({str(e).strip()}); "
            "use wav, flac, ogg or mp3, or install ffmpeg for other formats"
        ) from None
    return audio, int(rate)


def _read_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"{path}: decoding this format needs ffmpeg on PATH (apt install ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "decoded.wav"
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-c:a", "pcm_f32le", str(wav)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode or not wav.exists():
            reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise AudioError(f"{path} is not audio that ffmpeg can decode ({reason})")
        return _read_soundfile(wav)


def _read_tfio(path: Path) -> tuple[np.ndarray, int]:
    from keras_sep.errors import require

    require("tensorflow", "decoder='tfio'")
    tfio = require("tensorflow_io", "decoder='tfio'")
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
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise AudioError(f"{name} contains no samples")
    if audio.shape[0] < MIN_SECONDS * rate:
        raise AudioError(
            f"{name} is too short ({audio.shape[0]} samples, "
            f"{1000 * audio.shape[0] / rate:.1f} ms); "
            f"at least {1000 * MIN_SECONDS:.0f} ms are needed"
        )
    if not np.isfinite(audio).all():
        raise AudioError(f"{name} contains NaN or infinite samples; fix or re-export the file")
    return audio


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (time, channels) audio with a polyphase filter; length ceil(T * out / in)."""
    if rate_in == rate_out:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(rate_in, rate_out)
    return resample_poly(audio, rate_out // g, rate_in // g, axis=0).astype(np.float32)


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


def write_audio(
    path: str | os.PathLike, audio: np.ndarray, rate: int, bit_depth: str = "16"
) -> Path:
    """Write (time, channels) audio as wav or flac (by extension), atomically.

    The file is written under a temporary name in the same folder and renamed, so a
    failure never leaves a truncated file. PCM output is clipped to [-1, 1].
    """
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in WRITE_FORMATS:
        raise AudioError(f"cannot write {path.name}: use one of {sorted(WRITE_FORMATS)}")
    fmt, subtypes = WRITE_FORMATS[ext]
    if bit_depth not in subtypes:
        raise AudioError(f"{ext} supports bit depths {sorted(subtypes)}, not {bit_depth!r}")
    import soundfile as sf

    audio = np.asarray(audio, dtype=np.float32)
    if subtypes[bit_depth] != "FLOAT":
        audio = np.clip(audio, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path) as tmp:
        sf.write(tmp, audio, rate, format=fmt, subtype=subtypes[bit_depth])
    return path


def write_stems(
    folder: str | os.PathLike,
    stems: dict[str, np.ndarray],
    rate: int,
    fmt: str = "wav",
    bit_depth: str = "16",
) -> Path:
    """Write ``folder/<stem>.<fmt>`` for every stem, all or nothing.

    The files go to a temporary sibling folder that replaces ``folder`` only once every
    stem is written, so a failure leaves neither a partial set nor a half-written file.
    """
    with staged_dir(folder) as staging:
        for name, audio in stems.items():
            write_audio(staging / f"{name}.{fmt}", audio, rate, bit_depth)
    return Path(folder)

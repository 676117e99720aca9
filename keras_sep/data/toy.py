"""Built-in synthetic songs: four distinct, separable stems from a seed, in pure numpy.

Tests, CI and a first run train and evaluate on these, so a song needs nothing beyond
numpy and takes a fraction of a second. Each seed draws its own key, scale, chord loop,
tempo, groove, timbres, panning and levels:

- drums: kick (falling sine sweep), snare (noise burst + tone body), hi-hats (high-passed
  noise), toms and crash, in grooves with ghost notes and fills.
- bass: a monophonic line on the chord roots (about 40-160 Hz), band-limited saw, square
  or pulse tones through a plucked low-pass, with rests and slides.
- other: held chords, comping, strums or arpeggios (about 200-2000 Hz) from additive
  piano, e-piano, organ, pad or guitar timbres.
- vocals: a sung lead by source-filter synthesis: a glottal source with vibrato, scoops
  and glides through four vowel formants that change per syllable, plus consonant noise.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_sep.config import SOURCES
from keras_sep.files import atomic_write_text

# Song collections by seed: training draws from seed 0 and validates on seed 1; seed 2 is
# held out for evaluation and the demo, so no model trained on toy songs has heard it.
TRAIN_SEED, VALID_SEED, HELD_OUT_SEED = 0, 1, 2

_SCALES = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # natural minor
    (0, 2, 3, 5, 7, 9, 10),  # dorian
    (0, 2, 4, 5, 7, 9, 10),  # mixolydian
)
# Scale degrees (0 = tonic), one chord per bar or per two bars: common pop/rock loops.
_PROGRESSIONS = (
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (5, 3, 0, 4),
    (0, 3, 4, 4),
    (0, 3, 0, 4),
    (1, 4, 0, 0),
    (0, 6, 5, 4),
    (3, 4, 2, 5),
)
# Rhythms in 16th steps of a 4/4 bar; (step, length) where a length is given.
_KICKS = ((0, 8), (0, 6, 8), (0, 10), (0, 3, 8, 11), (0, 7, 8, 14), (0, 8, 10), (0, 4, 8, 12))
_BASS_RHYTHMS = (
    ((0, 4), (4, 4), (8, 4), (12, 4)),
    ((0, 6), (6, 2), (8, 6), (14, 2)),
    ((0, 8), (8, 8)),
    tuple((s, 2) for s in range(0, 16, 2)),
    ((0, 3), (3, 3), (6, 2), (8, 3), (11, 3), (14, 2)),
    ((0, 2), (4, 2), (6, 2), (10, 2), (12, 4)),
)
_COMP_RHYTHMS = (
    ((0, 3), (4, 3), (8, 3), (12, 3)),
    ((2, 2), (6, 2), (10, 2), (14, 2)),
    ((0, 6), (6, 6), (12, 4)),
    ((0, 2), (3, 3), (6, 4), (10, 2), (12, 4)),
)
# Formants F1-F4 in Hz of a, e, i, o, u, ae (Peterson & Barney 1952, adult male; F4 approx.).
_VOWELS = np.array(
    [
        [730, 1090, 2440, 3400],
        [530, 1840, 2480, 3500],
        [270, 2290, 3010, 3600],
        [570, 840, 2410, 3300],
        [300, 870, 2240, 3300],
        [660, 1720, 2410, 3400],
    ],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([80.0, 100.0, 150.0, 250.0])
_TIMBRES = ("piano", "epiano", "organ", "pad", "guitar")
# Single-cycle wavetable size: linear interpolation keeps its error near -90 dB.
_TABLE = 2048
# Harmonics stop here (and below Nyquist) so tonal stems stay clear of the hi-hat band.
_TONAL_MAX_HZ = 8000.0


@dataclass(frozen=True)
class _Note:
    start: float  # seconds
    length: float  # seconds, until release
    pitch: float  # MIDI note number
    gain: float
    pan: float = 0.0  # -1 (left) .. 1 (right)
    slide: bool = False  # bass: slide up into the note
    legato: bool = False  # vocals: glide from the previous note, same breath
    vowel: int = 0  # vocals: row of _VOWELS
    consonant: str = ""  # vocals: "", "s", "t" or "k" before the vowel


@dataclass(frozen=True)
class _Score:
    drums: list[tuple[str, float, float]]  # (hit kind, start s, gain)
    bass: list[_Note]
    other: list[_Note]
    vocals: list[_Note]
    timbre: str  # the "other" instrument


def generate_song(
    seed: int, seconds: float = 20.0, sample_rate: int = 22050, missing: float = 0.0
) -> dict[str, np.ndarray]:
    """The four stems of one song, deterministic from ``seed`` (an int >= 0).

    Each stem is (round(seconds * sample_rate), 2) float32; their sum peaks at 0.6-0.9.
    ``missing``: the probability that the song has no vocals at all, and (drawn apart)
    that its bass rests through a section; silent stems are all zeros. With 0 (the
    default) a seed gives the same song as before the option existed.
    """
    n = round(seconds * sample_rate) if seconds > 0 and sample_rate > 0 else 0
    if n < 1:
        raise ValueError(
            f"seconds and sample_rate must be positive and give at least one sample, "
            f"got seconds={seconds}, sample_rate={sample_rate}"
        )
    # Separate streams for the score and each stem, so one part's draws never shift another's.
    # (Children of a SeedSequence depend on their index only: spawning a seventh for the
    # missing stems leaves the first six, and so every earlier song, unchanged.)
    score_rng, drum_rng, bass_rng, other_rng, vocal_rng, mix_rng, missing_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(7)
    )
    score = _compose(score_rng, seconds)
    stems = {
        "vocals": _render_vocals(vocal_rng, score.vocals, n, sample_rate),
        "drums": _render_drums(drum_rng, score.drums, n, sample_rate),
        "bass": _render_tonal(_bass_timbre(bass_rng), score.bass, n, sample_rate),
        "other": _render_tonal(_other_timbre(other_rng, score.timbre), score.other, n, sample_rate),
    }
    if missing > 0:
        _drop_stems(missing_rng, stems, missing, sample_rate)
    return _balance(mix_rng, stems)


def _drop_stems(
    rng: np.random.Generator, stems: dict[str, np.ndarray], chance: float, sr: int
) -> None:
    """With probability ``chance`` silence the vocals (the whole song); with probability
    ``chance`` silence the bass over a section (a quarter to half of the song)."""
    from keras_sep.data.timbre import silence_mask

    no_vocals, bass_rests = rng.random() < chance, rng.random() < chance
    start = rng.uniform(0.0, 0.6)
    span = (start, start + rng.uniform(0.25, 0.5))
    if no_vocals:
        stems["vocals"][:] = 0.0
    if bass_rests:
        stems["bass"] *= silence_mask(stems["bass"].shape[1], span, sr)


def song_name(index: int) -> str:
    """The name of toy song ``index`` (0-based): 0 -> 'Toy Song 001'."""
    return f"Toy Song {index + 1:03d}"


def song_seed(seed: int, index: int) -> int:
    """The ``generate_song`` seed of song ``index`` of the collection ``seed``."""
    return seed * 1000 + index


def write_musdb_tree(
    root: str | os.PathLike,
    train: int = 8,
    valid: int = 2,
    test: int = 3,
    seconds: float = 20.0,
    sample_rate: int = 44100,
    seed: int = 0,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write toy songs in MUSDB18-HQ layout: root/{train,test}/<song>/<stem>.wav, 16-bit PCM.

    Song i (train, then valid, then test) is ``generate_song(song_seed(seed, i))`` named
    ``song_name(i)``. Validation songs live in train/ and are listed in root/setup.yaml
    (musdb's own setup with ``validation_tracks`` replaced), for
    ``musdb.DB(root, is_wav=True, subsets="train", split="valid", setup_file="setup.yaml")``.
    Stems are rounded to the 16-bit grid first, so mixture.wav is exactly their sum.
    Files keras-sep wrote there before are replaced; any other file in the way (a user's
    ``setup.yaml``, another dataset's song) is an ``OutputExistsError`` raised before
    anything is written, unless ``overwrite``. Other files under ``root`` are left alone.
    """
    from keras_sep.audio import write_audio
    from keras_sep.files import check_free

    if min(train, valid, test) < 0:
        raise ValueError(f"song counts must be >= 0, got train={train} valid={valid} test={test}")
    root = Path(root)
    plan = ["train"] * (train + valid) + ["test"] * test
    for i, subset in enumerate(plan):
        for name in (*SOURCES, "mixture"):
            check_free(root / subset / song_name(i) / f"{name}.wav", overwrite)
    check_free(root / "setup.yaml", overwrite)
    from keras_sep.progress import Progress

    bar = Progress("toy songs", len(plan), "song", quiet=not progress)
    for i, subset in enumerate(plan):
        bar.start(f"{subset}/{song_name(i)}")
        stems = generate_song(song_seed(seed, i), seconds, sample_rate)
        # On the 1/32768 grid libsndfile writes floats as exact 16-bit integers.
        stems = {k: np.round(v * 32768.0) / 32768.0 for k, v in stems.items()}
        folder = root / subset / song_name(i)
        for name in SOURCES:
            write_audio(folder / f"{name}.wav", stems[name], sample_rate, overwrite=overwrite)
        write_audio(folder / "mixture.wav", sum(stems.values()), sample_rate, overwrite=overwrite)
        bar.finish()
    bar.close()

    write_setup(root, [song_name(i) for i in range(train, train + valid)], overwrite)
    return root


def write_setup(root: str | os.PathLike, validation: list[str], overwrite: bool = False) -> Path:
    """Write root/setup.yaml: musdb's own setup with ``validation_tracks`` replaced."""
    import yaml

    setup = yaml.safe_load(_musdb_setup_path().read_text())
    setup["validation_tracks"] = list(validation)
    root = Path(root)
    atomic_write_text(root / "setup.yaml", yaml.safe_dump(setup, sort_keys=False), overwrite)
    return root / "setup.yaml"


def _musdb_setup_path() -> Path:
    # Found without importing musdb, whose import fails unless ffmpeg is on PATH.
    spec = importlib.util.find_spec("musdb")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("write_musdb_tree needs the musdb package: pip install musdb")
    return Path(next(iter(spec.submodule_search_locations))) / "configs" / "mus.yaml"


# --- composition -------------------------------------------------------------------------


def _compose(rng: np.random.Generator, seconds: float) -> _Score:
    beat = 60.0 / rng.uniform(80.0, 150.0)
    bars = math.ceil(seconds / (4 * beat)) + 1
    tonic = int(rng.integers(12))
    scale = _SCALES[rng.integers(len(_SCALES))]
    progression = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]
    bars_per_chord = 2 if rng.random() < 0.25 else 1
    sevenths = rng.random() < 0.3
    chords = [
        _chord(scale, tonic, progression[(b // bars_per_chord) % 4], 4 if sevenths else 3)
        for b in range(bars)
    ]
    swing = float(rng.choice([0.0, 0.0, 0.0, 0.15, 0.3]))

    def at(beats: float) -> float:
        # Swing delays the off-beat 8ths by a fraction of an 8th note.
        offbeat = abs(beats % 1.0 - 0.5) < 1e-9
        return beats * beat + (swing * beat / 2 if offbeat else 0.0)

    timbre = _TIMBRES[rng.integers(len(_TIMBRES))]
    return _Score(
        drums=_compose_drums(rng, bars, at),
        bass=_compose_bass(rng, chords, at, beat),
        other=_compose_other(rng, chords, at, beat, timbre),
        vocals=_compose_vocals(rng, chords, scale, tonic, at, beat, bars),
        timbre=timbre,
    )


def _chord(scale: tuple[int, ...], tonic: int, degree: int, size: int) -> list[int]:
    """Diatonic chord on ``degree`` as pitches above C0 (root first, stacked thirds)."""
    steps = [degree + 2 * k for k in range(size)]
    return [tonic + scale[s % 7] + 12 * (s // 7) for s in steps]


def _compose_drums(rng: np.random.Generator, bars: int, at) -> list[tuple[str, float, float]]:
    kick = _KICKS[rng.integers(len(_KICKS))]
    snare = (8,) if rng.random() < 0.15 else (4, 12)  # half-time feel sometimes
    hat_every = int(rng.choice([2, 2, 1, 4]))
    open_offbeats = rng.random() < 0.3
    fill_p, ghost_p = rng.uniform(0.2, 0.7), rng.uniform(0.0, 0.12)
    hits: list[tuple[str, float, float]] = []

    def hit(kind: str, bar: int, step: float, gain: float) -> None:
        jitter = rng.normal(0.0, 0.003)  # a drummer is a few ms off the grid
        hits.append((kind, max(0.0, at(4 * bar + step / 4) + jitter), gain))

    filled = False
    for bar in range(bars):
        if bar % 4 == 0 and (filled or rng.random() < 0.3):
            hit("crash", bar, 0, rng.uniform(0.7, 1.0))
        filled = bar % 4 == 3 and rng.random() < fill_p
        fill_from = 16 - int(rng.choice([4, 8])) if filled else 16
        for step in range(fill_from):
            if step in kick or (step % 2 == 1 and rng.random() < 0.04):
                hit("kick", bar, step, rng.uniform(0.85, 1.0))
            if step in snare:
                hit("snare", bar, step, rng.uniform(0.85, 1.0))
            elif step % 2 == 1 and rng.random() < ghost_p:
                hit("snare", bar, step, rng.uniform(0.15, 0.3))
            if step % hat_every == 0:
                accent = 1.0 if step % 4 == 0 else 0.7
                kind = "open_hat" if open_offbeats and step % 4 == 2 else "hat"
                hit(kind, bar, step, accent * rng.uniform(0.75, 1.0))
        if filled:
            kinds = ("snare", "tom_hi", "tom_mid", "tom_lo")
            for step in range(fill_from, 16):
                if rng.random() < 0.85:
                    progress = (step - fill_from) / (16 - fill_from)
                    kind = kinds[min(3, int(progress * 4 + rng.uniform(-0.5, 0.5)))]
                    hit(kind, bar, step, 0.6 + 0.4 * progress)
    return hits


def _compose_bass(
    rng: np.random.Generator, chords: list[list[int]], at, beat: float
) -> list[_Note]:
    rhythm = _BASS_RHYTHMS[rng.integers(len(_BASS_RHYTHMS))]
    low = int(rng.integers(28, 36))  # lowest note E1..B1, 41-62 Hz
    articulation = rng.uniform(0.5, 0.95)  # staccato .. legato
    rest_p = rng.uniform(0.0, 0.15)
    notes = []
    for bar, chord in enumerate(chords):
        root = low + (chord[0] - low) % 12
        following = chords[min(bar + 1, len(chords) - 1)]
        next_root = low + (following[0] - low) % 12
        for i, (step, length) in enumerate(rhythm):
            if i > 0 and rng.random() < rest_p:
                continue
            pitch, r = root, rng.random()
            if i > 0 and r < 0.15:
                pitch = root + chord[2] - chord[0]  # the fifth
            elif i > 0 and r < 0.3:
                pitch = root + 12
            elif i == len(rhythm) - 1 and i > 0 and r < 0.45:
                pitch = next_root + int(rng.choice([-2, -1, 1, 2]))  # approach the next chord
            while pitch > 52:
                pitch -= 12
            start = at(4 * bar + step / 4)
            notes.append(
                _Note(
                    start=start,
                    length=length * beat / 4 * articulation * rng.uniform(0.85, 1.0),
                    pitch=pitch,
                    gain=rng.uniform(0.75, 1.0) * (1.0 if step % 4 == 0 else 0.85),
                    pan=0.0,
                    slide=rng.random() < 0.08,
                )
            )
    return notes


def _compose_other(
    rng: np.random.Generator, chords: list[list[int]], at, beat: float, timbre: str
) -> list[_Note]:
    styles = {
        "pad": ("hold",),
        "organ": ("hold", "comp"),
        "piano": ("comp", "arp", "hold"),
        "epiano": ("comp", "arp"),
        "guitar": ("strum", "arp"),
    }[timbre]
    style = styles[rng.integers(len(styles))]
    comp = _COMP_RHYTHMS[rng.integers(len(_COMP_RHYTHMS))]
    low = int(rng.integers(60, 66))  # C4..F4, 262-349 Hz: above the bass
    double_top = rng.random() < 0.5
    centre, spread = rng.uniform(-0.4, 0.4), rng.uniform(0.1, 0.5)
    arp_step = int(rng.choice([2, 2, 1]))
    arp_order = rng.integers(3)
    strum_gap = rng.uniform(0.008, 0.025)
    notes = []

    def add(start: float, length: float, pitch: int, gain: float) -> None:
        pan = float(np.clip(centre + spread * (pitch - low - 6) / 12, -1.0, 1.0))
        notes.append(_Note(start, length, pitch, gain * rng.uniform(0.85, 1.0), pan))

    for bar, chord in enumerate(chords):
        voicing = sorted(low + (p - low) % 12 for p in chord)
        if double_top:
            voicing.append(voicing[0] + 12)
        level = 1.0 / math.sqrt(len(voicing))
        if style == "hold":
            for p in voicing:
                add(at(4 * bar), 4 * beat * 1.02, p, level)
        elif style in ("comp", "strum"):
            for j, (step, length) in enumerate(comp):
                order = voicing if j % 2 == 0 else voicing[::-1]  # down and up strums
                for k, p in enumerate(order):
                    delay = k * strum_gap if style == "strum" else 0.0
                    add(at(4 * bar + step / 4) + delay, length * beat / 4 * 0.9, p, level)
        else:
            sequence = {
                0: voicing,
                1: voicing + voicing[-2:0:-1],
                2: list(rng.permutation(voicing)),
            }
            seq = sequence[int(arp_order)]
            for k, step in enumerate(range(0, 16, arp_step)):
                add(at(4 * bar + step / 4), arp_step * beat / 4 * 1.5, seq[k % len(seq)], 0.7)
    return notes


def _compose_vocals(
    rng: np.random.Generator,
    chords: list[list[int]],
    scale: tuple[int, ...],
    tonic: int,
    at,
    beat: float,
    bars: int,
) -> list[_Note]:
    low = int(rng.integers(53, 61))  # F3..C4: a lower or a higher voice
    pool = [m for m in range(low, low + int(rng.integers(14, 18))) if (m - tonic) % 12 in scale]
    idx = len(pool) // 2
    total = 4 * bars
    pos = float(rng.choice([0.0, 0.5, 1.0]))  # the first phrase starts at once
    notes: list[_Note] = []
    while pos < total:
        phrase_end = pos + float(rng.choice([4, 6, 8]))
        tie = False
        vowel = int(rng.integers(len(_VOWELS)))
        while pos < phrase_end:
            dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0]))
            leap = int(rng.choice([-4, -3, 3, 4])) if rng.random() < 0.1 else 0
            idx += leap or int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))
            idx = abs(idx) if idx < 0 else min(idx, 2 * (len(pool) - 1) - idx)  # reflect
            idx = int(np.clip(idx, 0, len(pool) - 1))
            chord_tones = {p % 12 for p in chords[min(int(pos // 4), bars - 1)]}
            if pos % 2 == 0 and rng.random() < 0.6:  # strong beats land on chord tones
                near = [j for j in range(len(pool)) if pool[j] % 12 in chord_tones]
                idx = min(near, key=lambda j: abs(j - idx), default=idx)
            legato = tie
            tie = pos + dur < phrase_end and rng.random() < 0.5
            if not legato or rng.random() < 0.5:
                vowel = int(rng.integers(len(_VOWELS)))  # a new syllable
            start = at(pos)
            length = (at(pos + dur) - start) * (1.0 if tie else rng.uniform(0.7, 0.9))
            consonant = "" if legato else str(rng.choice(["", "", "s", "t", "k"]))
            gain = rng.uniform(0.8, 1.0)
            notes.append(
                _Note(start, length, pool[idx], gain, 0.0, False, legato, vowel, consonant)
            )
            pos += dur
        pos += float(rng.choice([0.5, 1.0, 1.5, 2.0, 3.0]))  # breathe between phrases
    return notes


# --- sound -------------------------------------------------------------------------------


def _hz(pitch: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitch) - 69.0) / 12.0)


def _pan_gains(pan: float) -> tuple[float, float]:
    # Constant-power panning: equal loudness across the stereo field.
    angle = (pan + 1.0) * math.pi / 4
    return math.cos(angle), math.sin(angle)


def _place(out: np.ndarray, x: np.ndarray, start: int, pan: float) -> None:
    """Add mono ``x`` into stereo (2, n) ``out`` at sample ``start``, panned."""
    end = min(out.shape[1], start + len(x))
    if end <= start:
        return
    left, right = _pan_gains(pan)
    out[0, start:end] += left * x[: end - start]
    out[1, start:end] += right * x[: end - start]


def _band_noise(rng: np.random.Generator, n: int, low: float, high: float, sr: int) -> np.ndarray:
    """Unit-RMS white noise through 2nd-order high-pass ``low`` and low-pass ``high`` shapes."""
    high = min(high, 0.45 * sr)
    low = min(low, 0.5 * high)
    size = 1 << max(1, (n - 1).bit_length())  # a fast FFT length; cropped to n below
    f = np.fft.rfftfreq(size, 1.0 / sr)
    gain = _band_shape(f, low, high)
    # White Gaussian noise has a complex Gaussian spectrum: draw that, one FFT instead of two.
    spec = rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))
    x = np.fft.irfft(spec * gain, size)[:n]
    return x / (np.std(x) + 1e-12)


def _band_shape(f: np.ndarray, low: float, high: float) -> np.ndarray:
    """Magnitude of a 2nd-order high-pass at ``low`` times a 2nd-order low-pass at ``high``."""
    f = np.maximum(f, 1e-3)
    return 1.0 / np.sqrt((1.0 + (low / f) ** 4) * (1.0 + (f / high) ** 4))


def _table(amps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One cycle of sum_k amps[k-1] sin(2 pi k x): values and slopes to the next sample."""
    spec = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    spec[1 : len(amps) + 1] = -0.5j * _TABLE * amps
    cycle = np.fft.irfft(spec, _TABLE).astype(np.float32)
    return cycle, np.roll(cycle, -1) - cycle


def _lookup(table: tuple[np.ndarray, np.ndarray], phase: np.ndarray) -> np.ndarray:
    """Read a wavetable at ``phase`` (in cycles) with linear interpolation."""
    x = phase % 1.0
    x *= _TABLE
    i = x.astype(np.intp)
    frac = (x - i).astype(np.float32)  # float32 from here: the phase needed float64
    values, slopes = table
    frac *= slopes[i]
    frac += values[i]
    return frac


def _ramp_envelope(
    t: np.ndarray, length: float, attack: float, release: float, decay: float, sustain: float
) -> np.ndarray:
    """Attack ramp, exponential decay towards ``sustain``, linear release after ``length``."""
    env = np.minimum(t / attack, 1.0)
    if sustain < 1.0:
        env *= sustain + (1.0 - sustain) * np.exp(-t / decay)
    env *= np.clip((length + release - t) / release, 0.0, 1.0)
    return env


# Drums ----------------------------------------------------------------------------------


def _render_drums(rng: np.random.Generator, hits, n: int, sr: int) -> np.ndarray:
    kit = _drum_kit(rng, sr, {kind for kind, _, _ in hits})
    side = float(rng.choice([-1.0, 1.0]))  # drummer's or audience perspective
    pans = {
        "kick": 0.0,
        "snare": rng.uniform(-0.1, 0.1),
        "hat": side * rng.uniform(0.2, 0.5),
        "tom_hi": -side * 0.4,
        "tom_mid": 0.0,
        "tom_lo": side * 0.4,
        "crash": -side * rng.uniform(0.2, 0.5),
    }
    pans["open_hat"] = pans["hat"]
    out = np.zeros((2, n), dtype=np.float32)
    for kind, start, gain in hits:
        variants, level = kit[kind]
        x = variants[rng.integers(len(variants))]
        _place(out, (gain * level) * x, round(start * sr), pans[kind])
    return out


def _drum_kit(
    rng: np.random.Generator, sr: int, kinds: set[str]
) -> dict[str, tuple[list[np.ndarray], float]]:
    """Hits of ``kinds``, three variants each (hit-to-hit variation), with their kit levels."""
    kick_hz, kick_low_hz = rng.uniform(100, 180), rng.uniform(42, 60)
    kick_bend, kick_decay = rng.uniform(0.02, 0.06), rng.uniform(0.08, 0.2)
    snare_hz, snare_noise = rng.uniform(160, 240), rng.uniform(0.3, 0.8)
    snare_low, snare_high = rng.uniform(500, 1500), rng.uniform(7000, 11000)
    snare_decay = rng.uniform(0.04, 0.09)
    hat_low, hat_decay, open_decay = rng.uniform(6000, 9000), rng.uniform(0.012, 0.03), 0.15
    tom_hz, crash_decay = rng.uniform(80, 110), rng.uniform(0.4, 0.8)

    def noise(low: float, high: float, decay: float) -> np.ndarray:
        t, env = _decay_envelope(decay, sr)
        return _band_noise(rng, len(t), low, high, sr) * env

    def sweep(f_start: float, f_end: float, bend: float, decay: float) -> np.ndarray:
        # A sine falling in pitch, as a struck drum head's tension relaxes: kick and toms.
        t, env = _decay_envelope(decay, sr)
        f = f_end + (f_start - f_end) * np.exp(-t / bend)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * env

    def kick(v: float) -> np.ndarray:
        body = sweep(kick_hz * v, kick_low_hz, kick_bend, kick_decay * v)
        return _overlay(body, 0.3 * noise(1500, 8000, 0.004))

    def snare(v: float) -> np.ndarray:
        t, env = _decay_envelope(0.08, sr)
        phase = 2 * np.pi * snare_hz * v * t
        body = (np.sin(phase) + 0.5 * np.sin(1.59 * phase)) * env  # two drum-head modes
        wires = noise(snare_low, snare_high, snare_decay * v)
        return _overlay((1 - snare_noise) * body, snare_noise * wires)

    def tom(hz: float):
        return lambda v: _overlay(
            sweep(1.4 * hz * v, hz * v, 0.05, 0.25), 0.1 * noise(300, 3000, 0.05)
        )

    makers = {
        "kick": (kick, 1.0),
        "snare": (snare, 0.8),
        "hat": (lambda v: noise(hat_low * v, 16000, hat_decay * v), 0.25),
        "open_hat": (lambda v: noise(hat_low * v, 16000, open_decay * v), 0.2),
        "tom_hi": (tom(1.65 * tom_hz), 0.7),
        "tom_mid": (tom(1.3 * tom_hz), 0.7),
        "tom_lo": (tom(tom_hz), 0.7),
        "crash": (lambda v: noise(3000, 14000, crash_decay * v), 0.3),
    }
    kit = {}
    for kind, (make, level) in makers.items():
        if kind not in kinds:
            continue
        hits = [make(rng.uniform(0.93, 1.07)) for _ in range(3)]
        for x in hits:  # a 1 ms fade-in: no click from a hit starting at full scale
            k = min(len(x), max(1, sr // 1000))
            x[:k] *= np.linspace(0.0, 1.0, k)
        kit[kind] = ([x.astype(np.float32) for x in hits], level)
    return kit


def _decay_envelope(tau: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Times and an exponential decay, cut at -40 dB after a short fade to zero."""
    t = np.arange(max(2, round(4.6 * tau * sr))) / sr
    fade = np.clip((t[-1] - t) / (0.2 * t[-1]), 0.0, 1.0)
    return t, np.exp(-t / tau) * fade


def _overlay(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sum of two sounds of any lengths, both starting at sample 0."""
    out = np.zeros(max(len(a), len(b)))
    out[: len(a)] += a
    out[: len(b)] += b
    return out


# Tonal instruments (bass, other) -------------------------------------------------------


@dataclass(frozen=True)
class _Timbre:
    shape: np.ndarray  # weights of harmonics 1, 2, ... before the low-pass
    bright_hz: float  # low-pass corner at the attack ...
    dull_hz: float  # ... gliding to this one, as a plucked or struck string loses its highs
    bright_tau: float  # seconds
    attack: float
    decay: float
    sustain: float  # level the decay tends to (1: organ-like, no decay)
    release: float
    detune_cents: float = 0.0  # two voices this far apart (a chorus); 0: one voice
    key_decay: bool = False  # higher notes die away faster, as on a piano


def _bass_timbre(rng: np.random.Generator) -> _Timbre:
    k = np.arange(1, 129, dtype=np.float64)
    kind = int(rng.integers(4))
    if kind == 0:  # saw
        shape = 1.0 / k
    elif kind == 1:  # square, a little even content
        shape = np.where(k % 2 == 1, 1.0, 0.05) / k
    elif kind == 2:  # pulse
        shape = (np.abs(np.sin(np.pi * k * rng.uniform(0.2, 0.4))) + 0.02) / k
    else:  # round, finger-style
        shape = 1.0 / k**2
    shape[0] += rng.uniform(0.0, 0.6)  # a sub oscillator on the fundamental
    return _Timbre(
        shape=shape,
        bright_hz=rng.uniform(600, 2000),
        dull_hz=rng.uniform(200, 500),
        bright_tau=rng.uniform(0.05, 0.25),
        attack=0.004,
        decay=rng.uniform(0.3, 1.2),
        sustain=rng.uniform(0.2, 0.8),
        release=0.03,
    )


def _other_timbre(rng: np.random.Generator, name: str) -> _Timbre:
    k = np.arange(1, 65, dtype=np.float64)
    u = rng.uniform
    if name == "piano":  # hammer position notches the spectrum; highs die first
        shape = (np.abs(np.sin(np.pi * k * u(0.1, 0.15))) + 0.05) / k**1.1
        return _Timbre(
            shape,
            bright_hz=u(3000, 6000),
            dull_hz=u(800, 1500),
            bright_tau=u(0.15, 0.4),
            attack=0.003,
            decay=u(0.6, 1.4),
            sustain=0.0,
            release=0.12,
            key_decay=True,
        )
    if name == "epiano":  # nearly sine tines with a bell partial that goes with the attack
        shape = 1.0 / k**3
        shape[6] += 0.15
        return _Timbre(
            shape,
            bright_hz=u(4000, 8000),
            dull_hz=u(1000, 1500),
            bright_tau=0.1,
            attack=0.003,
            decay=1.5,
            sustain=0.1,
            release=0.15,
            key_decay=True,
        )
    if name == "organ":  # drawbars: 16', 8', 5 1/3', 4', 2 2/3', 2' as harmonics 1, 2, 3, 4, 6, 8
        shape = np.zeros_like(k)
        shape[[0, 1, 2, 3, 5, 7]] = [1.0, *u([0.3, 0.2, 0.1, 0.0, 0.0], [0.8, 0.6, 0.4, 0.3, 0.3])]
        corner = u(3000, 6000)
        return _Timbre(
            shape,
            bright_hz=corner,
            dull_hz=corner,
            bright_tau=1.0,
            attack=0.01,
            decay=1.0,
            sustain=1.0,
            release=0.06,
        )
    if name == "pad":  # two detuned filtered saws, slow in and out
        corner = u(1000, 2000)
        return _Timbre(
            1.0 / k,
            bright_hz=corner,
            dull_hz=corner,
            bright_tau=1.0,
            attack=u(0.15, 0.4),
            decay=1.0,
            sustain=1.0,
            release=u(0.3, 0.6),
            detune_cents=u(6, 12),
        )
    # guitar: the pluck point notches the spectrum
    shape = (np.abs(np.sin(np.pi * k * u(0.1, 0.25))) + 0.02) / k
    return _Timbre(
        shape,
        bright_hz=u(3000, 5000),
        dull_hz=u(600, 1000),
        bright_tau=u(0.05, 0.12),
        attack=0.002,
        decay=u(0.5, 1.0),
        sustain=0.05,
        release=0.08,
    )


def _harmonic_table(
    timbre: _Timbre, f0: float, corner: float, sr: int
) -> tuple[np.ndarray, np.ndarray]:
    """Band-limited wavetable of ``timbre`` at ``f0`` through a 2nd-order low-pass at ``corner``."""
    count = int(max(1, min(len(timbre.shape), min(0.45 * sr, _TONAL_MAX_HZ) // f0)))
    k = np.arange(1, count + 1)
    return _table(timbre.shape[:count] / np.sqrt(1.0 + (k * f0 / corner) ** 4))


def _tone(timbre: _Timbre, note: _Note, sr: int) -> np.ndarray:
    """One note of ``timbre`` (unit gain, mono), release tail included."""
    t = np.arange(round((note.length + timbre.release) * sr)) / sr
    f0 = float(_hz(note.pitch))
    # A slide comes up from a whole tone below, as a bassist slides into the note.
    bend = 2.0 ** (-2.0 / 12.0 * np.exp(-t / 0.04)) if note.slide else None
    phase = f0 * t if bend is None else np.cumsum(f0 * bend) / sr
    voices = (0.0,) if timbre.detune_cents == 0 else (-0.5, 0.5)
    y = np.zeros_like(t)
    for cents in voices:
        shift = 2.0 ** (cents * timbre.detune_cents / 1200.0)
        voice = _lookup(_harmonic_table(timbre, f0 * shift, timbre.dull_hz, sr), phase * shift)
        if timbre.bright_hz != timbre.dull_hz:
            # Brightness fades from the bright table to the dull one; after 7 time
            # constants (0.1 %) the bright part is dropped.
            m = min(len(t), round(7 * timbre.bright_tau * sr))
            bright = _harmonic_table(timbre, f0 * shift, timbre.bright_hz, sr)
            extra = _lookup(bright, phase[:m] * shift) - voice[:m]
            voice[:m] += np.exp(-t[:m] / timbre.bright_tau) * extra
        y += voice
    decay = timbre.decay * (261.6 / f0) ** 0.5 if timbre.key_decay else timbre.decay
    env = _ramp_envelope(t, note.length, timbre.attack, timbre.release, decay, timbre.sustain)
    return y * env / len(voices)


def _render_tonal(timbre: _Timbre, notes: list[_Note], n: int, sr: int) -> np.ndarray:
    out = np.zeros((2, n), dtype=np.float32)
    cache: dict[tuple, np.ndarray] = {}  # chord loops repeat: render each distinct note once
    for note in notes:
        key = (note.pitch, round(note.length * sr), note.slide)
        if key not in cache:
            cache[key] = _tone(timbre, note, sr).astype(np.float32)
        _place(out, note.gain * cache[key], round(note.start * sr), note.pan)
    return out


# Vocals ---------------------------------------------------------------------------------


def _render_vocals(rng: np.random.Generator, notes: list[_Note], n: int, sr: int) -> np.ndarray:
    out = np.zeros((2, n), dtype=np.float32)
    if not notes:
        return out
    formant_scale = rng.uniform(1.0, 1.2)  # shorter vocal tracts have higher formants
    bandwidths = _BANDWIDTHS * rng.uniform(0.8, 1.3)
    tilt = rng.uniform(1.0, 1.6)  # glottal source slope: higher is darker, softer
    vib_rate, vib_depth = rng.uniform(4.5, 6.5), rng.uniform(0.25, 0.7)
    breath, glide = rng.uniform(0.02, 0.08), rng.uniform(0.03, 0.08)
    air = rng.uniform(1.0, 3.0)  # gain of the 2-7 kHz band above the formants
    release = 0.08

    # Pitch (MIDI), vibrato depth and loudness move slowly: compute them at ~1 kHz.
    step = max(1, round(sr / 1000))
    rate, m = sr / step, n // step + 2
    pitch, vib_env, env = np.full(m, float(notes[0].pitch)), np.zeros(m), np.zeros(m)
    marks = [min(m, round(note.start * rate)) for note in notes]
    prev = notes[0].pitch
    for note, c0, c1 in zip(notes, marks, [*marks[1:], m], strict=True):
        t = np.arange(c1 - c0) / rate
        if note.legato:
            bend = (prev - note.pitch) * np.exp(-t / glide)
        else:
            bend = -rng.uniform(0.0, 0.8) * np.exp(-t / 0.04)  # a scoop up into the note
        pitch[c0:c1] = note.pitch + bend
        vib_env[c0:c1] = vib_depth * np.clip((t - 0.12) / 0.25, 0.0, 1.0)  # vibrato sets in late
        tn = np.arange(min(m - c0, round((note.length + release) * rate))) / rate
        attack = 0.015 if note.legato else 0.04
        shape = note.gain * _ramp_envelope(tn, note.length, attack, release, 1.0, 1.0)
        np.maximum(env[c0 : c0 + len(tn)], shape, out=env[c0 : c0 + len(tn)])
        prev = note.pitch
    times = np.arange(m) / rate
    vibrato = vib_env * np.sin(2 * np.pi * vib_rate * times)
    knots = rng.normal(0.0, 0.08, int(n / sr * 10) + 2)  # slow pitch drift, in semitones
    drift = np.interp(times, np.arange(len(knots)) / 10.0, knots)
    f0_slow = _hz(pitch + vibrato + drift)
    env *= 1.0 + 0.1 * vibrato  # loudness wobbles with the vibrato
    at_sample = np.arange(n) / step
    f0 = np.interp(at_sample, np.arange(m), f0_slow)
    gain = np.interp(at_sample, np.arange(m), env)
    phase = np.cumsum(f0) / sr

    # Glottal source plus breath noise: one band-limited table per breath (legato run).
    voice = np.zeros(n)
    starts = [min(n, round(note.start * sr)) for note in notes]
    groups = [i for i, note in enumerate(notes) if not note.legato] + [len(notes)]
    for first, stop in zip(groups[:-1], groups[1:], strict=True):
        last = notes[stop - 1]
        a = starts[first]
        b = min(
            starts[stop] if stop < len(notes) else n,
            round((last.start + last.length + release) * sr),
        )
        if b <= a:
            continue
        k = np.arange(1, int(max(1, 0.45 * sr // f0[a:b].max())) + 1)
        voice[a:b] = _lookup(_table(k**-tilt), phase[a:b]) + breath * rng.standard_normal(b - a)
    voice *= gain
    active = gain > 0

    def formants_at(seconds: np.ndarray) -> np.ndarray:
        # Vowel formants per syllable, held through the note, moving ~30 ms between notes.
        ctrl_t = np.array([[note.start + 0.03, note.start + note.length] for note in notes])
        ctrl_f = np.repeat(_VOWELS[[note.vowel for note in notes]] * formant_scale, 2, axis=0)
        out = np.stack([np.interp(seconds, ctrl_t.ravel(), ctrl_f[:, i]) for i in range(4)], 1)
        # Singers raise F1 above a high f0 rather than let the fundamental fall between formants.
        out[:, 0] = np.maximum(out[:, 0], 1.1 * np.interp(seconds * rate, np.arange(m), f0_slow))
        return out

    y = _formant_filter(voice, active, formants_at, bandwidths, air, sr)
    level = rng.uniform(0.1, 0.3) * float(np.sqrt(np.mean(y[active] ** 2))) if active.any() else 0.0
    for note, s0 in zip(notes, starts, strict=True):
        if note.consonant:
            y_burst = _consonant(rng, note.consonant, sr) * level
            a = max(0, s0 - len(y_burst) // 2)  # the consonant leads into the vowel
            y[a : a + len(y_burst)] += y_burst[: len(y[a : a + len(y_burst)])]
    _place(out, y, 0, rng.uniform(-0.1, 0.1))
    return out


def _consonant(rng: np.random.Generator, kind: str, sr: int) -> np.ndarray:
    """A fricative ('s') or plosive ('t', 'k') as shaped band noise."""
    low, high, seconds = {
        "s": (4000, 11000, 0.09),
        "t": (2000, 7000, 0.025),
        "k": (1200, 4000, 0.03),
    }[kind]
    m = max(2, round(seconds * sr))
    shape = np.hanning(m) if kind == "s" else np.exp(-np.arange(m) / (0.3 * m))
    return _band_noise(rng, m, low, high, sr) * shape


def _formant_filter(
    x: np.ndarray, active: np.ndarray, formants_at, bandwidths, air: float, sr: int
) -> np.ndarray:
    """Filter ``x`` through four cascaded formant resonators that move, plus an ``air`` band.

    Short-time Fourier filtering (sqrt-Hann, 2x overlap) applies each frame's resonances,
    ``formants_at(frame centres in s)`` -> (frames, 4) Hz. Only frames that touch
    ``active`` samples are computed.
    """
    n = len(x)
    hop = 2 ** round(math.log2(sr / 40))  # about 23 ms
    size = 2 * hop
    total = math.ceil((n + 2 * size) / hop) * hop
    padded = np.zeros(total)
    padded[size : size + n] = x
    busy = np.zeros(total, dtype=bool)
    busy[size : size + n] = active
    blocks = busy.reshape(-1, hop).any(axis=1)
    idx = np.flatnonzero(blocks[:-1] | blocks[1:])
    if len(idx) == 0:
        return np.zeros(n)
    # sqrt-Hann before and after filtering is Hann, whose half-overlapped copies sum to 1.
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / size))
    frames = np.lib.stride_tricks.sliding_window_view(padded, size)[::hop][idx]
    spec = np.fft.rfft(frames * window, axis=1)

    formants = formants_at((idx * hop - size / 2) / sr).astype(np.float32)
    freqs = np.fft.rfftfreq(size, 1.0 / sr).astype(np.float32)
    gain = np.ones(spec.shape, dtype=np.float32)
    for i in range(4):
        f2 = formants[:, i : i + 1] ** 2
        gain *= f2 / np.sqrt((f2 - freqs**2) ** 2 + (np.float32(bandwidths[i]) * freqs) ** 2)
    # Four poles leave almost nothing above ~4 kHz; real voices keep harmonics and breath
    # there (higher formants, turbulence), which this band lets through.
    gain += (air * _band_shape(freqs, 2000.0, 7000.0)).astype(np.float32)
    y_frames = np.fft.irfft(spec * gain, size, axis=1) * window

    overlap = np.zeros((len(blocks), hop))
    overlap[idx] += y_frames[:, :hop]
    overlap[idx + 1] += y_frames[:, hop:]
    return overlap.ravel()[size : size + n]


# Mix ------------------------------------------------------------------------------------


def _balance(rng: np.random.Generator, stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stems at random levels around a typical balance, the mixture peaking at 0.6-0.9."""
    offsets_db = {"vocals": 0.0, "drums": -1.0, "bass": -2.0, "other": -3.0}
    for name, x in stems.items():
        rms = float(np.sqrt(np.mean(x**2)))
        x *= 10.0 ** ((offsets_db[name] + rng.uniform(-3.0, 3.0)) / 20.0) / max(rms, 1e-12)
    peak = float(np.max(np.abs(sum(stems.values()))))
    stem_peak = max(float(np.max(np.abs(x))) for x in stems.values())
    gain = min(rng.uniform(0.6, 0.9) / max(peak, 1e-12), 0.99 / max(stem_peak, 1e-12))
    return {
        name: np.ascontiguousarray((gain * stems[name]).T, dtype=np.float32) for name in SOURCES
    }

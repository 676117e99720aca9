"""Render the development corpus: generated multitrack songs in MUSDB18-HQ layout.

Every song is composed from its seed (pure numpy, see ``compose_song``): meter, tempo,
key and mode, chord loop, a groove, one to three accompaniment parts, a bass line and a
lead vocal, arranged in sections in which parts drop in and out. Instruments come from
the whole General MIDI range of three SoundFonts, per stem, from role pools; drums use
a bank-128 kit of the stem's font. Vocals are a GM voice patch singing the melody or
espeak-ng phrases (sung-style or spoken, several voices, variants, pitches and speeds).
FluidSynth renders the stems dry (no reverb, no chorus): effects are added at training
time. Stem levels are set at random per song, as a mix engineer would, and the mix is
peak-normalised below 0 dBFS; mixture.wav is the exact sum of the 16-bit stems.

Speed: FluidSynth spends most of its time loading a SoundFont (MuseScore General takes
about 6 s), so a batch of songs is rendered with one FluidSynth process per font: every
stem that uses the font is a segment of one long MIDI file, separated by silence.

usage: python training/render_corpus.py OUT --train N --valid N --test N [--jobs J]
Needs: fluidsynth, espeak-ng, the three SoundFonts in FONTS (Debian packages
fluid-soundfont-gm, timgm6mb-soundfont, musescore-general-soundfont); numpy, soundfile, mido.
``--instruments P`` also needs Hydrogen's kits (Debian hydrogen-drumkits); ``--missing P``
drops vocals and bass sections (both: docs/training.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from keras_sep.data import instruments
from keras_sep.errors import ArgumentParser, command

STEMS = ("drums", "bass", "other", "vocals")
FONTS = {
    "FluidR3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "TimGM6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "MuseScore": "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
}
# Bank-128 drum kits, read from the fonts' preset headers: all three have the eight GM2
# kits (standard, room, power, electronic, TR-808, jazz, brush, orchestra); FluidR3 and
# MuseScore add numbered variants of most of them.
GM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)
VARIANT_KITS = (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 33, 34, 35, 36, 41, 42)
KITS = {"FluidR3": GM_KITS + VARIANT_KITS, "TimGM6mb": GM_KITS, "MuseScore": GM_KITS + VARIANT_KITS}
DRUM_CHANNEL = 9  # MIDI channel 10

# Instruments beyond the fonts (--instruments): (Hydrogen kits, synthesizers) per pool.
POOLS = {
    "train": (instruments.TRAIN_KITS, instruments.TRAIN_SYNTHS),
    "held_out": (instruments.HELD_OUT_KITS, instruments.HELD_OUT_SYNTHS),
}

# Seeds of song i: SPLIT_SEEDS[split] + i, so the three splits never share a seed.
SPLIT_SEEDS = {"train": 1_000_000, "valid": 2_000_000, "test": 3_000_000}
SPLIT_SIZE = 1_000_000

# GM programs per role (0-based). Voices (52-54, 85, 91) belong to vocals only.
BASS_PROGRAMS = tuple(range(32, 40))  # acoustic, finger, pick, fretless, slap, synth basses
LOW_PROGRAMS = (0, 2, 4, 16, 19, 24, 27, 28, 42, 43, 58, 70, 81, 87)  # keys, guitar, low bowed
OTHER_POOLS = {
    "pad": (16, 17, 18, 19, 20, 21, 48, 49, 50, 51, 61, 62, 63, 88, 89, 90, 92, 93, 94, 95),
    "comp": (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 21, 24, 25, 26, 27, 28, 29, 30, 31, 46, 61, 62),
    "arp": (0, 1, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 45, 46, 104, 105, 106, 107, 108),
    "lead": (40, 41, 56, 57, 59, 60, 64, 65, 66, 67, 68, 69, 71, 72, 73, 74, 75, 80, 81, 82, 83)
    + (84, 86, 87, 109, 110, 111),
}
VOCAL_PROGRAMS = (52, 53, 54, 85, 91)
# Who carries the tune of a song without vocals (--melody): the lead pool, pianos and
# electric pianos, chromatic percussion (celesta to dulcimer) and guitars.
MELODY_PROGRAMS = OTHER_POOLS["lead"] + (0, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26)
OTHER_REGISTERS = {"pad": (48, 72), "comp": (52, 76), "arp": (55, 84), "lead": (60, 86)}

MODES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
}
MODE_WEIGHTS = (0.3, 0.3, 0.1, 0.1, 0.06, 0.06, 0.08)  # mostly major and minor, as in pop
# meter: (pulses per bar, strong pulses, backbeat pulses, pulse length in quarter notes)
METERS = {
    "4/4": (4, (0, 2), (1, 3), 1.0),
    "3/4": (3, (0,), (1, 2), 1.0),
    "6/8": (6, (0, 3), (3,), 0.5),
    "5/4": (5, (0, 3), (1, 4), 1.0),
}
METER_WEIGHTS = (0.5, 0.2, 0.2, 0.1)

ESPEAK_LANGUAGES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
ESPEAK_FOREIGN = ("es", "it", "pt-br", "fr-fr", "de", "nl", "sv")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
ESPEAK_VARIANTS += ("klatt", "klatt2", "klatt3", "croak", "Annie", "Andy", "Alicia", "Michael")
ESPEAK_VARIANTS += ("steph", "linda", "max", "Mike", "belinda", "john", "edward", "robert")
WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "yeah go now love night fire dream baby shine run alone heart sky light time away home "
    "rain gold river stay fall rise wild blue ocean cold burning shadow tonight forever "
    "hold on let me wait slow down come back never again falling star dance all night"
).split()
SYLLABLES = ("la", "na", "da", "oh", "ah", "ooh", "hey", "doo", "ba", "mm")

GAP = 3.0  # at least this much silence between segments in one FluidSynth render
BLOCK = 64  # FluidSynth's samples per block: MIDI events take effect on block boundaries
HEADROOM_RMS_DB = -20.0  # each stem's active loudness before the random mix levels


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    length: float
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Part:
    stem: str
    role: str
    channel: int
    program: int
    font: str
    pan: int  # MIDI CC10, 64 = centre
    volume: int  # MIDI CC7, balances parts inside one stem
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Phrase:
    """One espeak-ng call placed at ``start``: sung-style or spoken words."""

    start: float
    text: str
    voice: str
    pitch: int  # espeak -p, 0-99
    speed: int  # espeak -s, words per minute
    gain: float
    pan: float  # -1 left .. 1 right


@dataclass(frozen=True)
class Section:
    start: float
    end: float
    active: tuple[str, ...]  # parts that play: stems, or "other0".."other2"


@dataclass(frozen=True)
class Song:
    name: str
    split: str
    seed: int
    seconds: float
    bpm: float
    meter: str
    tonic: int
    mode: str
    density: float
    vocal_style: str  # "none": the song has no vocals (--missing)
    sections: tuple[Section, ...]
    parts: tuple[Part, ...]
    phrases: tuple[Phrase, ...]
    levels_db: dict[str, float]
    peak_db: float
    missing: tuple[str, ...] = ()  # "vocals" (the whole song), "bass" (a section): --missing


def song_seed(split: str, index: int) -> int:
    """The seed of song ``index`` of ``split``; splits use disjoint seed ranges."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_SEEDS)}")
    if not 0 <= index < SPLIT_SIZE:
        raise ValueError(f"song index must be in [0, {SPLIT_SIZE}), got {index}")
    return SPLIT_SEEDS[split] + index


def song_name(split: str, index: int) -> str:
    return f"Corpus {split} {index:04d}"


# --- composition (pure: numpy only) ------------------------------------------------------


def compose_song(
    split: str,
    index: int,
    seconds: float = 20.0,
    fonts: tuple[str, ...] = tuple(FONTS),
    instruments: float = 0.0,
    pool: str = "train",
    missing: float = 0.0,
    melody: float = 0.0,
) -> Song:
    """Compose song ``index`` of ``split``: the same arguments always give the same song.

    ``instruments``: the chance that a drum part plays a Hydrogen kit and a bass or other
    part one of our synthesizers (keras_sep.data.instruments) instead of its SoundFont,
    from the ``pool`` ("train" or "held_out") instruments. ``missing``: the chance that
    the song has no vocals, and (drawn apart) that the bass rests through a section.
    ``melody``: the chance that a song left without its voice patch gives the tune to an
    instrument of the other stem (``MELODY_PROGRAMS``, or with chance ``instruments`` a
    synthesizer of ``pool``), as instrumentals do. Each draws from its own stream, so
    with 0 the song is the one composed without it.
    """
    unknown = sorted(set(fonts) - set(FONTS))
    if unknown or not fonts:
        raise ValueError(f"unknown fonts {unknown}; use some of {sorted(FONTS)}")
    if pool not in POOLS:
        raise ValueError(f"unknown instrument pool {pool!r}; use one of {sorted(POOLS)}")
    song = _compose(split, index, seconds, fonts)
    if instruments > 0:
        song = _swap_instruments(song, instruments, POOLS[pool])
    if missing > 0:
        song = _drop_stems(song, missing, melody, instruments, POOLS[pool][1])
    return song


def _swap_instruments(song: Song, chance: float, pool: tuple[tuple, tuple]) -> Song:
    """Some parts of ``song`` on a Hydrogen kit or a synthesizer of ``pool`` (kits, synths):
    font "hydrogen:KIT", or "synth:KIND" with the program as the synth's parameter seed."""
    rng = np.random.default_rng([song.seed, 26])
    kits, synths = pool
    parts = []
    for part in song.parts:
        swap = rng.random() < chance
        if swap and part.stem == "drums":
            part = dataclasses.replace(part, font=f"hydrogen:{rng.choice(kits)}")
        elif swap and part.stem in ("bass", "other"):
            kind, seed = str(rng.choice(synths)), int(rng.integers(100_000))
            part = dataclasses.replace(part, font=f"synth:{kind}", program=seed)
        parts.append(part)
    return dataclasses.replace(song, parts=tuple(parts))


def _drop_stems(
    song: Song, chance: float, melody: float = 0.0, instruments: float = 0.0, synths=()
) -> Song:
    """Without vocals (all of the song), and the bass resting through a section, each with
    probability ``chance``; a dropped voice patch's tune goes to an instrument with
    probability ``melody`` (``compose_song``)."""
    rng = np.random.default_rng([song.seed, 27])
    no_vocals, bass_rests = rng.random() < chance, rng.random() < chance
    parts, phrases, missing = list(song.parts), song.phrases, []
    if no_vocals:
        sung = [p for p in parts if p.stem == "vocals"]
        parts, phrases, missing = [p for p in parts if p.stem != "vocals"], (), ["vocals"]
        tune = np.random.default_rng([song.seed, 28])
        if sung and tune.random() < melody:
            parts.append(_instrumental_melody(sung[0], tune, instruments, synths))
    if bass_rests:
        start = float(rng.uniform(0.0, 0.6)) * song.seconds
        end = start + float(rng.uniform(0.25, 0.5)) * song.seconds
        parts = [
            dataclasses.replace(
                p, notes=tuple(n for n in p.notes if not start - 0.5 < n.start < end)
            )
            if p.stem == "bass"
            else p
            for p in parts
        ]
        missing.append("bass")
    return dataclasses.replace(
        song,
        parts=tuple(parts),
        phrases=phrases,
        vocal_style="none" if no_vocals else song.vocal_style,
        missing=tuple(missing),
    )


def _instrumental_melody(voice: Part, rng, instruments: float, synths) -> Part:
    """The voice patch's tune played by an instrument of the other stem, its role "lead"."""
    program, font = int(rng.choice(MELODY_PROGRAMS)), voice.font
    if synths and rng.random() < instruments:
        program, font = int(rng.integers(100_000)), f"synth:{rng.choice(synths)}"
    pan, volume = int(rng.integers(40, 89)), int(rng.integers(90, 121))
    return dataclasses.replace(
        voice, stem="other", role="lead", program=program, font=font, pan=pan, volume=volume
    )


def _compose(split: str, index: int, seconds: float, fonts: tuple[str, ...]) -> Song:
    seed = song_seed(split, index)
    rng = np.random.default_rng(seed)
    meter = str(rng.choice(list(METERS), p=METER_WEIGHTS))
    pulses, strong, backbeat, quarters = METERS[meter]
    bpm = float(rng.uniform(60.0, 180.0))
    pulse = 60.0 / bpm * quarters
    if meter == "6/8" and pulse < 0.16:  # a 6/8 eighth faster than ~190/min is a blur
        pulse *= 2
    bar = pulses * pulse
    bars = math.ceil(seconds / bar) + 1
    tonic = int(rng.integers(12))
    mode = str(rng.choice(list(MODES), p=MODE_WEIGHTS))
    scale = MODES[mode]
    density = float(rng.uniform(0.0, 1.0))
    human = float(rng.uniform(0.0, 1.0))  # how loose timing and dynamics are
    chords = _progression(rng, bars)

    main_font = str(rng.choice(fonts))

    def pick_font() -> str:
        return main_font if rng.random() < 0.6 else str(rng.choice(fonts))

    n_other = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    sections = _sections(rng, bars, bar, seconds, n_other)
    active = {
        name: [(s.start, s.end) for s in sections if name in s.active]
        for name in ("drums", "bass", "vocals", "other0", "other1", "other2")
    }
    grid = _Grid(rng, pulse, pulses, strong, backbeat, bars, seconds, human)

    parts = []
    font = pick_font()
    kit = int(rng.choice(GM_KITS if rng.random() < 0.75 else KITS[font]))
    parts.append(
        _part(
            "drums",
            "drums",
            DRUM_CHANNEL,
            kit,
            font,
            64,
            110,
            _drums(rng, grid, density, sections),
            active["drums"],
        )
    )
    bass_program = int(rng.choice(BASS_PROGRAMS if rng.random() < 0.8 else LOW_PROGRAMS))
    parts.append(
        _part(
            "bass",
            "bass",
            0,
            bass_program,
            pick_font(),
            int(rng.integers(54, 75)),
            110,
            _bass(rng, grid, density, chords, tonic, scale),
            active["bass"],
        )
    )
    roles = list(rng.choice(list(OTHER_POOLS), size=n_other, replace=n_other > 4))
    for k, role in enumerate(roles):
        program = int(rng.choice(OTHER_POOLS[role]))
        notes = _other(rng, grid, density, chords, tonic, scale, role)
        parts.append(
            _part(
                "other",
                role,
                1 + k,
                program,
                pick_font(),
                int(rng.integers(20, 108)),
                int(rng.integers(70, 120)),
                notes,
                active[f"other{k}"],
            )
        )

    vocal_style = str(rng.choice(["gm", "sung", "spoken", "gm+spoken"], p=[0.4, 0.3, 0.2, 0.1]))
    melody, phrase_starts, phrase_length = _melody(rng, grid, chords, tonic, scale)
    phrases: tuple[Phrase, ...] = ()
    if vocal_style in ("gm", "gm+spoken"):
        parts.append(
            _part(
                "vocals",
                "voice",
                4,
                int(rng.choice(VOCAL_PROGRAMS)),
                pick_font(),
                int(rng.integers(54, 75)),
                115,
                melody,
                active["vocals"],
            )
        )
    if vocal_style != "gm":
        phrases = _phrases(
            rng,
            grid,
            melody,
            phrase_starts,
            phrase_length,
            active["vocals"],
            spoken=vocal_style != "sung",
        )
    levels = {
        "drums": float(rng.uniform(-5.0, 2.0)),
        "bass": float(rng.uniform(-7.0, 2.0)),
        "other": float(rng.uniform(-6.0, 2.0)),
        "vocals": float(rng.uniform(-4.0, 3.0)),
    }
    return Song(
        name=song_name(split, index),
        split=split,
        seed=seed,
        seconds=float(seconds),
        bpm=round(bpm, 2),
        meter=meter,
        tonic=tonic,
        mode=mode,
        density=round(density, 3),
        vocal_style=vocal_style,
        sections=sections,
        parts=tuple(parts),
        phrases=phrases,
        levels_db=levels,
        peak_db=float(rng.uniform(-6.0, -0.5)),
    )


class _Grid:
    """Time grid of one song: pulses, bars and humanised onsets in seconds."""

    def __init__(self, rng, pulse, pulses, strong, backbeat, bars, seconds, human):
        self.rng, self.pulse, self.pulses = rng, pulse, pulses
        self.strong, self.backbeat, self.bars, self.seconds = strong, backbeat, bars, seconds
        self.bar = pulse * pulses
        self.jitter = 0.004 + 0.014 * human
        self.vel_spread = 4 + 14 * human
        self.swing = float(rng.choice([0.0, 0.0, 0.08, 0.16])) if pulses != 6 else 0.0

    def time(self, bar: int, pulse: float) -> float:
        frac = pulse % 1.0
        if self.swing and abs(frac - 0.5) < 1e-6:
            pulse += self.swing
        return bar * self.bar + pulse * self.pulse

    def note(self, bar, pulse, length_pulses, pitch, velocity) -> Note | None:
        start = self.time(bar, pulse) + float(self.rng.normal(0.0, self.jitter))
        start = max(0.0, start)
        if start >= self.seconds:
            return None
        vel = int(min(127, max(20, velocity + self.rng.normal(0.0, self.vel_spread))))
        length = max(0.03, length_pulses * self.pulse * 0.95)
        return Note(round(start, 4), round(length, 4), int(pitch), vel)


def _part(stem, role, channel, program, font, pan, volume, notes, spans) -> Part:
    """A part keeps only notes that start inside its active sections, cut at their end."""
    kept = []
    for n in notes:
        for a, b in spans:
            if a <= n.start < b - 0.05:
                kept.append(
                    Note(n.start, round(min(n.length, b - n.start), 4), n.pitch, n.velocity)
                )
                break
    return Part(stem, role, channel, program, font, pan, volume, tuple(kept))


def _progression(rng, bars: int) -> list[int]:
    """Scale degree of the chord in each bar: a 4- or 8-bar loop from weighted steps."""
    length = int(rng.choice([2, 4, 4, 8]))
    loop = [0]
    weights = np.array([3, 1, 1, 3, 3, 3, 1], float)
    for _ in range(length - 1):
        loop.append(int(rng.choice(7, p=weights / weights.sum())))
    return [loop[b % length] for b in range(bars)]


def _chord(tonic: int, scale, degree: int, base: int, seventh: bool = False) -> list[int]:
    """Chord tones (MIDI) of ``degree`` stacked in thirds, rooted at or above ``base``."""
    steps = (0, 2, 4, 6) if seventh else (0, 2, 4)
    notes = [tonic + scale[(degree + s) % 7] + 12 * ((degree + s) // 7) for s in steps]
    shift = 12 * math.ceil((base - notes[0]) / 12)
    return [n + shift for n in notes]


def _sections(rng, bars, bar, seconds, n_other) -> tuple[Section, ...]:
    """Sections of 1-8 bars; each part plays in some of them, so stems fall silent."""
    names = ["drums", "bass", "vocals"] + [f"other{k}" for k in range(n_other)]
    odds = {
        "drums": 0.85,
        "bass": 0.85,
        "vocals": 0.75,
        "other0": 0.8,
        "other1": 0.65,
        "other2": 0.55,
    }
    spans = []
    b = 0
    while b * bar < seconds:
        # sections of about 2.5 to 7 s, whole bars, so a song has a few of them
        n = max(1, round(float(rng.uniform(2.5, 7.0)) / bar))
        if rng.random() < 0.5 and n > 1:
            n = 2 ** int(math.log2(n))  # mostly 2, 4 or 8 bars, as songs are built
        spans.append((b, min(b + n, bars)))
        b += n
    plans = []
    for _ in spans:
        on = [p for p in names if rng.random() < odds[p]]
        while len({p[:5] for p in on}) < 2:  # at least two stems sound in every section
            extra = str(rng.choice(names))
            if extra not in on:
                on.append(extra)
        plans.append(on)
    for p in names:  # every part plays somewhere
        if not any(p in on for on in plans):
            plans[int(rng.integers(len(plans)))].append(p)
    return tuple(
        Section(round(a * bar, 4), round(min(z * bar, seconds), 4), tuple(sorted(on)))
        for (a, z), on in zip(spans, plans, strict=True)
    )


def _drums(rng, grid: _Grid, density: float, sections) -> list[Note]:
    sub = 4 if density > 0.6 else 2
    steps = grid.pulses * sub
    strong = {p * sub for p in grid.strong}
    back = {p * sub for p in grid.backbeat}
    kick = [s for s in range(steps) if s in strong or rng.random() < 0.12 + 0.2 * density]
    snare = sorted(back if rng.random() < 0.85 else {int(rng.choice(sorted(back)))})
    cymbal = int(rng.choice([42, 42, 42, 44, 51, 46]))
    hat_every = 1 if density > 0.35 else sub
    extras = [int(n) for n in rng.choice([39, 54, 56, 69, 70, 75, 62, 63, 64, 37], size=2)]
    extra_steps = [s for s in range(steps) if rng.random() < 0.15 * density]
    fill_bars = {round(s.end / grid.bar) - 1 for s in sections}
    notes = []
    for b in range(grid.bars):
        if b in fill_bars and rng.random() < 0.6:
            toms = rng.choice([50, 48, 47, 45, 43, 41], size=sub * 2)
            for i, t in enumerate(toms):
                notes.append(grid.note(b, grid.pulses - 2 + i / sub, 0.5, t, 95))
            kick_here = [s for s in kick if s < steps - 2 * sub]
        else:
            kick_here = kick
        for s in kick_here:
            notes.append(grid.note(b, s / sub, 0.5, 36 if rng.random() < 0.8 else 35, 105))
        for s in snare:
            if s < steps - 2 * sub or b not in fill_bars:
                notes.append(grid.note(b, s / sub, 0.5, 38 if rng.random() < 0.85 else 40, 100))
        for s in range(0, steps, hat_every):
            accent = 90 if s % sub == 0 else 65
            notes.append(grid.note(b, s / sub, 0.5, cymbal, accent))
        for s in extra_steps:
            notes.append(grid.note(b, s / sub, 0.5, extras[s % 2], 75))
        if rng.random() < 0.05 * density:  # ghost snare
            notes.append(grid.note(b, float(rng.integers(steps)) / sub, 0.25, 38, 40))
    for s in sections:
        notes.append(grid.note(round(s.start / grid.bar), 0.0, 2.0, int(rng.choice([49, 57])), 105))
    return [n for n in notes if n is not None]


def _rhythm(rng, grid: _Grid, density: float) -> list[tuple[float, float]]:
    """One bar of (onset pulse, length in pulses), from whole notes to eighths."""
    if density < 0.25:
        return [(0.0, float(grid.pulses))]
    step = 0.5 if density > 0.55 else 1.0
    onsets = [0.0] + [
        float(t) for t in np.arange(step, grid.pulses, step) if rng.random() < 0.3 + 0.5 * density
    ]
    ends = onsets[1:] + [float(grid.pulses)]
    return [(a, z - a) for a, z in zip(onsets, ends, strict=True)]


def _bass(rng, grid, density, chords, tonic, scale) -> list[Note]:
    rhythm = _rhythm(rng, grid, density)
    walking = rng.random() < 0.2
    low = int(rng.integers(28, 40))
    notes = []
    for b, degree in enumerate(chords):
        root, third, fifth = _chord(tonic, scale, degree, low)
        for i, (on, length) in enumerate(rhythm):
            if walking and i > 0:
                pitch = int(rng.choice([third, fifth, root + 12, root + scale[1] - scale[0]]))
            elif i > 0 and rng.random() < 0.3:
                pitch = int(rng.choice([fifth, root + 12]))
            else:
                pitch = root
            staccato = 0.5 if rng.random() < 0.3 * density else 1.0
            notes.append(grid.note(b, on, length * staccato, pitch, 100))
    return [n for n in notes if n is not None]


def _other(rng, grid, density, chords, tonic, scale, role) -> list[Note]:
    low, high = OTHER_REGISTERS[role]
    base = int(rng.integers(low, high - 12))
    seventh = rng.random() < 0.3
    notes = []
    if role == "pad":
        for b, degree in enumerate(chords):
            for p in _chord(tonic, scale, degree, base, seventh):
                notes.append(grid.note(b, 0.0, grid.pulses, p, 75))
    elif role == "comp":
        rhythm = _rhythm(rng, grid, max(density, 0.3))
        strum = float(rng.choice([0.0, 0.0, 0.012, 0.025]))
        for b, degree in enumerate(chords):
            chord = _chord(tonic, scale, degree, base, seventh)
            for on, length in rhythm:
                for j, p in enumerate(chord):
                    notes.append(grid.note(b, on + j * strum / grid.pulse, length, p, 85))
    elif role == "arp":
        step = float(rng.choice([0.5, 0.5, 1.0] if density > 0.3 else [1.0]))
        order = [0, 1, 2, 3] if rng.random() < 0.5 else [0, 2, 1, 3]
        for b, degree in enumerate(chords):
            chord = _chord(tonic, scale, degree, base, seventh)
            tones = chord + [chord[0] + 12]
            for i, on in enumerate(np.arange(0.0, grid.pulses, step)):
                p = tones[order[i % 4] % len(tones)]
                notes.append(grid.note(b, float(on), step * 1.5, p, 80))
    else:  # lead: a counter-melody
        notes = _line(rng, grid, chords, tonic, scale, base, rest=0.3, velocity=90)
    return [n for n in notes if n is not None]


def _line(rng, grid, chords, tonic, scale, base, rest, velocity) -> list[Note]:
    """A melodic line: mostly steps in the scale, chord tones on strong pulses, rests."""
    degree = 7  # an octave above the tonic at ``base``
    notes = []
    for b, chord_degree in enumerate(chords):
        t = 0.0
        while t < grid.pulses:
            length = float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
            if rng.random() < rest:
                t += length
                continue
            if t in grid.strong:
                degree = (
                    chord_degree
                    + int(rng.choice([0, 2, 4]))
                    + 7 * round((degree - chord_degree) / 7)
                )
            else:
                degree += int(rng.choice([-2, -1, -1, 1, 1, 2]))
            degree = int(np.clip(degree, 2, 13))
            pitch = tonic + scale[degree % 7] + 12 * (degree // 7)
            pitch += 12 * math.floor((base - tonic) / 12)
            notes.append(grid.note(b, t, min(length, grid.pulses - t), pitch, velocity))
            t += length
    return [n for n in notes if n is not None]


def _melody(rng, grid, chords, tonic, scale) -> tuple[list[Note], list[float], float]:
    """The vocal melody as phrases of one or two bars with breaths between."""
    base = int(rng.integers(50, 62))
    line = _line(rng, grid, chords, tonic, scale, base, rest=0.15, velocity=100)
    # phrases of about 2 to 5 s; a bar of rest between them where bars are short
    phrase_bars = max(1, round(float(rng.uniform(2.0, 5.0)) / grid.bar))
    rest_bars = int(rng.choice([0, 1])) if grid.bar < 2.0 else 0
    starts = [b * grid.bar for b in range(0, grid.bars, phrase_bars + rest_bars)]
    length = phrase_bars * grid.bar - (0.5 * grid.pulse if rest_bars == 0 else 0.0)
    keep = [n for n in line if any(s <= n.start < s + length for s in starts)]
    return keep, [s for s in starts if s < grid.seconds], length


def _phrases(rng, grid, melody, starts, length, spans, spoken) -> tuple[Phrase, ...]:
    lang = str(rng.choice(ESPEAK_LANGUAGES if rng.random() < 0.8 else ESPEAK_FOREIGN))
    voice = f"{lang}+{rng.choice(ESPEAK_VARIANTS)}"
    speed = int(rng.integers(150, 260) if spoken else rng.integers(80, 140))
    pan = float(rng.uniform(-0.3, 0.3))
    out = []
    for s in starts:
        # Bounds are rounded to 0.1 ms, the start is not: a phrase on the downbeat that ends
        # a sung section may still count as in it. Kept as rendered, so that seeds keep
        # giving the songs of the published corpus.
        if not any(a <= s < b for a, b in spans) or s >= grid.seconds - 0.5:
            continue
        # about as many words as fit the phrase at this speed (espeak: words per minute)
        words = max(1, round(min(length, grid.seconds - s) * speed / 60 * rng.uniform(0.75, 1.0)))
        if spoken or rng.random() < 0.5:
            text = " ".join(rng.choice(WORDS, size=words))
        else:
            text = " ".join(rng.choice(SYLLABLES, size=words))
        here = [n.pitch for n in melody if s <= n.start < s + length]
        # espeak's -p moves the voice's pitch; follow the melody's register where it sings
        pitch = (
            int(np.clip((np.mean(here) - 48) * 3, 0, 99))
            if here and not spoken
            else int(rng.integers(20, 80))
        )
        out.append(
            Phrase(round(s, 4), text, voice, pitch, speed, float(rng.uniform(0.7, 1.0)), pan)
        )
    return tuple(out)


# --- MIDI ------------------------------------------------------------------------------

TICKS_PER_SECOND = 2000  # ticks_per_beat 1000 at 120 bpm: half-millisecond ticks


def segment_hop(seconds: float, rate: int) -> int:
    """Samples from one segment's start to the next: at least ``seconds + GAP``, and a
    whole number of FluidSynth blocks and of milliseconds (its MIDI player's clock), so
    every segment meets the same block grid and renders the same wherever it sits."""
    unit = math.lcm(BLOCK, rate // math.gcd(rate, 1000))
    return math.ceil((seconds + GAP) * rate / unit) * unit


def segments_midi(segments: list[list[Part]], seconds: float, rate: int):
    """One MIDI file that plays each segment's parts in turn, ``segment_hop`` apart.

    Every segment starts by setting program, volume and pan of its channels and ends with
    all-sound-off, so nothing of one segment sounds in the next.
    """
    import mido

    hop = segment_hop(seconds, rate) / rate
    events = []  # (tick, order, message): set-up before note-offs before note-ons
    for k, parts in enumerate(segments):
        offset = k * hop

        def tick(t: float, offset=offset) -> int:
            return round((offset + t) * TICKS_PER_SECOND)

        for part in parts:
            ch = part.channel
            setup = [
                mido.Message("control_change", channel=ch, control=121, value=0),
                mido.Message("control_change", channel=ch, control=0, value=0),
                mido.Message("program_change", channel=ch, program=part.program),
                mido.Message("control_change", channel=ch, control=7, value=part.volume),
                mido.Message("control_change", channel=ch, control=10, value=part.pan),
            ]
            events += [(tick(0.0), 0, i, m) for i, m in enumerate(setup)]
            for start, end, pitch, vel in _note_spans(part.notes, seconds):
                events.append(
                    (
                        tick(start),
                        2,
                        0,
                        mido.Message("note_on", channel=ch, note=pitch, velocity=vel),
                    )
                )
                events.append(
                    (tick(end), 1, 0, mido.Message("note_off", channel=ch, note=pitch, velocity=0))
                )
            events.append(
                (
                    tick(hop - 0.2),
                    3,
                    0,
                    mido.Message("control_change", channel=ch, control=120, value=0),
                )
            )
    events.sort(key=lambda e: e[:3])
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    now = 0
    for t, _, _, msg in events:
        track.append(msg.copy(time=t - now))
        now = t
    end = round(len(segments) * hop * TICKS_PER_SECOND)
    track.append(mido.MetaMessage("end_of_track", time=max(0, end - now)))
    mid = mido.MidiFile(ticks_per_beat=1000)
    mid.tracks.append(track)
    return mid


def _note_spans(notes, seconds: float) -> list[tuple[float, float, int, int]]:
    """(start, end, pitch, velocity), cut at ``seconds`` and before the next onset of the
    same pitch, so a note-off never silences the following note."""
    spans = []
    by_pitch: dict[int, list[Note]] = {}
    for n in notes:
        by_pitch.setdefault(n.pitch, []).append(n)
    for pitch, group in by_pitch.items():
        group.sort(key=lambda n: n.start)
        for i, n in enumerate(group):
            end = min(n.start + n.length, seconds)
            if i + 1 < len(group):
                end = min(end, group[i + 1].start - 0.001)
            if end > n.start:
                spans.append((n.start, end, pitch, n.velocity))
    return spans


# --- rendering ------------------------------------------------------------------------


def render_segments(font: str, segments, seconds, rate, workdir: Path) -> list[np.ndarray]:
    """Render segments with one FluidSynth process; returns (time, 2) float32 each."""
    import soundfile as sf

    mid_path = workdir / f"{font}.mid"
    wav_path = workdir / f"{font}.wav"
    segments_midi(segments, seconds, rate).save(mid_path)
    cmd = [
        "fluidsynth",
        "-ni",
        "-q",
        "-R",
        "0",
        "-C",
        "0",
        "-g",
        "0.5",
        "-r",
        str(rate),
        "-O",
        "float",
        "-o",
        "synth.polyphony=512",
        "-F",
        str(wav_path),
        FONTS[font],
        str(mid_path),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    audio, _ = sf.read(wav_path, dtype="float32", always_2d=True)
    n = round(seconds * rate)
    hop = segment_hop(seconds, rate)
    out = []
    for k in range(len(segments)):
        seg = np.zeros((n, 2), np.float32)
        piece = audio[k * hop : k * hop + n]
        seg[: len(piece)] = piece
        out.append(seg)
    return out


def render_own(part: Part, seconds: float, rate: int) -> np.ndarray:
    """A part on a Hydrogen kit ("hydrogen:KIT") or our synthesizer ("synth:KIND"), (time, 2)."""
    source, name = part.font.split(":", 1)
    if source == "hydrogen":
        return instruments.render_kit_part(name, part.notes, seconds, rate)
    # FluidSynth plays the same notes cut before the next onset of their pitch: so does this.
    notes = [Note(a, b - a, pitch, vel) for a, b, pitch, vel in _note_spans(part.notes, seconds)]
    return instruments.render_synth_part(
        name, part.program, notes, seconds, rate, part.pan, part.volume
    )


def speak(phrases, seconds, rate, workdir: Path) -> np.ndarray:
    """espeak-ng phrases placed at their start times, (time, 2) float32."""
    import soundfile as sf

    from keras_sep.audio import resample

    n = round(seconds * rate)
    out = np.zeros((n, 2), np.float32)
    for i, ph in enumerate(phrases):
        path = workdir / f"phrase{i}.wav"
        cmd = [
            "espeak-ng",
            "-v",
            ph.voice,
            "-p",
            str(ph.pitch),
            "-s",
            str(ph.speed),
            "-w",
            str(path),
            ph.text,
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        voice, sr = sf.read(path, dtype="float32", always_2d=True)
        voice = resample(voice[:, :1], sr, rate)[:, 0] if sr != rate else voice[:, 0]
        start = round(ph.start * rate)
        voice = voice[: n - start] * ph.gain
        left, right = math.sqrt(0.5 * (1 - ph.pan)), math.sqrt(0.5 * (1 + ph.pan))
        out[start : start + len(voice)] += voice[:, None] * np.array([left, right], np.float32)
    return out


def active_rms(audio: np.ndarray, rate: int) -> float:
    """RMS over the 50 ms frames that sound (within 40 dB of the loudest frame)."""
    frame = max(1, rate // 20)
    usable = len(audio) // frame * frame
    if usable == 0:
        return 0.0
    power = np.mean(audio[:usable].reshape(-1, frame, audio.shape[-1]) ** 2, axis=(1, 2))
    loud = power[power > power.max() * 1e-4]
    return float(np.sqrt(loud.mean())) if loud.size and power.max() > 0 else 0.0


def mix_stems(
    stems: dict[str, np.ndarray], levels_db: dict[str, float], peak_db: float, rate: int
) -> dict[str, np.ndarray]:
    """Level each stem to its mix level, peak-normalise the mix to ``peak_db`` (< 0 dBFS)
    and round stems to the 16-bit grid; "mixture" is their exact sum."""
    if peak_db >= 0:
        raise ValueError(f"peak_db must be below 0 dBFS, got {peak_db}")
    out = {}
    for name, audio in stems.items():
        rms = active_rms(audio, rate)
        gain = 10 ** ((HEADROOM_RMS_DB + levels_db[name]) / 20) / rms if rms > 0 else 0.0
        out[name] = audio.astype(np.float64) * gain
    mix = sum(out.values())
    peak = float(np.max(np.abs(mix)))
    scale = 10 ** (peak_db / 20) / peak if peak > 0 else 1.0
    # On the 1/32768 grid libsndfile writes floats as exact 16-bit integers.
    out = {k: (np.round(v * scale * 32768.0) / 32768.0).astype(np.float32) for k, v in out.items()}
    out["mixture"] = sum(out[k] for k in stems).astype(np.float32)
    return out


def render_batch(songs: list[Song], out: Path, rate: int) -> list[tuple[str, float]]:
    """Render and write a batch of songs; returns (name, seconds spent) per song."""
    from keras_sep.audio import write_stems
    from keras_sep.files import atomic_write_text

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        work = Path(tmp)
        jobs: dict[str, list[tuple[int, str, str]]] = {}  # font -> (song, stem) segments
        for i, song in enumerate(songs):
            for stem in STEMS:
                fonts = {p.font for p in song.parts if p.stem == stem and p.font in FONTS}
                for font in sorted(fonts):
                    jobs.setdefault(font, []).append((i, stem, font))
        stems = [
            {s: np.zeros((round(song.seconds * rate), 2), np.float32) for s in STEMS}
            for song in songs
        ]
        for font, keys in jobs.items():
            segments = [
                [p for p in songs[i].parts if p.stem == stem and p.font == f] for i, stem, f in keys
            ]
            for (i, stem, _), audio in zip(
                keys, render_segments(font, segments, songs[0].seconds, rate, work), strict=True
            ):
                stems[i][stem] += audio
        for i, song in enumerate(songs):
            for part in song.parts:
                if part.font not in FONTS:
                    stems[i][part.stem] += render_own(part, song.seconds, rate)
            if song.phrases:
                stems[i]["vocals"] += speak(song.phrases, song.seconds, rate, work)
            mixed = mix_stems(stems[i], song.levels_db, song.peak_db, rate)
            folder = out / ("test" if song.split == "test" else "train") / song.name
            write_stems(folder, mixed, rate)
            atomic_write_text(folder / "song.json", json.dumps(asdict(song)) + "\n")
    spent = (time.perf_counter() - t0) / len(songs)
    return [(s.name, spent) for s in songs]


def listed_validation(root: Path) -> list[str]:
    """The validation songs root/setup.yaml lists, if it exists."""
    import yaml

    try:
        return list(yaml.safe_load((root / "setup.yaml").read_text())["validation_tracks"] or [])
    except (OSError, KeyError, TypeError):
        return []


def plan(train, valid, test, train_from=0, valid_from=0, test_from=0):
    """(split, index) of every song to render."""
    return (
        [("train", i) for i in range(train_from, train_from + train)]
        + [("valid", i) for i in range(valid_from, valid_from + valid)]
        + [("test", i) for i in range(test_from, test_from + test)]
    )


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="corpus folder (songs already there are kept)")
    p.add_argument("--train", type=int, default=0, help="training songs")
    p.add_argument(
        "--valid", type=int, default=0, help="validation songs (in train/, listed in setup.yaml)"
    )
    p.add_argument("--test", type=int, default=0, help="test songs")
    for split in ("train", "valid", "test"):
        p.add_argument(
            f"--{split}-from",
            type=int,
            default=0,
            metavar="I",
            help=f"index of the first {split} song (seed {SPLIT_SEEDS[split]} + I)",
        )
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=int, default=22050)
    p.add_argument("--fonts", nargs="+", default=list(FONTS), choices=list(FONTS))
    p.add_argument("--jobs", type=int, default=1, help="rendering processes")
    p.add_argument("--batch", type=int, default=12, help="songs per FluidSynth process")
    p.add_argument(
        "--instruments",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that a drum part plays a Hydrogen kit, a bass or other part our synth",
    )
    p.add_argument(
        "--pool",
        choices=sorted(POOLS),
        default="train",
        help="which kits and synths --instruments draws (held_out: only for test songs)",
    )
    p.add_argument(
        "--missing",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that a song has no vocals, and that its bass rests through a section",
    )
    p.add_argument(
        "--melody",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that a song --missing leaves without its voice patch gives the tune "
        "to an instrument (an instrumental)",
    )
    return p


@command
def main(argv: list[str] | None = None) -> int:
    from keras_sep.data.toy import write_setup

    args = get_parser().parse_args(argv)
    counts = (args.train, args.valid, args.test, args.train_from, args.valid_from, args.test_from)
    chances = (args.instruments, args.missing, args.melody)
    if (
        min(counts) < 0
        or args.seconds <= 0
        or args.rate < 8000
        or args.jobs < 1
        or args.batch < 1
        or not all(0 <= p <= 1 for p in chances)
    ):
        print(
            "error: song counts and indices must be >= 0, --seconds > 0, --rate >= 8000, "
            "--jobs and --batch >= 1, --instruments, --missing and --melody in [0, 1]",
            file=sys.stderr,
        )
        return 2
    missing = [tool for tool in ("fluidsynth", "espeak-ng") if shutil.which(tool) is None]
    missing += [
        path for font, path in FONTS.items() if font in args.fonts and not Path(path).is_file()
    ]
    if args.instruments > 0:
        kits = set(instruments.TRAIN_KITS + instruments.HELD_OUT_KITS)
        absent = sorted(kits - set(instruments.kit_names()))
        missing += [f"Hydrogen kit {k!r}" for k in absent[:1]]
    if missing:
        print(
            f"error: missing {', '.join(missing)}; install fluidsynth, espeak-ng, "
            "fluid-soundfont-gm, timgm6mb-soundfont, musescore-general-soundfont"
            + (", hydrogen-drumkits" if args.instruments > 0 else ""),
            file=sys.stderr,
        )
        return 1
    todo = []
    for split, i in plan(
        args.train, args.valid, args.test, args.train_from, args.valid_from, args.test_from
    ):
        folder = args.out / ("test" if split == "test" else "train") / song_name(split, i)
        if not (folder / "mixture.wav").is_file():
            todo.append(
                compose_song(
                    split,
                    i,
                    args.seconds,
                    tuple(args.fonts),
                    args.instruments,
                    args.pool,
                    args.missing,
                    args.melody,
                )
            )
    batches = [todo[k : k + args.batch] for k in range(0, len(todo), args.batch)]
    valid = [song_name("valid", i) for i in range(args.valid_from, args.valid_from + args.valid)]
    # Validation songs rendered by an earlier run stay listed.
    valid = sorted(set(valid) | set(listed_validation(args.out)))
    write_setup(args.out, valid)
    t0 = time.perf_counter()
    done = 0
    outs, rates = [args.out] * len(batches), [args.rate] * len(batches)
    # one job renders in this process (tests replace its FluidSynth and espeak-ng calls)
    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    try:
        for result in (pool.map if pool else map)(render_batch, batches, outs, rates):
            done += len(result)
            print(f"{done}/{len(todo)} songs, {time.perf_counter() - t0:.0f} s", flush=True)
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        print(
            f"error: {e.cmd[0]} failed ({' '.join(detail) or f'exit {e.returncode}'}); "
            f"songs written so far are complete, run again to render the rest",
            file=sys.stderr,
        )
        return 1
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    if todo:
        print(
            f"rendered {len(todo)} songs in {time.perf_counter() - t0:.0f} s "
            f"({(time.perf_counter() - t0) / len(todo):.2f} s/song with {args.jobs} jobs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

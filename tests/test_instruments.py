"""Our synthesizers and Hydrogen's drum kits (keras_sep.data.instruments)."""

from dataclasses import dataclass

import numpy as np
import pytest

from keras_sep.data import instruments as ins

RATE = 22050


@dataclass(frozen=True)
class Note:
    start: float
    length: float
    pitch: int
    velocity: int


def fundamental_hz(x: np.ndarray) -> float:
    """The period of a harmonic tone by autocorrelation (between 30 Hz and 2 kHz)."""
    x = x - x.mean()
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[: len(x)]
    lo, hi = RATE // 2000, RATE // 30
    return RATE / (lo + int(np.argmax(ac[lo:hi])))


def test_pools_are_disjoint_and_cover_every_synth():
    assert set(ins.TRAIN_SYNTHS).isdisjoint(ins.HELD_OUT_SYNTHS)
    assert set(ins.TRAIN_SYNTHS) | set(ins.HELD_OUT_SYNTHS) == set(ins.SYNTHS)
    assert set(ins.TRAIN_KITS).isdisjoint(ins.HELD_OUT_KITS)


@pytest.mark.parametrize("kind", ins.SYNTHS)
def test_synth_notes_are_deterministic_per_seed_and_decay_after_release(kind):
    a = ins.synth_note(kind, ins.synth_params(kind, 1), 57, 0.5, 100, RATE)
    b = ins.synth_note(kind, ins.synth_params(kind, 1), 57, 0.5, 100, RATE)
    np.testing.assert_array_equal(a, b)
    other = ins.synth_note(kind, ins.synth_params(kind, 2), 57, 0.5, 100, RATE)
    assert len(other) != len(a) or not np.allclose(other, a)
    assert np.all(np.isfinite(a)) and 0.3 < np.abs(a).max() <= 1.0
    assert len(a) > RATE // 2  # the release tail follows the held half second
    assert np.abs(a[-RATE // 100 :]).max() < 0.05  # and dies away
    quiet = ins.synth_note(kind, ins.synth_params(kind, 1), 57, 0.5, 40, RATE)
    assert np.abs(quiet).max() < 0.5 * np.abs(a).max()


@pytest.mark.parametrize("kind", ["pluck", "subtractive", "wavetable"])
@pytest.mark.parametrize("pitch", [40, 57, 69])
def test_harmonic_synths_play_the_asked_pitch(kind, pitch):
    note = ins.synth_note(kind, ins.synth_params(kind, 3), pitch, 0.4, 100, RATE)
    hz = fundamental_hz(note[: round(0.3 * RATE)].astype(np.float64))
    assert abs(12 * np.log2(hz / ins.midi_hz(pitch))) < 0.5, (hz, ins.midi_hz(pitch))


def test_a_synth_part_places_its_notes_and_pans():
    notes = [Note(0.5, 0.2, 60, 100), Note(1.5, 0.2, 64, 100)]
    part = ins.render_synth_part("fm", 4, notes, 2.0, RATE, pan=0)
    assert part.shape == (2 * RATE, 2) and part.dtype == np.float32
    assert not np.any(part[: RATE // 2]) and np.any(part[RATE // 2 : RATE // 2 + 100])
    assert np.abs(part[:, 1]).max() < 1e-6 * np.abs(part[:, 0]).max() + 1e-9  # hard left


kits = pytest.mark.skipif(
    not ins.kit_names(), reason="Hydrogen kits not installed (apt-get install hydrogen-drumkits)"
)


@kits
@pytest.mark.parametrize("kit", ins.TRAIN_KITS + ins.HELD_OUT_KITS)
def test_every_pooled_kit_loads_with_a_kick_and_a_snare(kit):
    loaded = ins.load_kit(kit, RATE)
    assert "kick" in loaded and "snare" in loaded and "hat" in loaded
    for layers in loaded.values():
        for top, audio, gain in layers:
            assert audio.ndim == 2 and audio.shape[1] == 2 and gain > 0 and 0 < top <= 1


@kits
def test_a_kit_part_hits_at_the_note_times():
    notes = [Note(0.25, 0.1, 36, 110), Note(1.0, 0.1, 38, 110)]
    part = ins.render_kit_part(ins.TRAIN_KITS[0], notes, 1.5, RATE)
    assert part.shape == (round(1.5 * RATE), 2)
    assert not np.any(part[: RATE // 4])
    onset = RATE // 4 + int(np.argmax(np.abs(part[RATE // 4 :, 0]) > 0))
    assert onset - RATE // 4 < RATE // 100
    soft = ins.render_kit_part(ins.TRAIN_KITS[0], [Note(0.25, 0.1, 36, 30)], 1.5, RATE)
    assert np.abs(soft).max() < np.abs(part[:RATE]).max()

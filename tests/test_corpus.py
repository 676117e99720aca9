"""The development corpus renderer: composition, MIDI, mixing and the written tree.

FluidSynth and espeak-ng are not needed: composition and MIDI are pure, and the end to
end test replaces the two rendering calls with noise where a part plays.
"""

import json
from functools import cache

import numpy as np
import pytest
import soundfile as sf
import yaml

from keras_sep.training import render_corpus as rc

SECONDS = 20.0


@cache
def songs(split: str = "train", n: int = 12) -> tuple:
    return tuple(rc.compose_song(split, i, SECONDS) for i in range(n))


def test_composition_is_deterministic_per_seed():
    assert rc.compose_song("train", 5) == rc.compose_song("train", 5)
    a, b = rc.compose_song("train", 5), rc.compose_song("train", 6)
    assert a.seed != b.seed and a.parts != b.parts


def test_programs_lie_in_their_role_pools():
    others = set().union(*rc.OTHER_POOLS.values())
    assert not others & set(rc.VOCAL_PROGRAMS)  # voices are vocals only
    for song in songs():
        stems = {p.stem for p in song.parts}
        assert {"drums", "bass", "other"} <= stems
        for p in song.parts:
            assert 0 <= p.program <= 127 and p.font in rc.FONTS
            pool = {
                "drums": rc.KITS[p.font],
                "bass": rc.BASS_PROGRAMS + rc.LOW_PROGRAMS,
                "other": tuple(rc.OTHER_POOLS.get(p.role, ())),
                "vocals": rc.VOCAL_PROGRAMS,
            }[p.stem]
            assert p.program in pool, (song.name, p.stem, p.role, p.program)
            assert (p.channel == rc.DRUM_CHANNEL) == (p.stem == "drums")
            for n in p.notes:
                assert 0 <= n.start < SECONDS and n.length > 0
                assert 0 <= n.pitch <= 127 and 1 <= n.velocity <= 127
        assert song.vocal_style in ("gm", "sung", "spoken", "gm+spoken")
        has_voice_part = any(p.stem == "vocals" for p in song.parts)
        assert has_voice_part == song.vocal_style.startswith("gm")
        assert bool(song.phrases) == (song.vocal_style != "gm")
        assert song.peak_db < 0


def test_drums_play_on_channel_10_with_a_kit_program():
    song = songs()[0]
    drums = [p for p in song.parts if p.stem == "drums"]
    mid = rc.segments_midi([drums], SECONDS, 22050)
    messages = list(mid.tracks[0])
    programs = [m for m in messages if m.type == "program_change"]
    notes = [m for m in messages if m.type == "note_on"]
    assert [(m.channel, m.program) for m in programs] == [(9, drums[0].program)]
    assert notes and all(m.channel == 9 for m in notes)
    assert drums[0].program in rc.GM_KITS + rc.VARIANT_KITS


def test_segments_follow_each_other_with_silence_between():
    song = songs()[1]
    bass = [p for p in song.parts if p.stem == "bass"]
    other = [p for p in song.parts if p.stem == "other"]
    mid = rc.segments_midi([bass, other], SECONDS, 22050)
    hop = rc.segment_hop(SECONDS, 22050) / 22050
    now, onsets = 0, {}
    for m in mid.tracks[0]:
        now += m.time
        if m.type == "note_on":
            onsets.setdefault(m.channel, []).append(now / rc.TICKS_PER_SECOND)
    assert max(onsets[0]) < SECONDS  # bass: the first segment
    other_onsets = [t for ch, ts in onsets.items() if ch != 0 for t in ts]
    assert min(other_onsets) >= hop  # the other parts: the second
    assert mid.length == pytest.approx(2 * hop, abs=0.01)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_segments_start_on_the_same_block_and_millisecond_grid(rate):
    hop = rc.segment_hop(SECONDS, rate)
    assert hop % rc.BLOCK == 0 and (hop * 1000) % rate == 0  # whole blocks, whole ms
    assert SECONDS + rc.GAP <= hop / rate < SECONDS + rc.GAP + 1.5


def test_a_repeated_pitch_is_released_before_it_sounds_again():
    notes = (rc.Note(0.0, 1.0, 60, 90), rc.Note(0.5, 1.0, 60, 90), rc.Note(19.5, 2.0, 62, 90))
    spans = sorted(rc._note_spans(notes, SECONDS))
    assert spans[0][1] < spans[1][0]  # the first C ends before the second starts
    assert spans[2][1] == SECONDS  # cut at the song's end


def test_splits_use_disjoint_seeds():
    train = {rc.song_seed(s, i) for s, i in rc.plan(300, 0, 0)}
    valid = {rc.song_seed(s, i) for s, i in rc.plan(0, 12, 0)}
    test = {rc.song_seed(s, i) for s, i in rc.plan(0, 0, 16)}
    assert len(train) == 300 and not train & valid and not train & test and not valid & test
    # a later installment (--train-from) continues with new seeds
    first = {rc.song_seed(s, i) for s, i in rc.plan(108, 12, 16)}
    more = {rc.song_seed(s, i) for s, i in rc.plan(180, 0, 0, train_from=108)}
    assert not first & more
    assert len({rc.song_name(s, i) for s, i in rc.plan(300, 12, 16)}) == 328
    with pytest.raises(ValueError, match="song index"):
        rc.song_seed("train", rc.SPLIT_SIZE)
    with pytest.raises(ValueError, match="unknown split"):
        rc.song_seed("dev", 0)


def test_meters_tempi_keys_and_instruments_vary_across_seeds():
    many = songs() + songs("test", 6)
    assert len({s.meter for s in many}) >= 3
    assert max(s.bpm for s in many) - min(s.bpm for s in many) > 60
    assert all(60 <= s.bpm <= 180 for s in many)
    assert len({(s.tonic, s.mode) for s in many}) >= 10
    assert len({p.program for s in many for p in s.parts if p.stem == "other"}) >= 15
    assert len({p.font for s in many for p in s.parts}) == 3
    assert len({p.program for s in many for p in s.parts if p.stem == "drums"}) >= 4
    voices = {ph.voice for s in many for ph in s.phrases}
    assert len(voices) >= 3


def test_sections_make_parts_drop_out():
    dropped = 0
    for song in songs():
        assert song.sections[0].start == 0 and song.sections[-1].end == SECONDS
        for a, b in zip(song.sections, song.sections[1:], strict=False):
            assert a.end == b.start
        for stem in ("drums", "bass", "vocals"):
            spans = [(s.start, s.end) for s in song.sections if stem in s.active]
            assert spans, (song.name, stem)  # every stem plays somewhere
            dropped += len(spans) < len(song.sections)
            for p in song.parts:
                if p.stem == stem:
                    assert all(any(a <= n.start < b for a, b in spans) for n in p.notes)
            for ph in song.phrases if stem == "vocals" else ():  # or on a sung section's end
                assert any(a <= ph.start <= b + 1e-4 for a, b in spans)
        for section in song.sections:
            assert len({name[:5] for name in section.active}) >= 2
    assert dropped >= 8  # parts fall silent for stretches in many songs


def fake_stems(rate: int) -> dict:
    rng = np.random.default_rng(0)
    n = 2 * rate
    stems = {k: rng.normal(0, 0.1, (n, 2)).astype(np.float32) for k in rc.STEMS}
    stems["bass"][: n // 2] = 0  # silent for its first half
    stems["vocals"][:] = 0  # silent throughout
    return stems


def test_mix_is_the_exact_sum_of_16_bit_stems_and_peaks_below_0_dbfs():
    rate = 8000
    levels = {"drums": 0.0, "bass": 6.0, "other": -6.0, "vocals": 3.0}
    mixed = rc.mix_stems(fake_stems(rate), levels, peak_db=-1.0, rate=rate)
    assert set(mixed) == {*rc.STEMS, "mixture"}
    for audio in mixed.values():
        assert np.array_equal(audio * 32768, np.round(audio * 32768))
    assert np.array_equal(mixed["mixture"], sum(mixed[k] for k in rc.STEMS))
    peak = np.max(np.abs(mixed["mixture"]))
    assert peak == pytest.approx(10 ** (-1 / 20), abs=1e-3) and peak < 1
    assert not mixed["vocals"].any() and not mixed["bass"][:rate].any()
    # the levels hold between the sounding parts of the stems (bass: its second half)
    drums, bass, other = (rc.active_rms(mixed[k], rate) for k in ("drums", "bass", "other"))
    assert 20 * np.log10(bass / drums) == pytest.approx(6.0, abs=0.3)
    assert 20 * np.log10(other / drums) == pytest.approx(-6.0, abs=0.3)
    with pytest.raises(ValueError, match="below 0 dBFS"):
        rc.mix_stems(fake_stems(rate), levels, peak_db=0.0, rate=rate)


def test_active_rms_ignores_silence():
    rate = 8000
    tone = 0.5 * np.sin(np.arange(rate) * 2 * np.pi * 220 / rate)[:, None].repeat(2, 1)
    half = np.concatenate([tone, np.zeros_like(tone)])
    assert rc.active_rms(half, rate) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert rc.active_rms(np.zeros((rate, 2)), rate) == 0.0


def fake_render(font, segments, seconds, rate, workdir):
    """Noise where a segment has notes, as FluidSynth would give sound."""
    n = round(seconds * rate)
    return [np.full((n, 2), 0.01 * len(parts), np.float32) for parts in segments]


def fake_speak(phrases, seconds, rate, workdir):
    return np.full((round(seconds * rate), 2), 0.02, np.float32)


def test_main_writes_a_musdb_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rc, "render_segments", fake_render)
    monkeypatch.setattr(rc, "speak", fake_speak)
    monkeypatch.setattr(rc.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(rc, "FONTS", {k: __file__ for k in rc.FONTS})
    out = tmp_path / "corpus"
    args = [
        str(out),
        "--train",
        "2",
        "--valid",
        "1",
        "--test",
        "1",
        "--seconds",
        "2",
        "--rate",
        "8000",
        "--batch",
        "3",
    ]
    assert rc.main(args) == 0
    train = sorted(p.name for p in (out / "train").iterdir())
    assert train == ["Corpus train 0000", "Corpus train 0001", "Corpus valid 0000"]
    assert [p.name for p in (out / "test").iterdir()] == ["Corpus test 0000"]
    setup = yaml.safe_load((out / "setup.yaml").read_text())
    assert setup["validation_tracks"] == ["Corpus valid 0000"]
    assert set(setup["sources"]) == set(rc.STEMS)
    song = out / "test" / "Corpus test 0000"
    audio = {
        k: sf.read(song / f"{k}.wav", dtype="int16")[0].astype(int) for k in (*rc.STEMS, "mixture")
    }
    assert np.array_equal(audio["mixture"], sum(audio[k] for k in rc.STEMS))
    assert audio["mixture"].shape == (16000, 2) and sf.info(song / "bass.wav").samplerate == 8000
    meta = json.loads((song / "song.json").read_text())
    assert meta["seed"] == rc.song_seed("test", 0) and meta["seconds"] == 2.0
    # a second run keeps finished songs and renders only new ones
    before = (song / "mixture.wav").stat().st_mtime_ns
    assert rc.main([*args[:2], "3", *args[3:]]) == 0
    assert "1/1 songs" in capsys.readouterr().out
    assert (song / "mixture.wav").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--train", "-1"], "must be >= 0"), (["--rate", "100"], "--rate >= 8000")],
)
def test_bad_arguments_fail_with_one_line(tmp_path, capsys, args, message):
    assert rc.main([str(tmp_path / "c"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_missing_tools_fail_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rc.shutil, "which", lambda tool: None)
    assert rc.main([str(tmp_path / "c"), "--train", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: missing fluidsynth, espeak-ng")
    assert not (tmp_path / "c").exists()


def test_instruments_and_missing_stems_change_only_what_they_say():
    from keras_sep.data import instruments

    for i in range(6):
        plain = rc.compose_song("train", i, SECONDS)
        assert rc.compose_song("train", i, SECONDS, instruments=0.0, missing=0.0) == plain
        swapped = rc.compose_song("train", i, SECONDS, instruments=1.0)
        assert swapped == rc.compose_song("train", i, SECONDS, instruments=1.0)
        for a, b in zip(plain.parts, swapped.parts, strict=True):
            assert a.notes == b.notes and a.stem == b.stem  # same music, other instruments
            if b.stem == "drums":
                assert b.font.removeprefix("hydrogen:") in instruments.TRAIN_KITS
            elif b.stem == "vocals":
                assert b == a
            else:
                assert b.font.removeprefix("synth:") in instruments.TRAIN_SYNTHS
        held = rc.compose_song("test", i, SECONDS, instruments=1.0, pool="held_out")
        for p in held.parts:
            name = p.font.split(":", 1)[-1]
            assert p.stem == "vocals" or name in instruments.HELD_OUT_KITS + (
                instruments.HELD_OUT_SYNTHS
            )
        dropped = rc.compose_song("train", i, SECONDS, missing=1.0)
        assert dropped.missing == ("vocals", "bass") and dropped.vocal_style == "none"
        assert not dropped.phrases and all(p.stem != "vocals" for p in dropped.parts)
        bass = [len(p.notes) for p in dropped.parts if p.stem == "bass"]
        assert bass[0] < [len(p.notes) for p in plain.parts if p.stem == "bass"][0]
        kept = [p for p in dropped.parts if p.stem in ("drums", "other")]
        assert kept == [p for p in plain.parts if p.stem in ("drums", "other")]
    some = [rc.compose_song("train", i, SECONDS, missing=0.4).missing for i in range(20)]
    assert 0 < sum("vocals" in m for m in some) < 20
    with pytest.raises(ValueError, match="pool"):
        rc.compose_song("train", 0, SECONDS, instruments=1.0, pool="secret")


@pytest.mark.skipif(
    not rc.instruments.kit_names(), reason="Hydrogen kits not installed (hydrogen-drumkits)"
)
def test_main_renders_kits_synths_and_songs_without_vocals(tmp_path, monkeypatch):
    monkeypatch.setattr(rc, "render_segments", fake_render)
    monkeypatch.setattr(rc, "speak", fake_speak)
    monkeypatch.setattr(rc.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(rc, "FONTS", {k: __file__ for k in rc.FONTS})
    out = tmp_path / "corpus"
    args = ["--test", "2", "--seconds", "3", "--rate", "8000", "--instruments", "1"]
    assert rc.main([str(out), *args, "--missing", "1", "--pool", "held_out"]) == 0
    for song in (out / "test").iterdir():
        audio = {
            k: sf.read(song / f"{k}.wav", dtype="int16")[0].astype(int)
            for k in (*rc.STEMS, "mixture")
        }
        assert np.array_equal(audio["mixture"], sum(audio[k] for k in rc.STEMS))
        assert not np.any(audio["vocals"])
        assert all(np.any(audio[k]) for k in ("drums", "bass", "other"))
        meta = json.loads((song / "song.json").read_text())
        assert meta["missing"] == ["vocals", "bass"]
        assert all(":" in p["font"] for p in meta["parts"])  # no SoundFont at all
    assert rc.main([str(tmp_path / "c"), "--test", "1", "--missing", "2"]) == 2


def test_melody_gives_a_dropped_voice_patchs_tune_to_an_instrument():
    from keras_sep.data import instruments

    carried = 0
    for i in range(12):
        plain = rc.compose_song("train", i, SECONDS)
        assert rc.compose_song("train", i, SECONDS, missing=1.0, melody=0.0) == rc.compose_song(
            "train", i, SECONDS, missing=1.0
        )
        song = rc.compose_song("train", i, SECONDS, instruments=0.5, missing=1.0, melody=1.0)
        assert song == rc.compose_song(
            "train", i, SECONDS, instruments=0.5, missing=1.0, melody=1.0
        )
        assert song.missing[0] == "vocals" and all(p.stem != "vocals" for p in song.parts)
        voice = [p for p in plain.parts if p.stem == "vocals"]
        added = [p for p in song.parts if p.stem == "other"][
            len([p for p in plain.parts if p.stem == "other"]) :
        ]
        if not voice:  # espeak-ng vocals only: no patch, no tune to give
            assert not added
            continue
        (lead,) = added
        assert lead.role == "lead" and lead.notes == voice[0].notes
        if lead.font.startswith("synth:"):
            assert lead.font.removeprefix("synth:") in instruments.TRAIN_SYNTHS
        else:
            assert lead.program in rc.MELODY_PROGRAMS and lead.font in rc.FONTS
        carried += 1
    assert carried >= 3

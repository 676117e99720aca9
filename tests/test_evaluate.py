"""Evaluation: the fast BSSEval v4 against museval, aggregation, reference rows, report, resume.

Tracks are built here from filtered noise (no dependence on the toy-song generator), at a
low rate and with two sources where the protocol allows, so the whole file runs in
well under a minute.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from keras_sep import baselines, metrics, report
from keras_sep import evaluate as ev
from keras_sep.cli import get_parser
from keras_sep.data.tracks import Track
from keras_sep.errors import DataError, ModelFolderError, UsageError

RATE = 8000


def make_sources(names, seconds=3.0, rate=RATE, channels=2, seed=0):
    """Coloured noise per source with a different, full-rank stereo image per source."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = {}
    for i, name in enumerate(names):
        base = lfilter([1.0], [1.0, -0.9 + 0.4 * i], rng.standard_normal(n))
        chans = [g * base + 0.05 * rng.standard_normal(n) for g in (1.0, 0.5 + 0.2 * i)][:channels]
        x = np.stack(chans, axis=1)
        out[name] = (0.1 * x / np.abs(x).max()).astype(np.float32)
    return out


def make_estimates(sources, seed=1, leak=0.2):
    """Imperfect estimates: filtered target, leakage of the others, a little noise."""
    rng = np.random.default_rng(seed)
    est = {}
    for name, x in sources.items():
        e = lfilter([0.9, 0.05, -0.03], [1.0], x, axis=0)
        e = e + leak * sum(y for other, y in sources.items() if other != name)
        est[name] = (e + 0.002 * rng.standard_normal(x.shape)).astype(np.float32)
    return est


# --- fast BSSEval v4 against museval ---------------------------------------------------


def _museval_available() -> bool:
    return importlib.util.find_spec("museval") is not None and shutil.which("ffmpeg") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _museval_available(), reason="museval (and ffmpeg for musdb) needed")
@pytest.mark.parametrize(
    "names, channels, seconds, est_shift",
    [
        (("vocals", "drums"), 2, 3.4, -100),  # partial last window, short estimates
        (("vocals", "bass", "other"), 1, 2.0, 50),  # mono, long estimates
        (("vocals", "drums"), 2, 0.6, 0),  # one window shorter than a second
    ],
)
def test_fast_scorer_matches_museval(names, channels, seconds, est_shift):
    refs = make_sources(names, seconds, channels=channels, seed=3)
    # A silent stretch of a whole window in one reference: museval gives NaN frames there.
    if seconds > 2:
        refs[names[0]][RATE : 2 * RATE] = 0
    ests = make_estimates(refs, seed=4)
    r = np.stack([refs[s] for s in names])
    e = np.stack([ests[s] for s in names])
    if est_shift < 0:
        e = e[:, :est_shift]
    elif est_shift > 0:
        e = np.pad(e, [(0, 0), (0, est_shift), (0, 0)])
    fast = metrics.bss_eval_v4(r, e, window=RATE, hop=RATE)
    slow = metrics.museval_v4(r, e, window=RATE, hop=RATE)
    for m in metrics.METRICS:
        assert fast[m].shape == slow[m].shape
        np.testing.assert_array_equal(np.isnan(fast[m]), np.isnan(slow[m]))
        np.testing.assert_allclose(fast[m], slow[m], atol=1e-6, rtol=0, err_msg=m)
    if seconds > 2:
        assert np.isnan(fast["SDR"][:, 1]).all() and not np.isnan(fast["SDR"][:, 0]).any()


@pytest.mark.slow
@pytest.mark.skipif(not _museval_available(), reason="museval (and ffmpeg for musdb) needed")
def test_rank_deficient_references_keep_sdr_exact():
    # A mono stem (equal channels) makes museval's Gram matrix singular: its ISR/SIR/SAR
    # are then rounding noise (see docs/evaluation.md), but SDR does not use the filters.
    refs = make_sources(("vocals", "bass"), 2.0, seed=5)
    refs["bass"][:, 1] = refs["bass"][:, 0]
    ests = make_estimates(refs, seed=6)
    r, e = (np.stack([x[s] for s in refs]) for x in (refs, ests))
    fast = metrics.bss_eval_v4(r, e, window=RATE, hop=RATE)
    slow = metrics.museval_v4(r, e, window=RATE, hop=RATE)
    np.testing.assert_allclose(fast["SDR"], slow["SDR"], atol=1e-9, rtol=0)
    assert all(np.isfinite(fast[m]).all() for m in metrics.METRICS)
    assert metrics.degenerate_sources(refs) == ["bass"]


def test_perfect_and_trivial_estimates():
    names = ("vocals", "drums")
    refs = make_sources(names, 2.0)
    rng = np.random.default_rng(0)
    near = {s: x + 1e-5 * rng.standard_normal(x.shape).astype(np.float32) for s, x in refs.items()}
    frames, plain = metrics.score(refs, near, RATE)
    for s in names:
        assert frames[s]["SDR"].min() > 60 and plain[s] > 60
        assert frames[s]["SIR"].min() > 40 and frames[s]["ISR"].min() > 40
    # Exactly equal: the plain SDR is capped by the MDX delta, museval's SDR is +inf.
    frames, plain = metrics.score(refs, refs, RATE)
    assert min(plain.values()) > 70
    assert np.isinf(frames["vocals"]["SDR"]).all()
    # Silence: plain SDR exactly 0 dB, BSSEval undefined (museval skips silent estimates).
    zeros = {s: np.zeros_like(x) for s, x in refs.items()}
    frames, plain = metrics.score(refs, zeros, RATE)
    assert plain == {s: 0.0 for s in names}
    assert all(np.isnan(frames[s][m]).all() for s in names for m in metrics.METRICS)


def test_mixture_row_is_the_energy_ratio():
    names = ("vocals", "drums", "bass", "other")
    refs = make_sources(names, 1.5)
    track = Track("t", RATE, refs)
    est = baselines.reference_estimates(baselines.MIXTURE, track)
    for s, x in refs.items():
        rest = track.mixture - x
        expected = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(rest**2.0))
        plain = metrics.plain_sdr(x, est[s])
        assert plain == pytest.approx(expected, abs=1e-4)
        assert plain < 0  # the mixture is a poor estimate of any one stem
    assert metrics.plain_sdr(refs["bass"], 0 * refs["bass"]) == 0.0


def test_oracle_masks_sum_to_the_mixture_and_beat_it():
    refs = make_sources(("vocals", "drums"), 2.0)
    track = Track("t", RATE, refs)
    oracle = baselines.reference_estimates(baselines.ORACLE, track)
    np.testing.assert_allclose(sum(oracle.values()), track.mixture, atol=1e-4)
    _, plain_oracle = metrics.score(refs, oracle, RATE)
    mixture = baselines.reference_estimates(baselines.MIXTURE, track)
    _, plain_mix = metrics.score(refs, mixture, RATE)
    assert all(plain_oracle[s] > plain_mix[s] + 3 for s in refs)


# --- aggregation -------------------------------------------------------------------------


def test_aggregation_matches_hand_computation():
    a = np.array([0.0, 1.0, 10.0, np.nan])
    b = np.array([4.0, 5.0])
    c = np.array([np.nan, np.nan])  # a track without a defined frame counts nowhere
    # Table 1: pooled frames 0, 1, 10, 4, 5 -> mean 4, median 4.
    assert report.table1_stats([a, b, c]) == (4.0, 4.0)
    # SiSEC: per-track medians 1 and 4.5 -> median 2.75.
    assert report.sisec_stat([a, b, c]) == 2.75
    assert report.mean_median([1.0, 2.0, np.nan, 9.0]) == (4.0, 2.0)
    assert all(math.isnan(x) for x in report.table1_stats([c]))
    assert math.isnan(report.sisec_stat([c]))

    def scores(track, sdr, plain):
        frames = {"vocals": {m: np.asarray(sdr) for m in metrics.METRICS}}
        return report.TrackScores("m", track, frames, {"vocals": plain})

    summary = report.aggregate([scores("A", a, 1.0), scores("B", b, 3.0)], ["vocals"])
    stats = summary["m"]["vocals"]
    assert stats["SDR"] == {"mean": 4.0, "median": 4.0, "sisec": 2.75, "frames": 5}
    assert stats["plain_SDR"] == {"mean": 2.0, "median": 2.0}


def test_track_json_is_museval_format_and_round_trips(tmp_path):
    refs = make_sources(("vocals", "drums"), 2.5)
    path = tmp_path / "t.json"
    result = ev.score_track("m", "t", refs, make_estimates(refs), RATE, path=path)
    data = json.loads(path.read_text())
    assert [t["name"] for t in data["targets"]] == ["vocals", "drums"]
    frame = data["targets"][0]["frames"][1]
    assert frame["time"] == 1.0 and frame["duration"] == 1.0
    assert set(frame["metrics"]) == set(metrics.METRICS)
    schema_file = Path(importlib.util.find_spec("museval").origin).parent / "musdb.schema.json"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(data, json.loads(schema_file.read_text()))
    back = report.TrackScores.from_json(data)
    assert back.plain_sdr == result.plain_sdr
    for s in refs:
        for m in metrics.METRICS:
            np.testing.assert_array_equal(back.frames[s][m], result.frames[s][m])


# --- evaluate(): report, errors, resume ------------------------------------------------


class CountingModel:
    """A Predictor that estimates each source as a scaled mixture, counting its calls."""

    def __init__(self, cfg):
        self.arch_config = cfg
        self.calls = 0

    def predict_on_batch(self, x):
        self.calls += 1
        k = len(self.arch_config.sources)
        return {s: x * (0.5 + 0.5 * i / k) for i, s in enumerate(self.arch_config.sources)}


NAMES2 = ("vocals", "other")


@pytest.fixture(scope="module")
def tiny_model():
    import keras_sep

    return keras_sep.build("dilated", preset="tiny", sources=NAMES2)


def two_tracks():
    return [Track(f"song {i}", RATE, make_sources(NAMES2, 2.5, seed=10 + i)) for i in range(2)]


def parse_table(markdown: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The first Markdown table after ``heading``: (header, rows of cells)."""
    lines = markdown[markdown.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert set(table[1][0]) <= {"-", ":"}
    return table[0], table[2:]


@pytest.mark.slow
def test_evaluate_writes_report(tmp_path, tiny_model):
    from keras_sep.config import DilatedConfig

    other = CountingModel(DilatedConfig.preset("tiny", sources=NAMES2))
    results = ev.evaluate(
        {"tiny": tiny_model, "scaled": other},
        two_tracks(),
        tmp_path,
        include_oracle=True,
        jobs=2,  # scoring in worker processes
        provenance={"data": {"description": "noise"}},
    )
    assert results.systems == ["tiny", "scaled", "mixture", "silence", "oracle"]
    for f in results.files.values():
        assert f.is_file() and f.stat().st_size > 0
    assert results.files["boxplot"].read_bytes()[:4] == b"\x89PNG"
    for system in results.systems:
        for track in results.tracks:
            assert ev.scores_path(tmp_path, system, "test", track).is_file()

    text = results.files["markdown"].read_text()
    header, rows = parse_table(text, "## SDR, paper Table 1")
    assert header[:6] == ["source", "tiny", "scaled", "mixture", "silence", "oracle"]
    assert header[6].startswith("paper: Wave-U-Net")
    by_source = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert sorted(by_source) == sorted(NAMES2)
    for src in NAMES2:
        stats = results.summary["scaled"][src]["SDR"]
        mean, median = (float(v) for v in by_source[src]["scaled"].split(" / "))
        assert mean == pytest.approx(stats["mean"], abs=1e-3)
        assert median == pytest.approx(stats["median"], abs=1e-3)
        assert by_source[src]["silence"] == "undefined"
    assert by_source["vocals"][header[6]] == "-3.292 / 2.643"
    # The plain SDR table: silence exactly 0, the oracle above the mixture.
    header, rows = parse_table(text, "## Plain SDR")
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert cells["silence"] == "0.000 / 0.000"
        oracle, mixture = (float(cells[s].split(" / ")[0]) for s in ("oracle", "mixture"))
        assert oracle > mixture

    if _museval_available():  # museval's own aggregation of our JSONs: the SiSEC numbers
        import museval

        store = museval.EvalStore()
        store.add_eval_dir(tmp_path / "scores" / "scaled")
        theirs = store.agg_frames_tracks_scores()
        for src in NAMES2:
            ours = results.summary["scaled"][src]
            for m in metrics.METRICS:
                assert theirs[(src, m)] == pytest.approx(ours[m]["sisec"], abs=1e-9)

    report = json.loads(results.files["json"].read_text())
    assert report["summary"]["silence"]["vocals"]["SDR"]["mean"] is None
    assert report["summary"]["silence"]["vocals"]["plain_SDR"]["mean"] == 0.0
    assert set(report["per_track"]["tiny"]) == set(results.tracks)


@pytest.mark.slow
def test_resume_skips_scored_tracks(tmp_path):
    from keras_sep.config import DilatedConfig

    cfg = DilatedConfig.preset("tiny", sources=NAMES2)
    tracks = two_tracks()

    def crash_after_first():
        yield tracks[0]
        raise RuntimeError("power cut")

    model = CountingModel(cfg)
    with pytest.raises(RuntimeError, match="power cut"):
        ev.evaluate({"m": model}, crash_after_first(), tmp_path)
    assert ev.scores_path(tmp_path, "m", "test", "song 0").is_file()
    assert not ev.scores_path(tmp_path, "m", "test", "song 1").exists()
    first = report.TrackScores.from_json(
        json.loads(ev.scores_path(tmp_path, "m", "test", "song 0").read_text())
    )

    # Without --resume a used folder is refused rather than silently mixed.
    with pytest.raises(UsageError, match="--resume"):
        ev.evaluate({"m": CountingModel(cfg)}, tracks, tmp_path)

    model = CountingModel(cfg)
    seen = []
    original = ev.separate_waveform

    def spy(m, audio, rate, name="audio", **kw):
        seen.append(name)
        return original(m, audio, rate, name=name, **kw)

    ev.separate_waveform = spy
    try:
        results = ev.evaluate({"m": model}, tracks, tmp_path, resume=True)
    finally:
        ev.separate_waveform = original
    assert seen == ["song 1"]
    assert results.tracks == ["song 0", "song 1"]
    again = results.track_scores("m")[0]
    assert again.plain_sdr == first.plain_sdr
    # Resuming with other data is refused.
    with pytest.raises(UsageError, match="cannot resume"):
        ev.evaluate(
            {"m": model}, tracks, tmp_path, resume=True, provenance={"data": {"kind": "other"}}
        )
    # So is resuming with other test-time augmentation.
    with pytest.raises(UsageError, match="cannot resume .* tta 4"):
        ev.evaluate({"m": model}, tracks, tmp_path, resume=True, tta=1)


def test_evaluate_errors(tmp_path):
    from keras_sep.config import DilatedConfig

    tracks = two_tracks()
    wrong = CountingModel(DilatedConfig.preset("tiny", sources=("vocals", "bass")))
    with pytest.raises(DataError, match="separates"):
        ev.evaluate({"m": wrong}, tracks, tmp_path / "a")
    mono = CountingModel(DilatedConfig.preset("tiny", sources=NAMES2, channels=1))
    with pytest.raises(DataError, match="channel"):
        ev.evaluate({"m": mono}, tracks, tmp_path / "b")
    ok = CountingModel(DilatedConfig.preset("tiny", sources=NAMES2))
    with pytest.raises(DataError, match="no tracks"):
        ev.evaluate({"m": ok}, [], tmp_path / "c")
    with pytest.raises(DataError, match="reserved"):
        ev.evaluate({"mixture": ok}, tracks, tmp_path / "d")


# --- the command line ------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    """``keras-sep evaluate ARGV`` without the error handling of ``main``: errors raise."""
    args = get_parser().parse_args(["evaluate", *argv])
    return args.run(args)


def test_cli_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run_cli("--model", str(tmp_path), "--musdb-root", str(tmp_path / "nope"))
    with pytest.raises(ModelFolderError):
        run_cli("--model", str(tmp_path / "none"), "--data", "toy")
    with pytest.raises(UsageError, match="--tracks"):
        run_cli("--data", "toy", "--tracks", "0")  # checked while parsing: no work done
    with pytest.raises(UsageError, match="not allowed with"):
        run_cli("--data", "toy", "--musdb-root", "x")  # one data source only


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="musdb needs ffmpeg and ffprobe")
def test_cli_on_generated_musdb_tree(tmp_path, capsys):

    import keras_sep

    root = tmp_path / "musdb"
    stems = make_sources(("vocals", "drums", "bass", "other"), 1.5, rate=44100, seed=7)
    write_hq_song(root / "test" / "Artist - Song", stems)
    (root / "train").mkdir()
    model = tmp_path / "ddu"
    keras_sep.save(keras_sep.build("dilated", preset="tiny"), model)

    out = tmp_path / "report"
    args = ["--model", str(model), "--musdb-root", str(root), "-o", str(out)]
    assert run_cli(*args) == 0
    assert "## SDR, paper Table 1" in capsys.readouterr().out
    assert (out / "scores" / "ddu" / "test" / "Artist - Song.json").is_file()
    written = json.loads((out / report.REPORT_JSON).read_text())
    assert written["tracks"] == ["Artist - Song"]
    assert written["run"]["data"]["subset"] == "test"
    # An empty subset is a clear error.
    with pytest.raises(DataError, match="no tracks"):
        run_cli(*args, "--subset", "train", "-o", str(tmp_path / "r2"))


# --- stems silent in some or all tracks --------------------------------------------------

NAMES3 = ("vocals", "drums", "other")


def tracks_with_silent_vocals(silent_in: set[int], count: int = 3) -> list[Track]:
    """Tracks of noise stems whose vocals are digital silence in the tracks ``silent_in``."""
    tracks = []
    for i in range(count):
        sources = make_sources(NAMES3, 2.5, seed=20 + i)
        if i in silent_in:
            sources["vocals"][:] = 0
        tracks.append(Track(f"song {i}", RATE, sources))
    return tracks


def test_a_stem_silent_in_every_track_is_reported_absent(tmp_path):
    from keras_sep.config import DilatedConfig

    model = CountingModel(DilatedConfig.preset("tiny", sources=NAMES3))
    results = ev.evaluate(
        {"m": model}, tracks_with_silent_vocals({0, 1, 2}), tmp_path, include_oracle=True
    )
    assert results.absent() == ["vocals"]
    for f in results.files.values():
        assert f.is_file() and f.stat().st_size > 0
    text = results.files["markdown"].read_text()
    header, rows = parse_table(text, "## SDR, paper Table 1")
    cells = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert {cells["vocals"][s] for s in results.systems} == {"absent"}
    # The other stems are scored against the references that are there: museval would
    # leave every frame undefined, since every window has a silent reference.
    for src in ("drums", "other"):
        for system in ("m", "mixture", "oracle"):
            assert math.isfinite(results.summary[system][src]["SDR"]["mean"]), (system, src)
    assert "vocals is silent in every track" in text
    _, rows = parse_table(text, "## Plain SDR")
    assert [row[1:] for row in rows if row[0] == "vocals"] == [["absent"] * 4]


def test_a_stem_silent_in_some_tracks_leaves_them_out_of_its_statistics(tmp_path):
    from keras_sep.config import DilatedConfig

    model = CountingModel(DilatedConfig.preset("tiny", sources=NAMES3))
    results = ev.evaluate({"m": model}, tracks_with_silent_vocals({1}), tmp_path)
    assert results.silent_tracks() == {"vocals": ["song 1"]} and results.absent() == []
    scored = [t for t in results.track_scores("m") if t.track != "song 1"]
    mean = np.mean([t.plain_sdr["vocals"] for t in scored])
    # The silent track's plain SDR (about -70 dB for any estimate) stays out of the mean.
    assert results.summary["m"]["vocals"]["plain_SDR"]["mean"] == pytest.approx(mean)
    assert "vocals is silent in 1 of 3 tracks (song 1)" in results.files["markdown"].read_text()
    silent = json.loads(results.files["json"].read_text())["per_track"]["m"]["song 1"]
    assert silent["silent_sources"] == ["vocals"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="musdb needs ffmpeg and ffprobe")
def test_cli_oracle_on_an_instrumental_musdb_tree(tmp_path, capsys):
    """``evaluate --musdb-root TREE --oracle`` with vocals silent in every song: a report."""

    import keras_sep

    root = tmp_path / "musdb"
    for i in range(2):
        stems = make_sources(("vocals", "drums", "bass", "other"), 1.5, rate=44100, seed=30 + i)
        stems["vocals"][:] = 0
        write_hq_song(root / "test" / f"Band - Instrumental {i}", stems)
    (root / "train").mkdir()
    model = tmp_path / "ddu"
    keras_sep.save(keras_sep.build("dilated", preset="tiny"), model)
    out = tmp_path / "report"
    args = ["--model", str(model), "--musdb-root", str(root), "--oracle", "-o", str(out)]
    assert run_cli(*args, "--tta", "1", "--quiet") == 0
    assert "| vocals | absent | absent | absent | absent |" in capsys.readouterr().out
    for name in (report.REPORT_MD, report.REPORT_JSON, report.BOXPLOT_PNG, report.PER_TRACK_PNG):
        assert (out / name).stat().st_size > 0


def test_relative_level_of_an_output_against_the_mixture():
    from keras_sep.metrics import is_silent, relative_level_db

    mixture = np.random.default_rng(0).standard_normal((1000, 2))
    assert relative_level_db(mixture, mixture) == pytest.approx(0.0)
    assert relative_level_db(0.1 * mixture, mixture) == pytest.approx(-20.0)
    assert relative_level_db(np.zeros_like(mixture), mixture) == -np.inf
    assert is_silent(np.zeros((10, 2))) and not is_silent(np.full((10, 2), 1e-9))


def write_hq_song(song, stems: dict) -> None:
    """A MUSDB18-HQ song folder: each stem and their sum as float wav at 44.1 kHz."""
    import soundfile as sf

    song.mkdir(parents=True)
    for name, x in stems.items():
        sf.write(song / f"{name}.wav", x, 44100, subtype="FLOAT")
    sf.write(song / "mixture.wav", sum(stems.values()), 44100, subtype="FLOAT")

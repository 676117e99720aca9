"""keras-sep study: spec checks, the budget clock, verdicts, and a tiny study end to end."""

import csv
import json
import math
import textwrap
import types
from pathlib import Path

import keras
import pytest

from keras_sep import cli
from keras_sep.errors import ConfigError
from keras_sep.report import EvaluationResults
from keras_sep.training import study_clock
from keras_sep.training import train as train_module
from keras_sep.training.study import Claim, load_study, read_timeline, run_folder, system_name
from keras_sep.training.study_report import (
    HELD,
    NOT_HELD,
    PARTLY,
    UNDECIDED,
    step_view,
    verdict,
    verdict_words,
    write_report,
)

SMALL = [
    "preset=tiny",
    "toy_songs=2",
    "toy_valid_songs=1",
    "toy_seconds=2",
    "model.segment_length=1024",
    "batch_size=2",
    "valid_segments_per_track=2",
    "learning_rate=3e-3",
    "jit_compile=false",
]


def write_spec(folder: Path, budget="{steps: 4}", seeds="[1, 2]", b_config="", **extra) -> Path:
    """A study of two tiny Wave-U-Nets (4 and 6 filters) in ``folder``."""
    (folder / "a.yaml").write_text("architecture: wave_u_net\n")
    (folder / "b.yaml").write_text(f"architecture: wave_u_net\nmodel: {{filters: 6}}\n{b_config}")
    settings = [*SMALL, f"cache_dir={folder / 'cache'}"]
    text = textwrap.dedent(
        f"""\
        title: two tiny Wave-U-Nets
        variants: {{a: a.yaml, b: b.yaml}}
        claims: [{{better: b, worse: a, text: wider beats narrower}}]
        budget: {budget}
        seeds: {seeds}
        validate_every: 2
        set: {json.dumps(settings)}
        eval_tracks: 1
        eval_seconds: 2
        """
    )
    text += "".join(f"{k}: {v}\n" for k, v in extra.items())
    path = folder / "two.yaml"
    path.write_text(text)
    return path


class Kill(keras.callbacks.Callback):
    """Stand-in for a killed process: stop hard once the first validation is backed up."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


@pytest.mark.slow
def test_study_reports_resumes_and_skips_finished_runs(tmp_path, monkeypatch, capsys):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    real_train, calls = train_module.train, []

    def train(cfg, folder, **kwargs):
        calls.append(
            (Path(folder).relative_to(out / "runs").as_posix(), train_module.resume_epoch(folder))
        )
        if len(calls) == 3:  # kill the third run after its first validation
            kwargs["callbacks"] = [*kwargs["callbacks"], Kill()]
        return real_train(cfg, folder, **kwargs)

    monkeypatch.setattr(train_module, "train", train)
    assert cli.main(["study", str(spec), "-o", str(out), "--quiet"]) == 130
    runs = out / "runs"
    assert (runs / "a/seed1/done.json").is_file() and (runs / "a/seed2/done.json").is_file()
    assert (runs / "b/seed1/backup").is_dir() and not (runs / "b/seed1/done.json").exists()
    assert not (runs / "b/seed2").exists() and not (out / "report.md").exists()

    # The same command again: the finished runs are skipped, the killed one resumes.
    assert cli.main(["study", str(spec), "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert calls[3:] == [("b/seed1", 1), ("b/seed2", 0)]
    assert [r["steps"] for r in read_timeline(runs / "b/seed1")] == [2, 4]
    with open(runs / "b/seed1/history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]

    report = json.loads((out / "report.json").read_text())
    assert list(report["variants"]) == ["a", "b"]
    assert {r["steps"] for runs_ in report["runs"].values() for r in runs_.values()} == {4}
    for v in report["variants"].values():
        assert sorted(v["per_seed"]) == ["1", "2"]
        assert set(v["sources"]) == {"vocals", "drums", "bass", "other"}
        assert v["sdr_mean"]["min"] <= v["sdr_mean"]["mean"] <= v["sdr_mean"]["max"]
    assert report["silence"]["plain_sdr"] == 0.0 and report["mixture"]["plain_sdr"] < -1
    (claim,) = report["claims"]
    assert claim["verdict"] in (HELD, PARTLY, NOT_HELD)
    expected = sum(report["variants"]["b"]["per_seed"][s]["sdr_mean"] for s in "12") / 2
    expected -= sum(report["variants"]["a"]["per_seed"][s]["sdr_mean"] for s in "12") / 2
    assert claim["gap_db"]["sdr_mean"] == pytest.approx(expected)
    assert report["step_view"]["steps"] == 4
    assert report["scale"]["budget"] == {"steps": 4} and report["scale"]["preset"] == "tiny"
    text = (out / "report.md").read_text()
    assert "## Verdict" in text and f"**{claim['verdict']}**: wider beats narrower" in text
    assert f"two: {out / 'report.md'}\n  {claim['verdict']}: wider beats narrower" in printed
    assert "| *mixture* |" in text and "| *silence* |" in text
    assert text.count("*scale paper: preset tiny, 4 training steps per run") == 5
    for png in ("bars.png", "curves.png"):
        assert (out / png).stat().st_size > 10_000
    # A finished study: nothing retrains, nothing is rescored.
    scores = sorted((out / "eval" / "scores").rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in scores]
    assert cli.main(["study", str(spec), "-o", str(out), "--quiet"]) == 0
    assert len(calls) == 5 and [p.stat().st_mtime_ns for p in scores] == stamps
    # Another plan in the same folder is refused.
    assert cli.main(["study", str(spec), "-o", str(out), "--quiet", "--steps", "6"]) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"b_config": "gain: [0.5, 1.0]\n"},
            r"only in the model, but 'b' and 'a' differ in \[.gain.\]",
        ),
        ({"b_config": "model: {sources: [vocals, rest]}\n"}, "same sources"),
        ({"b_config": "model: {sample_rate: 16000}\n"}, "sample_rate 16000"),
        ({"budget": "{steps: 0}"}, "budget steps must be a positive number"),
        ({"budget": "{steps: 2.5}"}, "budget steps must be a whole number"),
        ({"budget": "{minutes: 3}"}, r"budget must be \{steps: N\} or \{seconds: S\}"),
        ({"budget": "{steps: 3, seconds: 3}"}, "one of them"),
        ({"seeds": "[1]"}, "at least 2 different integer seeds"),
        ({"epochs": 3}, r"unknown key\(s\) \['epochs'\]"),
    ],
)
def test_spec_errors(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_study(str(write_spec(tmp_path, **change)))


def test_spec_errors_name_what_to_fix(tmp_path, capsys):
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("b: b.yaml", "b: no_such_config"))
    with pytest.raises(ConfigError, match=r"variant 'b': config 'no_such_config' .* shipped: \["):
        load_study(str(spec))
    with pytest.raises(ConfigError, match=r"has no scale 'cpu'; its scales: \['paper'\]"):
        load_study(str(write_spec(tmp_path)), scale="cpu")
    with pytest.raises(
        ConfigError, match=r"study 'fig9' is neither a file nor a shipped study; shipped: \['fig3a'"
    ):
        load_study("fig9")
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("worse: a", "worse: c"))
    with pytest.raises(ConfigError, match=r"claim worse must name one variant .*\['a', 'b'\]"):
        load_study(str(spec))
    # On the command line: one line, non-zero exit, nothing written.
    spec = write_spec(tmp_path, budget="{steps: -1}")
    assert cli.main(["study", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: study two (scale paper): budget steps") and "\n" not in err
    spec = write_spec(tmp_path)
    assert (
        cli.main(
            [
                "study",
                str(spec),
                "--musdb-root",
                str(tmp_path / "nope"),
                "-o",
                str(tmp_path / "out"),
            ]
        )
        == 1  # a missing dataset is a failure, not a usage error
    )
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert cli.main(["study", str(spec), "-o", str(tmp_path / "a_file")]) == 2
    assert "a_file is an existing file; give a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("name", "variants"), [("fig3a", 3), ("fig3b", 4), ("table1", 3)])
def test_shipped_studies_load_at_both_scales(name, variants):
    paper, cpu = load_study(name, scale="paper"), load_study(name)  # cpu: the default
    assert cpu.scale == "cpu"
    assert len(paper.variants) == len(cpu.variants) == variants
    assert {c.preset for c in paper.variants.values()} == {"paper"}
    assert {c.preset for c in cpu.variants.values()} == {"tiny"}
    assert paper.budget.steps >= 30 * 1700 and cpu.budget.steps < paper.budget.steps
    assert len(paper.seeds) >= 2 and len(cpu.seeds) >= 2 and paper.claims
    assert paper.sources == ("vocals", "drums", "bass", "other") and paper.sample_rate == 22050
    cfg = cpu.run_config(next(iter(cpu.variants)), cpu.seeds[1])
    assert cfg.seed == cpu.seeds[1] and cfg.epochs * cfg.steps_per_epoch >= cpu.budget.steps


def test_verdicts():
    def scores(a, b):  # headline metric per seed; the other metrics follow it
        return {
            label: {
                s: dict.fromkeys(("sdr_mean", "sdr_median", "plain_sdr"), v)
                for s, v in enumerate(vals)
            }
            for label, vals in (("a", a), ("b", b))
        }

    claim = Claim("b beats a", ("b",), ("a",))
    assert verdict(claim, scores([1.0, 2.0], [1.5, 2.5]), [0, 1])["verdict"] == HELD
    partly = verdict(claim, scores([1.0, 2.0], [2.0, 1.8]), [0, 1])
    assert partly["verdict"] == PARTLY and "seeds disagree" in verdict_words(partly)
    assert verdict(claim, scores([1.0, 2.0], [0.0, 2.5]), [0, 1])["verdict"] == NOT_HELD
    assert verdict(claim, scores([1.0, 2.0], [math.nan, 3.0]), [0, 1])["verdict"] == UNDECIDED
    # A pair stands for a difference: the gain of b over a beats the gain of a over b.
    pair = Claim("gain", ("b", "a"), ("a", "b"))
    result = verdict(pair, scores([1.0, 1.0], [2.0, 1.5]), [0, 1])
    assert result["verdict"] == HELD and result["gap_per_seed_db"]["sdr_mean"] == {0: 2.0, 1: 1.0}
    words = verdict_words(result)
    assert words.startswith(
        "**held**: gain. Gap in mean SDR +1.50 dB (seed 0: +2.00, seed 1: +1.00)"
    )
    assert "The plain SDR (whole tracks) agrees (+1.50 dB)." in words and "disagree:" not in words


def test_budget_clock_stops_on_training_seconds_and_resumes(tmp_path, monkeypatch):
    now = iter(range(100))  # every reading of the clock is one second later
    monkeypatch.setattr(study_clock.time, "perf_counter", lambda: float(next(now)))
    path = tmp_path / "timeline.csv"
    clock = study_clock.BudgetClock(path, None, 2.5, start_epoch=0, steps_per_epoch=10)
    model = types.SimpleNamespace(stop_training=False)
    clock.set_model(model)
    clock.on_train_begin()
    steps = 0
    while not model.stop_training:
        clock.on_train_batch_begin(steps)
        clock.on_train_batch_end(steps)
        steps += 1
    # The first step (tracing) is not counted: 1 + 1 + 1 s after it pass 2.5 s.
    assert steps == 4 and clock.seconds == 3.0
    clock.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.25})
    (row,) = read_timeline(tmp_path)
    assert (row["steps"], row["seconds"], row["val_loss"]) == (4, 3.0, 0.25)
    resumed = study_clock.BudgetClock(path, None, 9.0, start_epoch=1, steps_per_epoch=10)
    assert (resumed.steps, resumed.seconds) == (4, 3.0)
    fresh = study_clock.BudgetClock(path, None, 9.0, start_epoch=0, steps_per_epoch=10)
    assert (fresh.steps, fresh.seconds) == (0, 0.0)


def test_step_view_compares_at_the_steps_every_run_reached(tmp_path):
    study = load_study(str(write_spec(tmp_path, budget="{seconds: 5}")))
    assert study.validate_every == 2

    def rows(*points):
        return [{"steps": s, "val_loss": v} for s, v in points]

    curves = {
        "a": {
            1: rows((2, 0.9), (4, 0.8), (6, 0.7), (7, 0.6)),
            2: rows((2, 0.9), (4, 0.6), (5, 0.5)),
        },
        "b": {1: rows((2, 0.5), (4, 0.4), (6, 0.3)), 2: rows((2, 0.5), (4, 0.2), (6, 0.1))},
    }
    view = step_view(study, curves)
    assert view["steps"] == 4
    assert view["val_loss"] == pytest.approx({"a": 0.7, "b": 0.3})


def test_time_budget_report_shows_the_time_and_the_step_view(tmp_path):
    """The report of a time budget, from made-up runs and scores (no training)."""
    study = load_study(str(write_spec(tmp_path, budget="{seconds: 3}")))
    out, sources = tmp_path / "out", list(study.sources)
    records, summary = {}, {}
    for label, steps_per_second in (("a", 4), ("b", 2)):  # b is the slower variant
        for seed in study.seeds:
            folder = run_folder(out, label, seed)
            folder.mkdir(parents=True)
            rows = [
                {
                    "epoch": e,
                    "steps": 2 * (e + 1),
                    "seconds": 2 * (e + 1) / steps_per_second,
                    "wall": 9.0,
                    "loss": 1.0,
                    "val_loss": 1.0 / (e + 1) / steps_per_second,
                }
                for e in range(3 * steps_per_second // 2)
            ]
            with open(folder / "timeline.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, study_clock.FIELDS)
                writer.writeheader()
                writer.writerows(rows)
            records.setdefault(label, {})[seed] = {
                "steps": rows[-1]["steps"],
                "seconds": 3.0,
                "wall_seconds": 9.0,
                "best": {"val_loss": rows[-1]["val_loss"]},
            }
            sdr = 1.0 + seed + (label == "b")
            summary[system_name(label, seed)] = {
                s: {"SDR": {"mean": sdr, "median": sdr}, "plain_SDR": {"mean": sdr}}
                for s in sources
            }
    for name, sdr in (("mixture", -5.0), ("silence", math.nan)):
        summary[name] = {
            s: {
                "SDR": {"mean": sdr, "median": sdr},
                "plain_SDR": {"mean": 0.0 if name == "silence" else sdr},
            }
            for s in sources
        }
    (out / "eval").mkdir()
    (out / "eval" / "run.json").write_text(json.dumps({"data": {"description": "toy songs"}}))
    results = EvaluationResults(out / "eval", list(summary), sources, ["t"], [], summary, "fast")
    files = write_report(study, out, records, results)
    report = json.loads(files["json"].read_text())
    assert report["step_view"] == {
        "steps": 6,
        "val_loss": {"a": pytest.approx(1 / 12), "b": pytest.approx(1 / 6)},
    }
    assert report["claims"][0]["verdict"] == HELD  # b scores 1 dB higher with both seeds
    text = files["markdown"].read_text()
    assert (
        "Time view: every run trained 3 s" in text
        and "| a | 0.0833 | 0.0833 | 0.0833 |" not in text
    )
    assert "val_loss at step 6" in text and "used 6–12 steps" in text
    assert "Sanity: 2 of 2 variants beat the silence row" in text
    assert files["bars"].stat().st_size > 10_000 and files["curves"].stat().st_size > 10_000


def test_report_names_musdb_layout_data_by_folder_not_as_musdb18():
    from keras_sep.training.study_report import _data_label

    assert _data_label(("toy",)) == "toy data"
    # A MUSDB18-layout root may be our FluidSynth corpus: named by its folder, not "MUSDB18".
    assert _data_label(("/x/data/corpus", "/y/musdb18hq")) == "data: corpus, musdb18hq"

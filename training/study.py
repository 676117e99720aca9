"""Studies: the paper's comparisons (Fig. 3a, Fig. 3b, Table 1) re-run at one budget.

    keras-sep study fig3a -o studies/fig3a                      # CPU scale: tiny models
    keras-sep study fig3a fig3b table1 -o studies/cpu           # all three, about 90 min
    keras-sep study table1 --scale paper --musdb-root ~/musdb18hq -o studies/table1  # GPU

A study spec (``training/studies/<name>.yaml`` or any YAML file) names training configs
(the variants), one budget (training steps, or training seconds, per run), the seeds and
the paper's claims. Every variant trains with every seed on the same data for the same
budget (``train.train``); then all of them are scored on the same held-out songs with the
project's evaluation (``keras_sep.evaluate.evaluate``), and ``study_report`` writes
report.md, report.json and the plots with a verdict per claim. Run the same command again
to resume: finished runs are skipped, a half-trained one resumes from its backup.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keras_sep.config import reject_unknown
from keras_sep.data.cache import CACHE_NOTE
from keras_sep.errors import ConfigError, UsageError, check_output_dir
from keras_sep.files import atomic_write_text, check_free
from keras_sep.progress import EACH, Progress, add_quiet_argument
from keras_sep.training.config import (
    TrainConfig,
    add_set_argument,
    load_config,
    resolve_config_path,
)

STUDY_DIR = Path(__file__).parent / "studies"
PLAN_FILE = "study.json"
RUNS_DIR, EVAL_DIR = "runs", "eval"
TIMELINE_FILE, DONE_FILE = "timeline.csv", "done.json"
PAPER_SCALE = "paper"  # the spec's own top-level settings
# The default where a spec defines it: a first run on any machine finishes (docs/study.md).
CPU_SCALE = "cpu"
SCALE_KEYS = ("budget", "seeds", "set", "validate_every", "eval_tracks", "eval_seconds")
SPEC_KEYS = ("title", "variants", "claims", "scales", *SCALE_KEYS)
# The study sets these for every run: the seed, and the budget through the epochs.
STUDY_SET = ("seed", "epochs", "steps_per_epoch", "early_stopping_patience")
# Variants may differ only in the model; every other training field (data, augmentation,
# optimiser, batch...) must agree, so that a comparison isolates the architecture.
MAY_DIFFER = ("architecture", "preset", "model", *STUDY_SET)
# Validation points of a step budget, when the spec does not say how often to validate.
VALIDATIONS = 10
# A time budget stops by the clock; the epoch count is only a cap fit needs.
EPOCH_CAP = 10**6
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class Budget:
    """What every run of a study gets: ``steps`` training steps or ``seconds`` of training."""

    steps: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, value: Any, where: str) -> Budget:
        if not isinstance(value, dict) or len(value) != 1 or not {"steps", "seconds"} >= set(value):
            raise ConfigError(
                f"{where}: budget must be {{steps: N}} or {{seconds: S}} (one of them), "
                f"got {value!r}"
            )
        ((kind, amount),) = value.items()
        if kind == "steps" and not (isinstance(amount, int) and not isinstance(amount, bool)):
            raise ConfigError(f"{where}: budget steps must be a whole number, got {amount!r}")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
            raise ConfigError(f"{where}: budget {kind} must be a positive number, got {amount!r}")
        return cls(**{kind: amount})

    def describe(self) -> str:
        if self.steps is not None:
            return f"{self.steps:,} training steps per run"
        return f"{self.seconds:g} training seconds per run"

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps} if self.steps is not None else {"seconds": self.seconds}


@dataclass(frozen=True)
class Claim:
    """The paper says ``better`` scores higher than ``worse``.

    Each side is one variant, or a pair (A, B) standing for the difference A - B, so
    "the dense gain grows with depth" is (dense3, plain3) against (dense1, plain1).
    """

    text: str
    better: tuple[str, ...]
    worse: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    """A resolved study: its variants' training configs, the budget, seeds and claims."""

    name: str
    title: str
    scale: str
    variants: dict[str, TrainConfig]  # label -> config, before seed and budget
    config_files: dict[str, str]
    budget: Budget
    seeds: tuple[int, ...]
    claims: tuple[Claim, ...]
    validate_every: int
    eval_tracks: int | None
    eval_seconds: float | None  # length of the held-out toy songs (None: evaluate's)
    sources: tuple[str, ...]
    sample_rate: int
    overrides: tuple[str, ...] = ()

    def run_config(self, label: str, seed: int) -> TrainConfig:
        """The training config of one run: the variant's, at ``seed``, sized to the budget."""
        if self.budget.steps is not None:
            epochs = math.ceil(self.budget.steps / self.validate_every)
        else:
            epochs = EPOCH_CAP
        return dataclasses.replace(
            self.variants[label],
            seed=seed,
            epochs=epochs,
            steps_per_epoch=self.validate_every,
            early_stopping_patience=None,  # every run gets the whole budget
        )

    def runs(self) -> list[tuple[str, int]]:
        return [(label, seed) for label in self.variants for seed in self.seeds]

    def plan(self) -> dict[str, Any]:
        """Everything that decides the results; a resumed study must have the same plan."""
        return {
            "study": self.name,
            "title": self.title,
            "scale": self.scale,
            "budget": self.budget.to_dict(),
            "seeds": list(self.seeds),
            "validate_every": self.validate_every,
            "eval_tracks": self.eval_tracks,
            "eval_seconds": self.eval_seconds,
            "sources": list(self.sources),
            "sample_rate": self.sample_rate,
            "variants": {
                label: {"config": self.config_files[label], "training": cfg.to_dict()}
                for label, cfg in self.variants.items()
            },
        }


def _check_keys(values: dict, valid: tuple[str, ...], where: str) -> None:
    try:
        reject_unknown(values, valid, "key")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _claim(value: Any, labels: list[str], where: str) -> Claim:
    if not isinstance(value, dict) or not {"better", "worse"} <= set(value):
        raise ConfigError(f"{where}: a claim needs better and worse, got {value!r}")
    sides = []
    for key in ("better", "worse"):
        side = value[key]
        side = (side,) if isinstance(side, str) else tuple(side)
        unknown = [v for v in side if v not in labels]
        if len(side) not in (1, 2) or unknown:
            raise ConfigError(
                f"{where}: claim {key} must name one variant or a pair of them (their "
                f"difference), got {value[key]!r}; variants: {labels}"
            )
        sides.append(side)
    if len(sides[0]) != len(sides[1]):
        raise ConfigError(f"{where}: claim sides must both be variants or both pairs")
    text = value.get("text") or f"{' - '.join(sides[0])} beats {' - '.join(sides[1])}"
    return Claim(str(text), sides[0], sides[1])


def load_study(
    spec: str,
    scale: str | None = None,
    data: tuple[str, ...] = ("toy",),
    overrides: list[str] | tuple[str, ...] = (),
    budget: Budget | None = None,
    seeds: list[int] | tuple[int, ...] | None = None,
    eval_tracks: int | None = None,
) -> Study:
    """Read and check a study spec at ``scale``; arguments override the spec's settings.

    ``scale`` None is the spec's cpu scale where it has one, else its own settings.

    Errors name the spec and what to fix: an unknown config, variants that disagree on
    sources, sample rate or data, a bad budget, fewer than 2 seeds.
    """
    path = resolve_config_path(spec, STUDY_DIR, "study")
    name = path.stem
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"study {name}: {path} is not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"study {name}: {path} must be a YAML mapping")
    _check_keys(values, SPEC_KEYS, f"study {name}")
    scales = values.get("scales") or {}
    if scale is None:
        scale = CPU_SCALE if CPU_SCALE in scales else PAPER_SCALE
    if scale != PAPER_SCALE:
        if scale not in scales:
            raise ConfigError(
                f"study {name} has no scale {scale!r}; its scales: {[PAPER_SCALE, *scales]}"
            )
        _check_keys(scales[scale], SCALE_KEYS, f"study {name}, scale {scale}")
        values = {
            **values,
            **scales[scale],
            "set": [*values.get("set", []), *scales[scale].get("set", [])],
        }
    where = f"study {name} (scale {scale})"

    variants = values.get("variants")
    if not isinstance(variants, dict) or len(variants) < 2:
        raise ConfigError(f"{where}: variants must map at least 2 labels to training configs")
    bad = [label for label in variants if not LABEL.match(str(label))]
    if bad:
        raise ConfigError(f"{where}: variant labels {bad} must be letters, digits, _ . + -")
    budget = budget or Budget.parse(values.get("budget"), where)
    seeds = tuple(seeds if seeds is not None else values.get("seeds") or ())
    if len(set(seeds)) < 2 or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}: give at least 2 different integer seeds, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: seeds {list(seeds)} repeat a seed")
    every = values.get("validate_every")
    if every is None:
        every = math.ceil(budget.steps / VALIDATIONS) if budget.steps else 100
    if not isinstance(every, int) or every < 1:
        raise ConfigError(f"{where}: validate_every must be a positive number of steps")
    eval_tracks = eval_tracks if eval_tracks is not None else values.get("eval_tracks")
    if eval_tracks is not None and (not isinstance(eval_tracks, int) or eval_tracks < 1):
        raise ConfigError(f"{where}: eval_tracks must be a positive number, got {eval_tracks!r}")
    eval_seconds = values.get("eval_seconds")
    if eval_seconds is not None and (
        not isinstance(eval_seconds, (int, float)) or eval_seconds <= 0
    ):
        raise ConfigError(f"{where}: eval_seconds must be a positive number, got {eval_seconds!r}")

    overrides = (*values.get("set", []), *overrides)
    configs, files, model_configs = {}, {}, {}
    for label, config in variants.items():
        # Configs named by a path are relative to the spec file.
        local = path.parent / str(config)
        config_path = str(local) if local.is_file() else str(config)
        try:
            cfg = load_config(config_path, list(overrides), data=tuple(data))
            model_configs[label] = cfg.model_config()
        except ConfigError as e:
            raise ConfigError(f"{where}, variant {label!r}: {e}") from None
        configs[label], files[label] = cfg, str(config)
    first = next(iter(configs))
    for label, cfg in configs.items():
        for what in ("sources", "sample_rate"):
            mine, theirs = getattr(model_configs[label], what), getattr(model_configs[first], what)
            if mine != theirs:
                raise ConfigError(
                    f"{where}: variants must separate the same sources at the same rate, but "
                    f"{label!r} has {what} {mine!r} and {first!r} has {theirs!r}"
                )
        differ = [
            f
            for f in TrainConfig.field_names()
            if f not in MAY_DIFFER and getattr(cfg, f) != getattr(configs[first], f)
        ]
        if differ:
            raise ConfigError(
                f"{where}: variants may differ only in the model, but {label!r} and {first!r} "
                f"differ in {differ}; set those for all variants in the spec's set: list"
            )
    claims = tuple(
        _claim(c, list(configs), f"{where}, claim {i + 1}")
        for i, c in enumerate(values.get("claims") or [])
    )
    return Study(
        name=name,
        title=str(values.get("title") or name),
        scale=scale,
        variants=configs,
        config_files=files,
        budget=budget,
        seeds=seeds,
        claims=claims,
        validate_every=every,
        eval_tracks=eval_tracks,
        eval_seconds=eval_seconds,
        sources=tuple(model_configs[first].sources),
        sample_rate=int(model_configs[first].sample_rate),
        overrides=tuple(overrides),
    )


# --- running -----------------------------------------------------------------------------


def system_name(label: str, seed: int) -> str:
    """The name of one run in the evaluation (a column of its report)."""
    return f"{label}_s{seed}"


def run_folder(out: Path, label: str, seed: int) -> Path:
    return Path(out) / RUNS_DIR / label / f"seed{seed}"


def read_timeline(folder: Path) -> list[dict[str, float]]:
    """The rows the budget clock logged at each validation: epoch, steps, seconds, losses."""
    try:
        with open(Path(folder) / TIMELINE_FILE) as f:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    except (OSError, ValueError):
        return []


def _finished(study: Study, folder: Path) -> dict[str, Any] | None:
    """The record of a finished run, or None if it still has to (re)train."""
    try:
        return json.loads((folder / DONE_FILE).read_text())
    except (OSError, ValueError):
        pass
    rows = read_timeline(folder)
    budget = study.budget
    # Killed between train() returning and the record being written: the log says it ended.
    if rows and (folder / "config.json").is_file() and not (folder / "backup").exists():
        last = rows[-1]
        if (budget.steps and last["steps"] >= budget.steps) or (
            budget.seconds and last["seconds"] >= budget.seconds
        ):
            return _record(folder)
    return None


def _record(folder: Path) -> dict[str, Any]:
    """What a finished run reports: its budget use and best validation loss; saved as done.json."""
    rows = read_timeline(folder)
    info = json.loads((folder / "config.json").read_text())
    last = rows[-1] if rows else {}
    record = {
        "steps": int(last.get("steps", 0)),
        "seconds": last.get("seconds", 0.0),
        "wall_seconds": last.get("wall", 0.0),
        "best": info.get("best", {}),
    }
    atomic_write_text(folder / DONE_FILE, json.dumps(record, indent=2) + "\n")
    return record


def train_run(
    study: Study, out: Path, label: str, seed: int, display: Progress
) -> tuple[dict, bool]:
    """Train one variant at one seed unless it has finished; returns (record, trained now).

    ``display`` shows the runs of the study; the run's steps go to a child of it.

    A run killed after a finished validation resumes from train.py's backup; one killed
    before its first validation starts afresh.
    """
    from keras_sep.training.study_clock import BudgetClock
    from keras_sep.training.train import BACKUP_DIR, resume_epoch, train

    folder = run_folder(out, label, seed)
    record = _finished(study, folder)
    if record is not None:
        return record, False
    start_epoch = resume_epoch(folder)
    if start_epoch == 0 and folder.exists():
        shutil.rmtree(folder)  # nothing to resume from: start the run afresh
    # Each validation prints a line on a pipe: a run takes minutes.
    steps = display.child(f"{label} seed {seed}", study.budget.steps, "step", lines=EACH)
    steps.set(start_epoch * study.validate_every)
    clock = BudgetClock(
        folder / TIMELINE_FILE,
        study.budget.steps,
        study.budget.seconds,
        start_epoch,
        study.validate_every,
        steps,
    )
    if start_epoch:
        steps.note("resuming")
    # The study's own display says which run trains; train.py's lines would repeat per run.
    train(study.run_config(label, seed), folder, progress=False, announce=False, callbacks=[clock])
    assert not (folder / BACKUP_DIR).exists()
    return _record(folder), True


def check_study_dir(out: Path, study: Study, overwrite: bool = False) -> None:
    """``out`` must be a writable folder, new or holding this same study (to resume it),
    with no file of the user's where the study's plan and report go (unless ``overwrite``).
    """
    from keras_sep.training.study_report import report_files

    check_output_dir(out, "-o")
    for path in [Path(out) / PLAN_FILE, *report_files(Path(out)).values()]:
        check_free(path, overwrite)
    path, plan = Path(out) / PLAN_FILE, study.plan()
    if path.is_file():
        old = json.loads(path.read_text())
        differ = sorted(k for k in set(plan) | set(old) if old.get(k) != plan.get(k))
        if differ:
            raise UsageError(
                f"{out} holds a study with another plan (it differs in {differ}); rerun the "
                "command that started it to resume it, or choose another -o"
            )


def evaluate_study(study: Study, out: Path, musdb_root: str | None, progress: bool):
    """Score every run's best model on the same held-out songs (``keras-sep evaluate``).

    One pass per segment, no test-time augmentation: the paper's models are compared so.
    """
    from keras_sep.evaluate import evaluate, load_models, select_tracks

    extra = {"seconds": study.eval_seconds} if study.eval_seconds else {}
    tracks, data, subset = select_tracks(musdb_root, limit=study.eval_tracks, **extra)
    folders = {
        system_name(label, seed): run_folder(out, label, seed) for label, seed in study.runs()
    }
    models, provenance = load_models(folders)
    return evaluate(
        models,
        tracks,
        out / EVAL_DIR,
        resume=True,
        progress=progress,
        subset=subset,
        tta=1,
        provenance={"data": data, "models": provenance},
    )


def run_study(
    study: Study,
    out: str | Path,
    musdb_root: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Train, evaluate and report one study into ``out``; returns the report's files."""
    from keras_sep.evaluate import PROVENANCE_FILE, SCORES_DIR
    from keras_sep.training.study_report import write_report

    out = Path(out)
    check_study_dir(out, study, overwrite)
    atomic_write_text(out / PLAN_FILE, json.dumps(study.plan(), indent=2) + "\n", overwrite)
    records: dict[str, dict[int, dict]] = {label: {} for label in study.variants}
    runs = study.runs()
    with Progress(f"{study.name} run", len(runs), "run", quiet=not progress) as display:
        if progress:
            display.say(
                f"{study.name}: {len(runs)} runs, each {study.budget.describe()}", sys.stderr
            )
        for label, seed in runs:
            display.start(f"{label} seed {seed}")
            record, trained = train_run(study, out, label, seed, display)
            if trained:
                # Scores of an earlier model of this run are stale; the evaluation's record
                # of model stamps goes too, so that it rescores this run and resumes the rest.
                shutil.rmtree(out / EVAL_DIR / SCORES_DIR / system_name(label, seed), True)
                (out / EVAL_DIR / PROVENANCE_FILE).unlink(missing_ok=True)
            records[label][seed] = record
            display.finish(f"{record['steps']} steps" + ("" if trained else ", finished earlier"))
    results = evaluate_study(study, out, musdb_root, progress)
    return write_report(study, out, records, results)


# --- command line ------------------------------------------------------------------------


DESCRIPTION = (
    "Re-run a comparison of the paper: train every variant of a study with every seed on the "
    "same data for the same budget, score them on the same held-out songs, and write "
    "report.md, report.json and plots with a verdict per claim. Run the same command again "
    "to resume."
)
EPILOG = (
    "Examples:\n"
    "  keras-sep study fig3a -o studies/fig3a            # CPU scale: tiny models\n"
    "  keras-sep study fig3a fig3b table1 -o studies/cpu # all three on a CPU\n"
    "  keras-sep study table1 --scale paper --musdb-root ~/musdb18hq   # on a GPU\n"
    "  keras-sep study my_study.yaml --steps 200 -o studies/mine\n"
    f"Shipped studies: {', '.join(sorted(p.stem for p in STUDY_DIR.glob('*.yaml')))}. "
    "See docs/study.md.\n\n" + textwrap.fill(CACHE_NOTE, 88)
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``keras-sep study`` arguments."""
    p.add_argument(
        "specs", nargs="+", metavar="SPEC", help="a shipped study (fig3a, fig3b, table1) or YAML"
    )
    p.add_argument(
        "-o",
        "--out",
        help="study folder; with several SPECs, each study goes to OUT/<name> "
        "(default: studies/<name>)",
    )
    p.add_argument(
        "--scale",
        help=f"{PAPER_SCALE} (the spec's own budget and presets: a GPU) or a scale the spec "
        f"defines, such as {CPU_SCALE} (tiny models sized for a 2-core CPU, docs/study.md); "
        f"default: {CPU_SCALE} where the spec defines it, else {PAPER_SCALE}",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", choices=["toy"], help="built-in synthetic songs (the default)")
    data.add_argument(
        "--musdb-root", metavar="PATH", help="train on MUSDB18 train, score on its test set"
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="override the budget: N training steps per run")
    budget.add_argument(
        "--seconds", type=float, help="override the budget: S training seconds per run"
    )
    p.add_argument("--seeds", help="override the seeds, comma-separated, e.g. 1,2,3")
    p.add_argument("--eval-tracks", type=int, metavar="N", help="score the first N held-out songs")
    add_set_argument(p, "--set batch_size=4")
    add_quiet_argument(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a plan or report file in the way that keras-sep did not write",
    )


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects integers separated by commas, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``keras-sep study``: load every spec first, so a bad one fails before training."""
    if args.steps is not None or args.seconds is not None:
        kind = "steps" if args.steps is not None else "seconds"
        budget = Budget.parse({kind: getattr(args, kind)}, "--" + kind)
    else:
        budget = None
    if args.musdb_root:
        from keras_sep.data.tracks import detect_layout

        detect_layout(args.musdb_root)  # a missing root fails before anything is written
    data = (str(args.musdb_root),) if args.musdb_root else ("toy",)
    from keras_sep.training.train import check_data_roots

    studies = [
        load_study(
            spec,
            args.scale,
            data=data,
            overrides=args.overrides,
            budget=budget,
            seeds=_seeds(args.seeds),
            eval_tracks=args.eval_tracks,
        )
        for spec in args.specs
    ]
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise ConfigError(f"studies {names} repeat a name; each needs its own folder")
    if len(studies) == 1:
        outs = [Path(args.out or Path("studies") / studies[0].name)]
    else:
        outs = [Path(args.out or "studies") / study.name for study in studies]
    for study, out in zip(studies, outs, strict=True):
        # All of them, and every variant's data, before the first run trains.
        check_study_dir(out, study, args.overwrite)
        for label in study.variants:
            cfg = study.run_config(label, study.seeds[0])
            model_cfg = cfg.model_config()
            check_data_roots(cfg, model_cfg.sources, model_cfg.channels)
    for study, out in zip(studies, outs, strict=True):
        try:
            files = run_study(
                study, out, args.musdb_root, progress=not args.quiet, overwrite=args.overwrite
            )
        except KeyboardInterrupt:
            print("run the same command again to resume the study", file=sys.stderr)
            raise
        print(f"{study.name}: {files['markdown']}")
        for claim in json.loads(files["json"].read_text())["claims"]:
            print(f"  {claim['verdict']}: {claim['claim']}")
    return 0

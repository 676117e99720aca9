"""The training config: defaults are the paper's protocol (section 4); YAML files override them.

A config file sets any of the ``TrainConfig`` fields; ``--set key=value`` on the command line
overrides it (``--set model.num_blocks=3`` sets an architecture field). Each setting lives in
one place: the model's (segment length, sample rate, layers...) under ``model``, resolved
through the architecture registry as the config loads, the rest here. Unknown keys, wrong
types and out-of-range values fail at once with one line. The resolved config is saved in
every run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keras_sep.config import (
    BaseConfig,
    DilatedConfig,
    WaveUNetConfig,
    check_field_types,
    reject_unknown,
    resolve_config,
)
from keras_sep.data.sampler import AUGMENTATIONS
from keras_sep.data.timbre import TIMBRE_EFFECTS, Alteration
from keras_sep.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
PIPELINES = ("auto", "tfdata", "pydataset")
PRECISIONS = ("off", "auto", "bfloat16", "float16")
STRATEGIES = ("default", "mirrored", "multiworker")
# A data source "stems:PATH" is a folder of song folders (--stems-root PATH).
STEMS_PREFIX = "stems:"
# What train.py records about a run in train_config.yaml beside the config's own keys;
# reading such a file back as --config ignores them.
RUN_RECORD_KEYS = ("backend", "device", "dtype_policy", "replicas", "started_from", "held_out")


@dataclass(frozen=True)
class TrainConfig:
    # Model: a registry name, a preset, and field overrides (e.g. {"dilation": "constant:512"},
    # {"segment_length": 8192}); model_config() resolves them.
    architecture: str = "dilated_dense"
    preset: str = "paper"
    model: dict = field(default_factory=dict)

    # Data: "toy" (built-in synthetic songs), MUSDB18 roots (stems or HQ layout) and/or
    # "stems:PATH" folders of song folders.
    data: tuple = ()
    toy_songs: int = 24
    toy_valid_songs: int = 4
    toy_seconds: float = 20.0
    # Chance that a training toy song has no vocals, and that its bass rests in a section.
    toy_missing: float = 0.0
    gain: tuple = (0.7, 1.0)
    # Any of: channel_swap, polarity, remix, and the production effects of
    # keras_sep.data.production (eq, saturation, ..., master; "production" = all of them).
    augmentations: tuple = ()
    effect_probability: dict = field(default_factory=dict)  # overrides, e.g. {reverb: 0.8}
    production_context: float = 0.5  # seconds of audio before a segment that effects hear
    loudness_db: tuple = (-24.0, -10.0)  # mastered mixture RMS, dBFS
    dry_fraction: float = 0.0  # share of examples that skip the production effects
    remix_probability: float = 0.5
    # Timbre effects (keras_sep.data.timbre; "timbre" in augmentations = all of them):
    # per-effect probability overrides, e.g. {filter_bank: 0.5}.
    timbre_probability: dict = field(default_factory=dict)
    # Source -> probability that it is silent in an example (whole segment or a section),
    # e.g. {vocals: 0.25, bass: 0.1}: the model learns to output silence for a missing stem.
    missing_stems: dict = field(default_factory=dict)
    # Weight of the squared error where a target is silent (|sample| below -100 dBFS: a
    # missing stem, a rest) against 1 elsewhere: above 1, leaking into an empty stem costs more.
    silent_target_weight: float = 1.0
    # What counts as silent: "sample" (every silent sample, rests inside a stem included) or
    # "segment" (a target silent over the whole training segment: a missing stem).
    silent_target_span: str = "sample"
    silence_threshold_db: float | None = None  # skip segments with a quieter target
    valid_segments_per_track: int = 8
    # A root without validation songs (no musdb list match, no setup.yaml) holds out this
    # fraction of its training songs, at least one (docs/training.md).
    valid_fraction: float = 0.15
    cache_dir: str | None = None

    # Optimisation (paper: Adam 1e-4, batch 16, ~80 epochs; 30 for the ablations).
    epochs: int = 80
    steps_per_epoch: int | None = None  # default: one pass's worth of the training audio
    batch_size: int = 16
    learning_rate: float = 1e-4
    loss_reduction: str = "sum"  # of the per-source MSEs: "sum" or "mean"
    early_stopping_patience: int | None = None
    # Also save every epoch's weights as epochs/epochNNNN.weights.h5 in the run folder, to
    # average them afterwards (training/average_weights.py, stochastic weight averaging).
    keep_epochs: bool = False
    seed: int = 42
    # Start from the weights of this model folder, run folder or "bundled" (optimizer fresh).
    init_from: str | None = None

    # Execution.
    pipeline: str = "auto"  # tfdata where TensorFlow is installed, else pydataset
    workers: int = 2  # PyDataset threads
    mixed_precision: str = "off"  # auto: bfloat16 where the device has it, else float16
    jit_compile: Any = "auto"
    strategy: str = "default"  # default, mirrored, multiworker (distribute.py)

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("model", "effect_probability", "timbre_probability", "missing_stems"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        checks = {
            "pipeline": PIPELINES,
            "mixed_precision": PRECISIONS,
            "strategy": STRATEGIES,
            "loss_reduction": ("sum", "mean"),
            "jit_compile": ("auto", True, False),
            "silent_target_span": ("sample", "segment"),
        }
        for name, valid in checks.items():
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"{name} must be one of {list(valid)}, got {getattr(self, name)!r}"
                )
        if not 0 < self.valid_fraction < 1:
            raise ConfigError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        reject_unknown(self.augmentations, AUGMENTATIONS, "augmentation")
        if len(self.gain) != 2 or not 0 < self.gain[0] <= self.gain[1]:
            raise ConfigError(f"gain must be [min, max] with 0 < min <= max, got {self.gain}")
        positive = ("epochs", "batch_size", "valid_segments_per_track", "toy_seconds")
        positive += ("learning_rate", "workers", "steps_per_epoch", "early_stopping_patience")
        positive += ("silent_target_weight",)
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        for name in ("toy_songs", "toy_valid_songs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        # Fails here, in one line, on an unknown timbre effect or a probability out of [0, 1].
        Alteration(TIMBRE_EFFECTS, self.timbre_probability, self.missing_stems)
        if not 0 <= self.toy_missing <= 1:
            raise ConfigError(f"toy_missing must be in [0, 1], got {self.toy_missing}")
        if not 0 <= self.remix_probability <= 1:
            raise ConfigError(f"remix_probability must be in [0, 1], got {self.remix_probability}")
        # Resolve the model now, so a bad model.* key fails before any data is read.
        self.model_config()

    def model_config(self) -> BaseConfig:
        """The architecture config: the registry's ``preset`` with the ``model`` overrides."""
        try:
            return resolve_config(self.architecture, self.preset, **self.model)
        except ConfigError as e:
            raise ConfigError(
                f"model of {self.architecture!r} (preset {self.preset!r}): {e}"
            ) from None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def resolve_config_path(name: str, folder: Path = CONFIG_DIR, kind: str = "config") -> Path:
    """A YAML file path, or the name of a shipped one in ``folder`` (``dilated_dense``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = folder / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    raise ConfigError(f"{kind} {name!r} is neither a file nor a shipped {kind}; shipped: {names}")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML (numbers, lists, null...)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"--set {text}: the value is not valid YAML; quote it") from None


def load_config(
    path: str | None = None, overrides: list[str] | None = None, **values
) -> TrainConfig:
    """Defaults, then the YAML file, then ``values``, then ``key=value`` overrides."""
    settings: dict[str, Any] = {}
    if path:
        file = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f" at line {where.line + 1}" if where else ""
            raise ConfigError(
                f"{file} is not valid YAML{line} ({getattr(e, 'problem', None) or e}); fix it "
                "or start from a shipped config (training/configs/)"
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file} must be a YAML mapping of config keys")
        settings.update({k: v for k, v in loaded.items() if k not in RUN_RECORD_KEYS})
    settings.update({k: v for k, v in values.items() if v is not None})
    for text in overrides or []:
        key, value = parse_override(text)
        if key.startswith("model."):
            settings["model"] = {**settings.get("model", {}), key[len("model.") :]: value}
        else:
            settings[key] = value
    if not isinstance(settings.get("model", {}), dict):
        raise ConfigError(
            f"model must be a mapping of architecture fields, got {settings['model']!r}"
        )
    model_fields = sorted(
        set(settings) & {*DilatedConfig.field_names(), *WaveUNetConfig.field_names()}
    )
    hint = (
        f" ({', '.join(model_fields)}: a model field, so set model.{model_fields[0]})"
        if model_fields
        else " (architecture fields go under model, e.g. --set model.num_blocks=3)"
    )
    reject_unknown(settings, TrainConfig.field_names(), "key", "training config", hint)
    return TrainConfig(**settings)


def add_set_argument(parser, example: str = "--set batch_size=4 --set model.num_blocks=3") -> None:
    """The ``--set KEY=VALUE`` option (repeatable) that ``load_config`` reads as overrides."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help=f"override a training config key, e.g. {example}",
    )

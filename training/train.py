"""Train a separation model with ``model.fit``.

    python training/train.py --config training/configs/dilated_dense.yaml --musdb-root ~/musdb18hq
    python training/train.py --config dilated_dense --data toy --set preset=tiny --epochs 2

The run folder (``--out``) is a model folder (config.json + model.weights.h5 of the best
validation loss) plus train_config.yaml, history.csv, history.png, TensorBoard logs and,
while training, a backup/ that lets a killed run resume where it stopped: run the
same command again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import yaml

# Run as a script, this folder is sys.path[0]; the package is what we import.
if __package__ in (None, ""):
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from keras_sep.data.cache import CACHE_NOTE, default_cache_dir  # noqa: E402
from keras_sep.errors import (  # noqa: E402
    ArgumentParser,
    ConfigError,
    DataError,
    UsageError,
    check_output_dir,
    command,
)
from keras_sep.files import atomic_write_text, check_free, claim, make_folder  # noqa: E402
from keras_sep.progress import add_quiet_argument  # noqa: E402
from keras_sep.training.config import (  # noqa: E402
    PRECISIONS,
    STEMS_PREFIX,
    STRATEGIES,
    TrainConfig,
    add_set_argument,
    load_config,
)
from keras_sep.training.distribute import (  # noqa: E402
    Cluster,
    adapt_for_multiworker,
    fit_scope,
    is_data_parallel,
    is_multiworker,
    make_strategy,
    process_share,
    replicas_of,
    shard_datasets,
    worker_of,
)

BACKENDS = ("tensorflow", "jax", "torch")
BACKUP_DIR = "backup"


def get_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Train Wave-U-Net, Dilated U-Net or Dilated Dense U-Net on MUSDB18 or the "
        "built-in synthetic songs. Defaults follow the paper (Adam 1e-4, batch 16, "
        "16384-sample segments, gains in [0.7, 1]).",
        epilog="Examples:\n"
        "  python training/train.py --config dilated_dense --musdb-root ~/musdb18hq\n"
        "  python training/train.py --config dilated_dense --data toy --set preset=tiny "
        "--epochs 2\n"
        "Run the same command again to resume an interrupted run.\n\n"
        + textwrap.fill(CACHE_NOTE, 88),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default="dilated_dense",
        help="YAML file or shipped config name (default: dilated_dense)",
    )
    p.add_argument(
        "--musdb-root",
        action="append",
        default=[],
        metavar="PATH",
        help="MUSDB18 or MUSDB18-HQ root, or any tree in that layout (repeat to combine roots)",
    )
    p.add_argument(
        "--stems-root",
        action="append",
        default=[],
        metavar="PATH",
        help="a folder of song folders, each holding <source>.wav or .flac (repeatable)",
    )
    p.add_argument("--data", choices=["toy"], help="train on the built-in synthetic songs")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    add_set_argument(p)
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--seed", type=int, help="random seed (data sampling and initialisation)")
    p.add_argument(
        "--init-from",
        metavar="FOLDER",
        help="start from the weights of a run or model folder ('bundled': the bundled model); "
        "its architecture and config must match; the optimizer starts fresh",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)",
    )
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="data parallel: mirrored over the local GPUs, or multiworker over several "
        "machines (TensorFlow: TF_CONFIG; JAX: the three flags below); docs/training.md",
    )
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="JAX multiworker: process 0's address (else $KERAS_DISTRIBUTION_JOB_ADDRESSES)",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        help="JAX multiworker: processes in the cluster (else $KERAS_DISTRIBUTION_NUM_PROCESSES)",
    )
    p.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        help="JAX multiworker: this process, 0 to N-1 (else $KERAS_DISTRIBUTION_PROCESS_ID)",
    )
    p.add_argument(
        "--mixed-precision",
        choices=PRECISIONS,
        help="auto: bfloat16 where the device has it, else float16 with loss scaling",
    )
    p.add_argument("--jit-compile", choices=["auto", "true", "false"], help="XLA / jit compile")
    p.add_argument("--cache-dir", help="where decoded, resampled stems are cached (see below)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh even if --out already holds a finished run",
    )
    add_quiet_argument(p)
    return p


def select_backend(name: str | None) -> str:
    """Make ``name`` the Keras backend; it must be chosen before Keras is imported."""
    name = name or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise ConfigError(
                f"Keras is already running on {keras.backend.backend()}; start a new process "
                f"with KERAS_BACKEND={name} to train on {name}"
            )
    os.environ["KERAS_BACKEND"] = name
    return name


def have_tensorflow() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    stems = [STEMS_PREFIX + root for root in args.stems_root]
    data = [*(["toy"] if args.data else []), *args.musdb_root, *stems]
    jit = {"true": True, "false": False}.get(args.jit_compile, args.jit_compile)
    return load_config(
        args.config,
        args.overrides,
        data=data or None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        init_from=args.init_from,
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        jit_compile=jit,
        cache_dir=args.cache_dir,
    )


def check_data_roots(cfg: TrainConfig, sources: tuple[str, ...], channels: int = 2) -> None:
    """Fail at once, in one line, when a data root is missing, not a dataset, has a song
    without a stem or with mismatched stems, or holds audio of other channels than the
    model's: all before any work."""
    from keras_sep.data.tracks import check_musdb_tree, check_stems_root

    for source in cfg.data:
        if source.startswith(STEMS_PREFIX):
            check_stems_root(source[len(STEMS_PREFIX) :], sources)
            have = None  # a folder of stems is matched to the model's channels as it is read
        elif source == "toy":
            have = 2  # the built-in songs are stereo
        else:
            have = check_musdb_tree(source, sources)
        if have is not None and have != channels:
            raise ConfigError(
                f"{'the toy songs' if source == 'toy' else source} have {have}-channel audio "
                f"but the model takes {channels} (model.channels); set model.channels={have} "
                "or use data with that many channels"
            )


TRAIN_CONFIG, HISTORY_CSV, HISTORY_PNG = "train_config.yaml", "history.csv", "history.png"
# Every file a run writes at its top level; a new run checks them all before any work.
RUN_FILES = ("config.json", "model.weights.h5", TRAIN_CONFIG, HISTORY_CSV, HISTORY_PNG)
# Fields a resumed run may change: how long it runs and where its cache lives.
RESUMABLE = {"epochs", "cache_dir", "workers"}


def recorded_config(out: Path) -> dict:
    """The run's recorded train_config.yaml; empty when there is none (or it is unreadable)."""
    try:
        return yaml.safe_load((out / TRAIN_CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def check_resume(out: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a run with another config, listing the fields that differ."""
    old = recorded_config(out)
    if not old:
        return  # nothing recorded: the backup's own restore will judge
    new = cfg.to_dict()
    # "auto" and unset values are resolved when a run starts, and recorded resolved.
    differ = sorted(
        k
        for k in new
        if k not in RESUMABLE
        and k in old
        and new[k] not in ("auto", None)
        and _plain(old[k]) != _plain(new[k])
    )
    if differ:
        fields = "; ".join(
            f"{k}: {_plain(old[k])} in the run, {_plain(new[k])} now" for k in differ
        )
        raise UsageError(
            f"cannot resume {out}: its config differs ({fields}); rerun with the run's "
            "settings, or pass another --out"
        )


def _plain(value):
    """A config value as YAML reads it back (tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(value))


def load_tracks(
    cfg: TrainConfig,
    sample_rate: int,
    sources: tuple[str, ...],
    progress: bool,
    announce: bool = True,
):
    """Cached (train, valid) tracks from every data source, and the songs held out per root.

    A root without validation songs (no musdb validation-list match, no setup.yaml; a
    folder of stems always) gives a deterministic ``valid_fraction`` of its songs.
    """
    from keras_sep.data.cache import cache_tracks, folder_size
    from keras_sep.data.toy import TRAIN_SEED, VALID_SEED
    from keras_sep.data.tracks import hold_out, musdb_tracks, stems_tracks, toy_tracks

    if not cfg.data:
        raise DataError("no training data: pass --musdb-root PATH, --stems-root PATH or --data toy")
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    train, valid, held_out = [], [], {}
    for source in cfg.data:
        if source == "toy":
            train += toy_tracks(
                cfg.toy_songs,
                seed=TRAIN_SEED,
                seconds=cfg.toy_seconds,
                sample_rate=sample_rate,
                missing=cfg.toy_missing,
            )
            valid += toy_tracks(
                cfg.toy_valid_songs,
                seed=VALID_SEED,
                seconds=cfg.toy_seconds,
                sample_rate=sample_rate,
            )
            continue
        if source.startswith(STEMS_PREFIX):
            root = source[len(STEMS_PREFIX) :]
            songs, root_valid = stems_tracks(root, sources), []
        else:
            root = source
            songs = list(musdb_tracks(root, "train", "train", sources))
            try:
                root_valid = list(musdb_tracks(root, "train", "valid", sources))
            except DataError:
                root_valid = []
        if not root_valid:
            names = hold_out([t.name for t in songs], cfg.valid_fraction)
            print(
                f"note: {root} has no validation songs; holding out {len(names)} of "
                f"{len(songs)} songs (valid_fraction {cfg.valid_fraction}): {', '.join(names)}",
                file=sys.stderr,
            )
            held_out[root] = names
            root_valid = [t for t in songs if t.name in names]
            songs = [t for t in songs if t.name not in names]
        train += songs
        valid += root_valid
    cached = (
        cache_tracks(train, cache, sample_rate, progress),
        cache_tracks(valid, cache, sample_rate, progress),
        held_out,
    )
    # Decoded stems add up (hundreds of MB for the toy set): say where they are.
    if announce:
        print(
            f"cache: {cache} ({folder_size(cache) / 1e6:.0f} MB; move it with --cache-dir or "
            "KERAS_SEP_CACHE, delete it to free the space)",
            file=sys.stderr,
        )
    return cached


def make_samplers(cfg: TrainConfig, model_cfg, train_tracks: list, valid_tracks: list):
    """What ``fit`` draws from: (a training sampler for a shard, the validation sampler)."""
    from keras_sep.data.sampler import Augmentation, SegmentSampler

    augmentation = Augmentation.from_names(
        cfg.augmentations,
        cfg.gain,
        cfg.remix_probability,
        timbre_probability=cfg.timbre_probability,
        missing=cfg.missing_stems,
        probability=cfg.effect_probability,
        context=round(cfg.production_context * model_cfg.sample_rate),
        loudness_db=cfg.loudness_db,
        dry_fraction=cfg.dry_fraction,
    )
    sampler_args = dict(
        sources=model_cfg.sources, segment_length=model_cfg.segment_length, seed=cfg.seed
    )

    def train_sampler(shard: tuple[int, int] = (0, 1)) -> SegmentSampler:
        return SegmentSampler(
            train_tracks,
            augmentation=augmentation,
            silence_threshold_db=cfg.silence_threshold_db,
            shard=shard,
            **sampler_args,
        )

    # Validation hears production too (one fixed draw per segment), so the best epoch is
    # the one that separates produced music best.
    valid_sampler = SegmentSampler(
        valid_tracks, augmentation=Augmentation(production=augmentation.production), **sampler_args
    )
    return train_sampler, valid_sampler


def resume_epoch(out: Path) -> int:
    """The epoch a killed run had finished (BackupAndRestore's record), else 0."""
    try:
        return int(json.loads((out / BACKUP_DIR / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def choose_precision(setting: str) -> str | None:
    """The Keras dtype policy for ``--mixed-precision``."""
    if setting == "off":
        return None
    if setting in ("bfloat16", "float16"):
        return f"mixed_{setting}"
    from keras_sep.precision import accelerator

    # CPUs, TPUs and Ampere-or-newer GPUs compute bfloat16; older GPUs need float16.
    gpu = accelerator()
    fp16 = gpu is not None and not gpu.native_bf16
    return "mixed_float16" if fp16 else "mixed_bfloat16"


SILENT_SAMPLE = 1e-5  # -100 dBFS: below it a target sample counts as silence


def target_loss(silent_weight: float = 1.0, span: str = "sample"):
    """Each source's loss: the mean squared error, with the silent parts of the target
    weighted ``silent_weight`` times (1: plain MSE, what Keras's "mse" computes).

    ``span`` says what counts as silent: "sample", every sample below ``SILENT_SAMPLE`` (a
    missing stem, and also every rest inside a stem that plays); "segment", a target silent
    over the whole segment (a stem missing from the example, or a gap longer than it).
    """
    from keras import ops

    def loss(y_true, y_pred):
        error = ops.square(y_pred - y_true)
        if silent_weight != 1.0:
            quiet = ops.abs(y_true) < SILENT_SAMPLE
            if span == "segment":
                quiet = ops.all(quiet, axis=(1, 2), keepdims=True)
            silent = ops.cast(quiet, error.dtype)
            error = error * (1.0 + (silent_weight - 1.0) * silent)
        return ops.mean(error, axis=-1)

    loss.__name__ = "mse" if silent_weight == 1.0 else "silence_weighted_mse"
    return loss


def train(
    cfg: TrainConfig,
    out: Path,
    progress: bool = True,
    overwrite: bool = False,
    announce: bool = True,
    callbacks: list | None = None,
    cluster: Cluster | None = None,
) -> dict:
    """Train according to ``cfg`` into the run folder ``out``; returns fit's history.

    ``callbacks`` are appended to the run's own (backup, best model, logs). ``progress``
    shows the epochs and steps; ``announce`` prints the device, the cache and the time.
    ``cluster``: the JAX cluster flags of ``--strategy multiworker`` (the rest from the
    environment).
    """
    from keras_sep.native_logs import quiet_tensorflow_start

    quiet_tensorflow_start()
    import keras

    from keras_sep.models import SeparationModel
    from keras_sep.training import pipeline
    from keras_sep.training.callbacks import KeepEpochs, SaveBest, TrainProgress, plot_history
    from keras_sep.training.device import cpu_cost_note, training_device
    from keras_sep.training.finetune import check_source, load_source_weights

    # First: a strategy configures the runtime (collectives, a multi-process cluster).
    strategy = make_strategy(cfg.strategy, cluster or Cluster())
    multiworker = is_multiworker(strategy)
    worker = worker_of(strategy)
    replicas = replicas_of(strategy)
    # Only the chief writes the run folder; the others keep their backup beside it.
    out = Path(out) if worker.is_chief else Path(out) / f"worker-{worker.index}"
    progress = progress and worker.is_chief
    start_epoch = resume_epoch(out)
    if (out / "config.json").exists() and start_epoch == 0 and not overwrite:
        raise ConfigError(f"{out} already holds a trained model; pass another --out or --overwrite")
    if start_epoch:
        check_resume(out, cfg)
    else:
        for name in RUN_FILES:
            check_free(out / name, overwrite)
    if start_epoch >= cfg.epochs:
        raise ConfigError(f"{out} has already trained {start_epoch} of {cfg.epochs} epochs")
    model_cfg = cfg.model_config()
    # Checked before the data is cached, so a mismatch fails at once.
    started_from = None
    if cfg.init_from:
        started_from = check_source(cfg.init_from, cfg.architecture, model_cfg)
        if start_epoch:  # the run began from the source as it was then, which may differ now
            started_from = recorded_config(out).get("started_from", started_from)
    # A mistyped root, a song without a stem or a channel mismatch fails before anything else.
    check_data_roots(cfg, model_cfg.sources, model_cfg.channels)
    backend = keras.backend.backend()
    device = training_device(backend)
    if worker.is_chief and announce:
        print(f"training on {backend}, device: {device}", file=sys.stderr)
        if strategy:
            print(
                f"strategy {cfg.strategy}: {replicas} replicas in {worker.count} "
                f"process{'es' if worker.count > 1 else ''}",
                file=sys.stderr,
            )
        note = cpu_cost_note(cfg.architecture, cfg.preset, backend) if device == "CPU" else None
        if note:
            print(note, file=sys.stderr)
    pipeline_name = cfg.pipeline
    if pipeline_name == "auto":
        pipeline_name = "tfdata" if have_tensorflow() else "pydataset"
    if pipeline_name == "tfdata" and not have_tensorflow():
        raise ConfigError("pipeline 'tfdata' needs TensorFlow; use --set pipeline=pydataset")
    if multiworker and pipeline_name != "tfdata":
        raise ConfigError(
            "--strategy multiworker shards the tf.data pipeline; remove --set pipeline=pydataset"
        )

    keras.utils.set_random_seed(cfg.seed)
    policy = choose_precision(cfg.mixed_precision)
    keras.mixed_precision.set_global_policy(policy or "float32")

    train_tracks, valid_tracks, held_out = load_tracks(
        cfg, model_cfg.sample_rate, model_cfg.sources, progress, announce
    )
    train_sampler, valid_sampler = make_samplers(cfg, model_cfg, train_tracks, valid_tracks)
    sampler = train_sampler()
    steps = cfg.steps_per_epoch or sampler.steps_per_epoch(cfg.batch_size)
    remaining = (cfg.epochs - start_epoch) * steps
    batch, valid_plan = cfg.batch_size, None
    if is_data_parallel(strategy):
        # keras.distribution splits what each process feeds over its devices.
        full_plan = valid_sampler.validation_plan(cfg.valid_segments_per_track)
        batch, valid_plan = process_share(cfg.batch_size, full_plan, worker, replicas)
        sampler = train_sampler((worker.index, worker.count))
    if pipeline_name == "pydataset":
        train_data = pipeline.TrainBatches(
            sampler, batch, start_epoch * steps, remaining, cfg.workers
        )
        valid_data = pipeline.ValidationBatches(
            valid_sampler, batch, cfg.valid_segments_per_track, valid_plan
        )
    else:
        if multiworker:
            # Each step takes `local` batches of `batch` from each worker's own shard.
            train_data = shard_datasets(
                strategy,
                cfg.batch_size,
                lambda shard, batch, local: pipeline.tf_dataset(
                    train_sampler(shard), batch, start_epoch * steps * local, remaining * local
                ),
            )
        else:
            train_data = pipeline.tf_dataset(sampler, batch, start_epoch * steps, remaining)
        # Under a multi-worker strategy, tf.distribute shards these segments by example.
        valid_data = pipeline.tf_validation_dataset(
            valid_sampler, batch, cfg.valid_segments_per_track, valid_plan
        )

    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        model = SeparationModel(cfg.architecture, model_cfg)
        # A resumed run's weights come from its backup (BackupAndRestore), not the source.
        if started_from and start_epoch == 0:
            load_source_weights(model, cfg.init_from)
            print(f"starting from the weights of {cfg.init_from}", file=sys.stderr)
        weight = 1.0 if cfg.loss_reduction == "sum" else 1.0 / len(model_cfg.sources)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss={
                s: target_loss(cfg.silent_target_weight, cfg.silent_target_span)
                for s in model_cfg.sources
            },
            loss_weights={s: weight for s in model_cfg.sources},
            jit_compile=cfg.jit_compile,
        )
    adapt_for_multiworker(model, strategy)

    ours = overwrite or start_epoch > 0  # checked above, or written by this run before
    epochs = range(start_epoch + 1, cfg.epochs + 1)
    keep_epochs = KeepEpochs(out, epochs, ours) if cfg.keep_epochs else None  # checks first
    make_folder(out)
    resolved = {
        **cfg.to_dict(),
        "backend": backend,
        "device": device,
        "pipeline": pipeline_name,
        "dtype_policy": policy or "float32",
        "steps_per_epoch": steps,
        "replicas": replicas,
        **({"started_from": started_from} if started_from else {}),
        **({"held_out": held_out} if held_out else {}),
    }
    atomic_write_text(out / TRAIN_CONFIG, yaml.safe_dump(resolved, sort_keys=False), ours)
    run_callbacks = [
        keras.callbacks.BackupAndRestore(str(out / BACKUP_DIR)),
        SaveBest(out, metadata={"training": resolved}, overwrite=ours),
        keras.callbacks.CSVLogger(str(out / HISTORY_CSV), append=start_epoch > 0),
    ]
    if have_tensorflow():
        run_callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard")))
    shown = TrainProgress(cfg.epochs, steps, start_epoch, quiet=not progress)
    callbacks = [*run_callbacks, shown, *(callbacks or [])]
    if keep_epochs:
        callbacks.append(keep_epochs)
    if cfg.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=cfg.early_stopping_patience, verbose=1)
        )
    if start_epoch:
        print(f"resuming {out} after epoch {start_epoch}", file=sys.stderr)
    started = time.time()
    try:
        with fit_scope(strategy):
            history = model.fit(
                train_data,
                epochs=cfg.epochs,
                steps_per_epoch=steps,
                validation_data=valid_data,
                callbacks=callbacks,
                shuffle=False,  # examples are already drawn at random by the sampler
                verbose=0,  # TrainProgress shows it, the same way on every command
            )
    finally:
        shown.close()  # fit skips on_train_end when interrupted
        # fit skips on_train_end when interrupted (Ctrl-C); don't leave the log open.
        for callback in callbacks:
            if isinstance(callback, keras.callbacks.CSVLogger) and callback.csv_file:
                callback.csv_file.close()
        claim([out / HISTORY_CSV])  # Keras wrote it in place: record it as keras-sep's
    if not worker.is_chief:
        shutil.rmtree(out, ignore_errors=True)  # the chief wrote the run folder
        return history.history
    plot_history(out / HISTORY_CSV, out / HISTORY_PNG, overwrite=ours)
    if announce:
        print(f"trained {out} in {time.time() - started:.0f} s", file=sys.stderr)
    return history.history


@command
def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    args = get_parser(prog).parse_args(argv)
    select_backend(args.backend)
    cfg = config_from_args(args)
    out = check_output_dir(args.out or Path("runs") / Path(args.config).stem)
    check_output_dir(cfg.cache_dir or default_cache_dir(), "--cache-dir")
    cluster = Cluster(args.coordinator, args.num_processes, args.process_id)
    train(cfg, out, progress=not args.quiet, overwrite=args.overwrite, cluster=cluster)
    print(f"model folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``keras-sep`` command: demo, separate, evaluate, train, study, export, make-toy-data.

Every subcommand reports a user error as one line (``error: ...``) with exit code 2 (a bad
option or value) or 1 (a failure), never a traceback (``keras_sep.errors.command``). Parsing
imports no Keras, so ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keras_sep.audio import WRITE_FORMATS, sound_format
from keras_sep.errors import (
    ArgumentParser,
    AudioWarning,
    KerasSepError,
    UsageError,
    check_output_dir,
    command,
    describe,
    positive,
)
from keras_sep.precision import add_argument as add_precision_argument
from keras_sep.progress import Progress, add_quiet_argument
from keras_sep.separate import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_OVERLAP,
    DEFAULT_TTA,
    DILATED_BATCH_SIZE,
    tta_views,
)

PLOT_FILE = "spectrograms.png"
BUNDLED_NOTE = (
    "using the bundled demo model: a small Wave-U-Net trained on synthetic songs, not on real "
    "music (pass --model FOLDER to use your own)"
)


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="separate a synthetic song and show the result (no download)",
        description="Generate a synthetic song the model never saw, separate it, and write the "
        "stems, a spectrogram PNG and the SDR of each stem next to the mixture and silence "
        "baselines.",
    )
    p.add_argument(
        "-o", "--out", default="demo_output", help="output folder (default: %(default)s)"
    )
    p.add_argument("--model", help="model folder (default: the bundled demo model)")
    p.add_argument(
        "--seconds", type=positive(float), default=15.0, help="song length (default: %(default)s)"
    )
    p.add_argument(
        "--song", type=nonnegative, default=0, help="which held-out song, 0 or more (default: 0)"
    )
    add_overwrite_argument(p, "files")
    add_quiet_argument(p)
    p.set_defaults(run=_run_demo)


def nonnegative(text: str) -> int:
    """An argparse ``type`` accepting an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _run_demo(args) -> int:
    from keras_sep.demo import format_table, run_demo

    check_output_dir(args.out, "-o/--out")
    if not args.model:
        print(BUNDLED_NOTE, file=sys.stderr)
    summary = run_demo(
        args.out,
        args.model,
        seconds=args.seconds,
        song=args.song,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"{summary['song']}, {summary['seconds']:.0f} s, separated at real-time factor "
        f"{summary['real_time_factor']:.3f}"
    )
    print(format_table(summary["sdr_db"]))
    out = Path(args.out)
    print(
        f"wrote {out / 'estimates'}/, {out / 'references'}/, {out / 'mixture.wav'}, "
        f"{out / 'spectrograms.png'}, {out / 'sdr.json'}"
    )
    return 0


# Seconds: shorter segments give the model too little context, longer ones cost memory
# (activations grow with the segment) for no gain; the models train on 0.74 s.
SEGMENT_RANGE = (0.1, 60.0)
# Beyond 0.9 the model runs more than ten times over each sample for no audible gain.
MAX_OVERLAP = 0.9


def add_overwrite_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: replace files in the way that keras-sep did not write."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} in the way even if keras-sep did not write them (by default "
        "only keras-sep's own earlier outputs are replaced; nothing is ever deleted)",
    )


def add_tta_argument(p: argparse.ArgumentParser) -> None:
    """``--tta N``: test-time augmentation passes, shared by separate and evaluate."""
    p.add_argument(
        "--tta",
        type=int,
        choices=range(1, 5),
        metavar="N",
        default=DEFAULT_TTA,
        help="separate each segment as the mixture, its channel swap and their polarity "
        "inversions, and average: N passes of those four, 1 (fastest) to 4 (best, the "
        "default; mono models take 1 or 2)",
    )


def check_tta(tta: int, models: list) -> None:
    """Refuse ``--tta`` beyond what a model's channel count allows, before any work."""
    for model in models:
        try:
            tta_views(model.arch_config.channels, tta)
        except ValueError as e:
            raise UsageError(f"--tta: {e}") from None


def _add_separate(sub) -> None:
    p = sub.add_parser(
        "separate",
        help="separate audio files or folders of them into stems",
        description="Separate songs (wav, flac, ogg, mp3; others through ffmpeg) into stems "
        "written as OUT/<song>/<source>.<format>; songs found in a folder go to "
        "OUT/<folder>/<path inside it>/. Files that fail are reported and the others are "
        "still separated; the exit code is 1 if any failed. Where the model folder has an ONNX "
        "copy (the bundled model has one), it runs on ONNX Runtime in float32 without "
        "starting TensorFlow: always where the model would compute in float32 on the CPU, "
        "and for jobs under 4 minutes of audio where it would compute in bfloat16 or may "
        "use a GPU.",
    )
    p.add_argument(
        "files", nargs="+", metavar="INPUT", help="audio files, or folders of audio files"
    )
    p.add_argument("-r", "--recursive", action="store_true", help="include subfolders of folders")
    p.add_argument("--model", help="model folder (default: the bundled demo model)")
    p.add_argument("-o", "--out", default="separated", help="output folder (default: %(default)s)")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip songs whose output folder already holds every stem as keras-sep wrote "
        "it (to resume a run); decided before the model loads",
    )
    add_overwrite_argument(p, "stem files")
    p.add_argument("--stems", help="comma-separated sources to write (default: all)")
    p.add_argument(
        "--two-stems",
        metavar="SOURCE",
        help="write SOURCE and no_SOURCE (the sum of the others), e.g. vocals",
    )
    p.add_argument("--format", choices=list(WRITE_FORMATS), default="wav", help="default: wav")
    p.add_argument(
        "--bit-depth",
        choices=["16", "24", "float"],
        help="wav: 16 (default), 24 or float; flac: 16 (default) or 24; ogg and mp3 have none",
    )
    p.add_argument(
        "--segment",
        type=float,
        metavar="SECONDS",
        help=f"segment length in seconds, {SEGMENT_RANGE[0]} to {SEGMENT_RANGE[1]:.0f} "
        "(default: the model's training segment)",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=DEFAULT_OVERLAP,
        help=f"overlap between segments, a fraction from 0 to {MAX_OVERLAP} (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="segments per model call, at least 1 (default: "
        f"{DEFAULT_BATCH_SIZE} for a Wave-U-Net, {DILATED_BATCH_SIZE} for a dilated model)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="compute threads for the model, at least 1 (default: every core; TensorFlow "
        "and torch, not JAX). Decoding and writing run beside it in two threads of their own",
    )
    add_tta_argument(p)
    p.add_argument(
        "--no-gate",
        action="store_true",
        help="no level gate (by default a model folder may name one: the bundled model's "
        "silences vocals, drums and bass wherever they stay far below the mixture for "
        "seconds, a leak, and moves that into other); with --no-mask, the stems exactly as "
        "the model gives them",
    )
    p.add_argument(
        "--no-mask",
        action="store_true",
        help="no soft mask (by default a model folder may name one: the bundled model's gives "
        "each stem the mixture's spectrum by the stems' magnitudes and stereo images, which "
        "takes out much of what leaks between them)",
    )
    add_precision_argument(p)
    p.add_argument(
        "--plot",
        action="store_true",
        help=f"also draw each song's mixture and stems as OUT/<song>/{PLOT_FILE} "
        "(log frequency, dB colour bar)",
    )
    add_quiet_argument(p)
    p.set_defaults(run=_run_separate)


def check_separate_options(args) -> None:
    """Refuse bad ``separate`` options before any work, each with its valid range."""
    low, high = SEGMENT_RANGE
    if args.segment is not None and not low <= args.segment <= high:
        raise UsageError(
            f"--segment must be from {low} to {high:.0f} seconds, got {args.segment}; "
            "leave it out to use the model's training segment"
        )
    if not 0 <= args.overlap <= MAX_OVERLAP:
        raise UsageError(
            f"--overlap must be a fraction from 0 to {MAX_OVERLAP}, got {args.overlap}"
        )
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.stems is not None and not all(s.strip() for s in args.stems.split(",")):
        raise UsageError(
            f"--stems needs comma-separated source names, e.g. vocals,drums; got {args.stems!r}"
        )
    try:
        sound_format(args.format, args.bit_depth)
    except KerasSepError as e:
        raise UsageError(f"--format {args.format} --bit-depth {args.bit_depth}: {e}") from None


def wanted_stems(sources: tuple, only: str | None, two: str | None) -> list[str]:
    """The sources that ``--stems`` / ``--two-stems`` ask for, checked against the model's."""
    if only is not None and two is not None:
        raise UsageError("use either --stems or --two-stems, not both")
    if two is not None:
        wanted = [two]
    else:
        wanted = [s.strip() for s in only.split(",")] if only is not None else list(sources)
    unknown = [s for s in wanted if s not in sources]
    if unknown:
        raise UsageError(f"unknown source(s) {unknown}; this model separates {list(sources)}")
    return list(dict.fromkeys(wanted))


def _run_separate(args) -> int:
    import keras_sep
    from keras_sep.batch import check_song, complete, plan
    from keras_sep.folder import read_config
    from keras_sep.separate import stem_names

    check_separate_options(args)
    check_output_dir(args.out, "-o")
    songs = plan(args.files, args.out, args.recursive)
    for path, _, why in songs.skipped:
        print(f"skipping {path}: {why}", file=sys.stderr)
    failed = list(songs.failed)
    for _, message in failed:
        print(f"error: {message}", file=sys.stderr)
    if not songs.songs and not songs.failed:
        raise UsageError(
            f"no audio files in {' '.join(args.files)}"
            + ("" if args.recursive else "; pass -r to look in subfolders")
        )
    # The stems asked for and every song's output are checked before the model loads.
    _, config = read_config(args.model or keras_sep.DEFAULT_MODEL)
    wanted = wanted_stems(config.sources, args.stems, args.two_stems)
    names = stem_names(wanted, args.two_stems)
    out = Path(args.out)
    todo, skipped = [], Counter(kind for _, kind, _ in songs.skipped)
    for song in songs.songs:
        folder = out / song.folder
        if args.skip_existing and complete(folder, names, args.format):
            print(f"skipping {song.path}: {folder}/ already holds its stems", file=sys.stderr)
            skipped[DONE] += 1
            continue
        try:
            check_song(folder, names, args.format, args.overwrite, PLOT_FILE if args.plot else None)
        except KerasSepError as e:
            print(f"error: {song.path}: {e}", file=sys.stderr)
            failed.append((song.path, f"{song.path}: {e}"))
            continue
        if song.note:
            print(f"note: {song.path} goes to {folder}/ ({song.note})", file=sys.stderr)
        todo.append(song)
    done = _separate_songs(args, todo, wanted, names, failed) if todo else (0, 0.0, 0.0)
    print(_summary(*done, failed, skipped))
    for _, message in failed:
        print(f"  failed: {message}")
    return 1 if failed else 0


DONE = "already separated"
SKIP_NAMES = {
    DONE: "already separated",
    "subfolder": "folders without -r",
    "not audio": "not audio",
    "keras-sep output": "keras-sep's own stems",
    "unreadable": "unreadable",
}


def _summary(separated: int, audio: float, seconds: float, failed: list, skipped) -> str:
    kinds = [f"{SKIP_NAMES.get(kind, kind)}: {n}" for kind, n in skipped.items() if n]
    line = f"separated {separated}, skipped {sum(skipped.values())}"
    line += f" ({', '.join(kinds)})" if kinds else ""
    line += f", failed {len(failed)}"
    if separated:
        line += (
            f": {audio:.1f} s of audio in {seconds:.1f} s, real-time factor {seconds / audio:.3f}"
        )
    return line


def _separate_songs(args, todo: list, wanted: list, names: list, failed: list):
    """Separate ``todo`` in order; returns (songs done, audio seconds, wall seconds).

    A full disk stops the batch: every later song would fail the same way.
    """
    import errno

    import keras_sep
    from keras_sep.separate import separate_to_folder
    from keras_sep.spectrograms import plot_separated
    from keras_sep.warm_start import ONNX_NOTE, audio_seconds, onnx_separator

    if not args.model:
        print(BUNDLED_NOTE, file=sys.stderr)
    folder = args.model or keras_sep.DEFAULT_MODEL
    seconds = audio_seconds(song.path for song in todo)
    model = onnx_separator(folder, args.precision, args.threads, seconds)
    if model is not None:
        print(f"precision: float32 ({ONNX_NOTE})", file=sys.stderr)
    else:  # the Keras model: cap its threads before the backend starts
        if args.threads:
            from keras_sep.native_logs import quiet_tensorflow_start
            from keras_sep.threads import limit_threads

            quiet_tensorflow_start()
            why = limit_threads(args.threads)
            if why:
                print(f"note: --threads {args.threads} not applied: {why}", file=sys.stderr)
        model = keras_sep.load(folder, precision=args.precision)
    check_tta(args.tta, [model])
    if not args.no_gate:
        from keras_sep.gate import model_gate

        model_gate(model)  # a bad "gate" in the folder's config fails here, before any work
    if not args.no_mask:
        from keras_sep.mask import model_mask

        model_mask(model)  # as a bad "mask"
    segment = round(args.segment * model.sample_rate) if args.segment else None
    out = Path(args.out)
    separated, audio_seconds, started = 0, 0.0, time.time()
    with Progress("separating", len(todo), "song", quiet=args.quiet) as bar:
        for i, song in enumerate(todo):
            t0 = time.time()
            bar.start(song.path.name)
            try:
                with _audio_warnings(bar.say):
                    result = separate_to_folder(
                        model,
                        song.path,
                        out / song.folder,
                        stems=wanted,
                        two_stems=args.two_stems,
                        fmt=args.format,
                        bit_depth=args.bit_depth,
                        segment=segment,
                        overlap=args.overlap,
                        batch_size=args.batch_size,
                        tta=args.tta,
                        **({"gate": None} if args.no_gate else {}),
                        **({"mask": None} if args.no_mask else {}),
                        overwrite=args.overwrite,
                        progress=bar.child("segments", unit="batch").callback,
                    )
            except (KerasSepError, OSError) as e:
                message = describe(e)[1]
                if not isinstance(e, KerasSepError) and str(song.path) not in message:
                    message = f"{song.path}: {message}"
                bar.say(f"error: {message}", file=sys.stderr)
                failed.append((song.path, message))
                bar.finish("failed")
                if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                    rest = len(todo) - i - 1
                    if rest:
                        message = f"{rest} later song(s) not tried: the disk is full"
                        bar.say(f"error: {message}", file=sys.stderr)
                        failed.append((None, message))
                    break
                continue
            elapsed = time.time() - t0
            separated += 1
            audio_seconds += result.seconds
            bar.say(
                f"{song.path}: {', '.join(names)} -> {out / song.folder}/ "
                f"({result.seconds:.1f} s of audio in {elapsed:.1f} s, "
                f"real-time factor {elapsed / result.seconds:.3f})"
            )
            if args.plot:
                plot = out / song.folder / PLOT_FILE
                plot_separated(song.path, result.files, plot, args.overwrite)
            bar.finish()
    return separated, audio_seconds, time.time() - started


@contextmanager
def _audio_warnings(say) -> Iterator[None]:
    """Report our ``AudioWarning``s as one ``warning:`` line each; others pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AudioWarning)
        yield
    for w in caught:
        if issubclass(w.category, AudioWarning):
            say(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _add_make_toy_data(sub) -> None:
    p = sub.add_parser(
        "make-toy-data",
        help="write built-in synthetic songs in MUSDB18-HQ layout",
        description="Write synthetic multitrack songs as OUT/{train,test}/<song>/<stem>.wav "
        "(MUSDB18-HQ layout) plus OUT/setup.yaml listing the validation songs, for "
        "--musdb-root.",
    )
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--songs", type=int, default=8, help="training songs (default: 8)")
    p.add_argument("--valid", type=int, default=2, help="validation songs (default: 2)")
    p.add_argument("--test", type=int, default=3, help="test songs (default: 3)")
    p.add_argument(
        "--seconds", type=positive(float), default=20.0, help="song length (default: 20)"
    )
    p.add_argument(
        "--sample-rate", type=positive(int), default=44100, help="default: 44100, as MUSDB18"
    )
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    add_overwrite_argument(p, "files")
    add_quiet_argument(p)
    p.set_defaults(run=_run_make_toy_data)


def _run_make_toy_data(args) -> int:
    from keras_sep.data.toy import write_musdb_tree

    if min(args.songs, args.valid, args.test) < 0:
        raise UsageError("--songs, --valid and --test must be >= 0")
    check_output_dir(args.out, "OUT")
    root = write_musdb_tree(
        args.out,
        args.songs,
        args.valid,
        args.test,
        args.seconds,
        args.sample_rate,
        args.seed,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {args.songs + args.valid} train ({args.valid} validation) and {args.test} test "
        f"songs to {root}"
    )
    return 0


def _add_evaluate(sub) -> None:
    from keras_sep import metrics
    from keras_sep.data.toy import HELD_OUT_SEED
    from keras_sep.evaluate import TOY_RATE, TOY_SECONDS, TOY_TRACKS

    p = sub.add_parser(
        "evaluate",
        help="score models with museval (BSSEval v4) and write a report",
        description="Separate every track with each model, score it (BSSEval v4, 1-second "
        "frames, the MUSDB18 protocol), and write per-track JSON, report.md, report.json and "
        "plots.",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="[NAME=]FOLDER",
        help="model folder to evaluate; repeat to compare several in one table "
        "(default: the bundled demo model). NAME sets its column name (default: the "
        "folder's name)",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument("--musdb-root", metavar="PATH", help="MUSDB18 or MUSDB18-HQ root folder")
    data.add_argument(
        "--data",
        choices=["toy"],
        help=f"built-in synthetic songs (seed {HELD_OUT_SEED}, unseen in training, "
        f"{TOY_SECONDS:.0f} s at {TOY_RATE} Hz)",
    )
    p.add_argument("--subset", choices=["test", "train"], default="test")
    p.add_argument("--split", choices=["train", "valid"], help="with --subset train: musdb's split")
    p.add_argument(
        "--tracks",
        type=positive(int),
        metavar="N",
        help=f"evaluate the first N tracks (default: all; {TOY_TRACKS} toy songs)",
    )
    p.add_argument("-o", "--output", default="report", metavar="REPORT_DIR", help="report folder")
    p.add_argument(
        "--jobs",
        type=positive(int),
        default=1,
        metavar="N",
        help="score N tracks in parallel processes",
    )
    p.add_argument(
        "--scorer",
        choices=list(metrics.SCORERS),
        default="fast",
        help="BSSEval v4 implementation: 'fast' (keras_sep.metrics, same numbers as museval, "
        "about 20x faster) or 'museval' itself",
    )
    p.add_argument(
        "--oracle", action="store_true", help="add the ideal-ratio-mask oracle row (upper bound)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue a report folder, skipping scored tracks"
    )
    add_overwrite_argument(p, "report files")
    p.add_argument(
        "--batch-size",
        type=positive(int),
        help="segments per model call (default: "
        f"{DEFAULT_BATCH_SIZE} for a Wave-U-Net, {DILATED_BATCH_SIZE} for a dilated model)",
    )
    add_tta_argument(p)
    # float32 by default: scores that do not depend on the machine they were computed on.
    add_precision_argument(p, default="float32")
    add_quiet_argument(p)
    p.set_defaults(run=_run_evaluate)


def model_arguments(values: list[str] | None) -> dict[str, Path]:
    """{name: folder} from ``--model [NAME=]FOLDER`` arguments (default: the bundled model)."""
    import os

    import keras_sep
    from keras_sep.errors import DataError

    out: dict[str, Path] = {}
    for value in values or [keras_sep.DEFAULT_MODEL]:
        name, sep, folder = value.partition("=")
        if not sep or "/" in name or os.sep in name:
            name, folder = Path(value).name or value, value
        if name in out:
            raise DataError(
                f"two models are called {name!r}; name them with NAME=FOLDER, "
                f"e.g. --model a={folder}"
            )
        out[name] = Path(folder)
    return out


def _run_evaluate(args) -> int:
    from keras_sep.evaluate import evaluate, load_models, select_tracks
    from keras_sep.report import table1_markdown

    if not args.musdb_root and args.data != "toy":
        raise UsageError("choose the data: --musdb-root PATH (MUSDB18) or --data toy")
    check_output_dir(args.output, "-o/--output")
    tracks, data, subset = select_tracks(args.musdb_root, args.subset, args.split, args.tracks)
    models, described = load_models(model_arguments(args.model), args.precision)
    check_tta(args.tta, list(models.values()))
    results = evaluate(
        models,
        tracks,
        args.output,
        scorer=args.scorer,
        jobs=args.jobs,
        resume=args.resume,
        include_oracle=args.oracle,
        progress=not args.quiet,
        subset=subset,
        batch_size=args.batch_size,
        tta=args.tta,
        provenance={"data": data, "models": described},
        overwrite=args.overwrite,
    )
    # The Table-1-style section on the terminal; everything else is in the report.
    print(table1_markdown(results))
    print(f"\nreport: {results.files['markdown']}")
    return 0


def _add_study(sub) -> None:
    # The study runner trains, so it lives in the training package (training/study.py).
    from keras_sep.training import study

    p = sub.add_parser(
        "study",
        help="re-run a comparison of the paper (Fig. 3a, Fig. 3b, Table 1) with a verdict",
        description=study.DESCRIPTION,
        epilog=study.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    study.add_arguments(p)
    p.set_defaults(run=study.run)


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="keras-sep",
        description="Music source separation (vocals, drums, bass, other) with Keras 3: "
        "Wave-U-Net, Dilated U-Net and Dilated Dense U-Net.",
        epilog="Start with: keras-sep demo. Train with: keras-sep train --help.",
    )
    from keras_sep import __version__

    parser.add_argument("--version", action="version", version=f"keras-sep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(sub)
    _add_separate(sub)
    _add_evaluate(sub)
    _add_study(sub)
    # train and export have their own parsers (training/train.py, export/cli.py), imported
    # only when they run; everything after the command's name goes to them.
    for name, help in FORWARDED.items():
        sub.add_parser(name, help=help, add_help=False).add_argument(
            "args", nargs=argparse.REMAINDER
        )
    _add_make_toy_data(sub)
    return parser


FORWARDED = {
    "train": "train a model (see keras-sep train --help)",
    "export": "export a model folder to SavedModel, TFLite and ONNX, each checked against Keras "
    "(see keras-sep export --help)",
}


@command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from keras_sep.training.train import main as train_main

        return train_main(argv[1:], prog="keras-sep train")
    if argv[:1] == ["export"]:
        from keras_sep.export.cli import main as export_main

        return export_main(argv[1:], prog="keras-sep export")
    args = get_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

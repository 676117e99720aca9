"""Real-time factor of Keras and of each exported artifact on the same song, through `separate`.

    python benchmarks/export_speed.py                              # the three tiny models
    python benchmarks/export_speed.py --arch wave_u_net --preset paper
    python benchmarks/export_speed.py --arch dilated_dense --formats onnx --quantized

Keras runs in float32 and, where the backend can, in bfloat16 (keras_sep/precision.py).
``--quantized`` adds TFLite dynamic / float16 and the ONNX model after ONNX Runtime's
``quantize_dynamic`` (int8 weights, activations quantized on the fly).

Each model (random weights: speed does not depend on them) is saved, exported with
``keras_sep.export.export_folder`` and run on one built-in toy song of ``--seconds``
at the model's sample rate by the shared overlap-add routine. RTF = separation time /
song duration (below 1: faster than real time). One warm-up call per runtime is not timed
(TF traces, TFLite allocates). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

RUNTIMES = ("keras", "saved_model", "tflite", "onnx")
LABELS = {
    "keras": "Keras",
    "keras_bf16": "Keras bfloat16",
    "saved_model": "SavedModel",
    "tflite": "TFLite",
    "tflite_dynamic": "TFLite dynamic",
    "tflite_float16": "TFLite float16",
    "onnx": "ONNX Runtime",
    "onnx_int8": "ONNX Runtime int8",
}


def song(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """The mixture of built-in toy song ``seed`` (stereo, four stems)."""
    from keras_sep.data.toy import generate_song

    return np.sum(list(generate_song(seed, seconds, rate).values()), axis=0, dtype=np.float32)


def time_separation(predictor, mixture: np.ndarray, batch_size: int) -> tuple[float, float, dict]:
    """(wall-clock seconds, process CPU seconds, stems) of separating ``mixture`` once.

    CPU seconds / cores is the wall-clock time an idle machine would take at best, a
    figure that load from other work on the machine does not move.
    """
    from keras_sep.separate import separate

    cfg = predictor.arch_config
    warm = np.zeros((batch_size, cfg.valid_length(cfg.segment_length), cfg.channels), np.float32)
    predictor.predict_on_batch(warm)
    start, cpu = time.perf_counter(), time.process_time()
    stems = separate(predictor, mixture, batch_size=batch_size, tta=1)  # one pass
    return time.perf_counter() - start, time.process_time() - cpu, stems


def bench(
    arch: str,
    preset: str,
    seconds: float,
    batch_size: int,
    quantized: bool,
    formats: tuple[str, ...] = RUNTIMES[1:],
) -> dict:
    import keras_sep
    from keras_sep.export import export_folder, load_artifact
    from keras_sep.export.checks import max_abs_error
    from keras_sep.export.tflite import TFLiteRunner, convert_tflite
    from keras_sep.precision import backend_bf16_error
    from keras_sep.serving import read_manifest

    model = keras_sep.build(arch, preset=preset)
    mixture = song(seconds, model.sample_rate)
    row: dict = {"model": f"{arch} ({preset})", "params": model.count_params()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = keras_sep.save(model, Path(tmp) / "model")
        start = time.perf_counter()
        export_folder(folder, Path(tmp) / "export", formats=formats)
        row["export_s"] = time.perf_counter() - start
        predictors = {"keras": keras_sep.load(folder)}
        if backend_bf16_error() is None:
            predictors["keras_bf16"] = keras_sep.load(folder, precision="bfloat16")
        predictors.update({fmt: load_artifact(Path(tmp) / "export", fmt) for fmt in formats})
        if quantized and "onnx" in formats:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            from keras_sep.export.onnx_model import OnnxRunner

            path = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(Path(tmp) / "export" / "model.onnx", path, weight_type=QuantType.QInt8)
            predictors["onnx_int8"] = OnnxRunner(path, read_manifest(Path(tmp) / "export"))
        for mode in ("dynamic", "float16") if quantized and "saved_model" in formats else ():
            saved_model = Path(tmp) / "export" / "saved_model" / "1"
            path = convert_tflite(saved_model, Path(tmp) / f"{mode}.tflite", mode)
            manifest = read_manifest(Path(tmp) / "export")
            predictors[f"tflite_{mode}"] = TFLiteRunner(path, manifest)
        # Parity on random input, as the export's own check and the tests do.
        cfg = model.arch_config
        x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, cfg.valid_length(4096), 2))
        x = x.astype(np.float32)
        expected = predictors["keras"].predict_on_batch(x)
        row["parity"] = {
            name: max_abs_error(expected, p.predict_on_batch(x))
            for name, p in predictors.items()
            if name != "keras"
        }
        reference = None
        row["rtf"], row["cpu"], row["stem_error"] = {}, {}, {}
        for name, predictor in predictors.items():
            elapsed, cpu, stems = time_separation(predictor, mixture, batch_size)
            if reference is None:
                reference = stems
            row["rtf"][name] = elapsed / seconds
            row["cpu"][name] = cpu / seconds / (os.cpu_count() or 1)
            row["stem_error"][name] = max_abs_error(reference, stems)
            print(f"  {row['model']} {LABELS[name]}: RTF {elapsed / seconds:.4f}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["wave_u_net", "dilated", "dilated_dense"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--quantized",
        action="store_true",
        help="also time TFLite dynamic / float16 and ONNX Runtime after quantize_dynamic (int8)",
    )
    parser.add_argument(
        "--formats", nargs="+", choices=RUNTIMES[1:], default=RUNTIMES[1:], help="default: all"
    )
    args = parser.parse_args(argv)
    from keras_sep.precision import describe_machine

    rows = [
        bench(a, args.preset, args.seconds, args.batch_size, args.quantized, tuple(args.formats))
        for a in args.arch
    ]
    names = [n for n in LABELS if n in rows[0]["rtf"]]
    print(f"\n{args.seconds:g} s stereo song, batch {args.batch_size}; {describe_machine()}\n")
    for title, key in [("RTF", "rtf"), ("CPU s / audio s / cores (the idle-machine floor)", "cpu")]:
        print(f"{title}:\n")
        print("| model | params | " + " | ".join(LABELS[n] for n in names) + " |")
        print("|---|---|" + "---|" * len(names))
        for row in rows:
            cells = " | ".join(f"{row[key][n]:.4f}" for n in names)
            print(f"| {row['model']} | {row['params']:,} | {cells} |")
        print()
    for title, key in [
        ("max abs error vs Keras, random input in [-0.5, 0.5], 2 x 4096 x 2", "parity"),
        (f"max abs difference of the {args.seconds:g} s stems from Keras's", "stem_error"),
    ]:
        print(f"\n{title}:\n")
        print("| model | " + " | ".join(LABELS[n] for n in names[1:]) + " |")
        print("|---|" + "---|" * (len(names) - 1))
        for row in rows:
            cells = " | ".join(f"{row[key][n]:.1e}" for n in names[1:])
            print(f"| {row['model']} | {cells} |")
    print(
        f"\nexport time ({', '.join(args.formats)}, with the parity check): "
        + ", ".join(f"{row['model']} {row['export_s']:.0f} s" for row in rows)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The SavedModel's whole-song signature: peak memory per minute of song, and request sizes.

    nice -n 15 python benchmarks/song_serving.py [--minutes 1 5 10] [--model FOLDER] [--tta N]

Exports the model folder (default: the bundled demo model) with its ``separate_song`` and
``separate_wav`` signatures, then:

1. Memory: for each length, a fresh process loads the SavedModel, builds a stereo song at
   the model's rate (one-minute built-in toy songs one after another) and runs
   ``separate_song`` on it in process, as TF Serving would; the parent prints that
   process's peak resident memory (the kernel's accounting, wait4) and its time. A
   process that runs a 1-second song gives the baseline (TensorFlow, the model, tracing);
   the cost per minute is the slope between the shortest and the longest song.
2. Payload: the bytes of each request and answer for a 3-minute song: REST with a WAV
   file (``separate_wav``, base64 in JSON), gRPC with float32 tensors (``separate_song``,
   a ``PredictRequest`` / ``PredictResponse`` as tensorflow-serving-api builds them, or
   TensorFlow's ``TensorProto``s when that package is absent) and, for comparison, REST
   with float32 as JSON numbers (what the Python client sends).

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "keras_sep" / "pretrained" / "demo"
SONG_SECONDS = 60.0


def song(minutes: float, rate: int) -> np.ndarray:
    """``minutes`` of stereo audio at ``rate``: one-minute toy songs one after another."""
    from keras_sep.data import toy

    frames = max(1, round(minutes * 60 * rate))
    pieces, have, seed = [], 0, 0
    while have < frames:
        piece = sum(toy.generate_song(seed, SONG_SECONDS, rate).values()) * 0.5
        pieces.append(piece[: frames - have])
        have += len(pieces[-1])
        seed += 1
    return np.concatenate(pieces).astype(np.float32)


def child(saved_model: str, minutes: float, rate: int) -> None:
    """Run ``separate_song`` once on a song of ``minutes``; print the seconds it took."""
    import tensorflow as tf

    fn = tf.saved_model.load(saved_model).signatures["separate_song"]
    audio = tf.constant(song(minutes, rate))
    started = time.perf_counter()
    outputs = fn(audio=audio)
    assert all(v.shape == audio.shape for v in outputs.values())
    print(time.perf_counter() - started)


def measure(saved_model: Path, minutes: float, rate: int) -> tuple[float, float]:
    """Peak RSS in MiB and separation seconds of one child process."""
    argv = [sys.executable, __file__, "--child", str(saved_model), str(minutes), str(rate)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own peak, unlike RUSAGE_CHILDREN (the maximum over all).
    _, status, usage = os.wait4(process.pid, 0)
    out, err = process.stdout.read().decode(), process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"the {minutes:g}-minute run failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, float(out.split()[-1])


def payloads(saved_model: Path, rate: int, sources: list[str]) -> list[tuple[str, int, int]]:
    """(form, request bytes, answer bytes) for a 3-minute song."""
    import soundfile as sf
    import tensorflow as tf

    audio = song(3.0, rate)
    with tempfile.TemporaryDirectory() as tmp:
        sf.write(Path(tmp) / "song.wav", audio, rate, subtype="PCM_16")
        wav = (Path(tmp) / "song.wav").read_bytes()
    loaded = tf.saved_model.load(str(saved_model))
    stems = loaded.signatures["separate_wav"](wav=tf.constant(wav))
    wav_request = {
        "signature_name": "separate_wav",
        "inputs": {"wav": {"b64": base64.b64encode(wav).decode()}},
    }
    wav_answer = {
        "outputs": {k: {"b64": base64.b64encode(v.numpy()).decode()} for k, v in stems.items()}
    }
    rows = [
        ("REST, WAV (`separate_wav`)", len(json.dumps(wav_request)), len(json.dumps(wav_answer)))
    ]

    floats = loaded.signatures["separate_song"](audio=tf.constant(audio))
    protos = {k: tf.make_tensor_proto(v.numpy()) for k, v in floats.items()}
    try:
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "keras_sep", "separate_song"
        request.inputs["audio"].CopyFrom(tf.make_tensor_proto(audio))
        answer = predict_pb2.PredictResponse()
        for k, v in protos.items():
            answer.outputs[k].CopyFrom(v)
        sizes = request.ByteSize(), answer.ByteSize()
    except ImportError:  # the tensors alone: what the messages hold, less a few bytes
        sizes = tf.make_tensor_proto(audio).ByteSize(), sum(p.ByteSize() for p in protos.values())
    rows.append(("gRPC, float32 (`separate_song`)", *sizes))
    float_request = {"signature_name": "separate_song", "inputs": {"audio": audio.tolist()}}
    float_answer = {"outputs": {k: v.numpy().tolist() for k, v in floats.items()}}
    rows.append(
        (
            "REST, float32 as JSON (`separate_song`)",
            len(json.dumps(float_request)),
            len(json.dumps(float_answer)),
        )
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 10.0])
    p.add_argument("--model", default=str(BUNDLED), help="model folder (default: the bundled demo)")
    p.add_argument("--tta", type=int, default=4, help="TTA passes of the exported signatures")
    p.add_argument("--no-payload", dest="payload", action="store_false")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], float(args.child[1]), int(args.child[2]))

    from keras_sep.export import export_folder

    with tempfile.TemporaryDirectory() as tmp:
        manifest = export_folder(
            args.model, Path(tmp) / "export", formats=["saved_model"], verify=False, tta=args.tta
        )
        saved_model = Path(tmp) / "export" / manifest["artifacts"]["saved_model"]["path"]
        rate = manifest["sample_rate"]
        print(
            f"model: {args.model} ({manifest['architecture']}), tta {args.tta}, {rate} Hz stereo\n"
        )
        print("| song | peak RSS | separate_song time | real-time factor |")
        print("|---|---|---|---|")
        base, _ = measure(saved_model, 1 / 60, rate)
        print(f"| 1 s (baseline) | {base:.0f} MiB | | |", flush=True)
        peaks = []
        for minutes in args.minutes:
            peak, seconds = measure(saved_model, minutes, rate)
            peaks.append(peak)
            rtf = seconds / (minutes * 60)
            print(f"| {minutes:g} min | {peak:.0f} MiB | {seconds:.1f} s | {rtf:.3f} |", flush=True)
        if len(peaks) > 1:
            slope = (peaks[-1] - peaks[0]) / (args.minutes[-1] - args.minutes[0])
            span = f"{args.minutes[0]:g} to {args.minutes[-1]:g} min"
            print(f"\nper minute of song: {slope:.0f} MiB (slope from {span})")
        if args.payload:
            print("\n| 3-minute song | request | answer |")
            print("|---|---|---|")
            for form, request, answer in payloads(saved_model, rate, manifest["sources"]):
                print(f"| {form} | {request / 1e6:.1f} MB | {answer / 1e6:.1f} MB |")


if __name__ == "__main__":
    main()

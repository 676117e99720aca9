"""The pipelined separation: stages in threads give the same stems as one after the other,
overlap for real, and stop cleanly with one error and no output when any stage fails."""

from __future__ import annotations

import functools
import re
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

import keras_sep
from keras_sep import warm_start
from keras_sep.audio import BLOCK_FRAMES, read_audio
from keras_sep.cli import main
from keras_sep.config import WaveUNetConfig
from keras_sep.data import toy
from keras_sep.errors import AudioError, KerasSepError
from keras_sep.separate import separate_file, separate_to_folder
from keras_sep.threads import DEPTH, background, in_order

# The module: keras_sep.separate is the function of that name.
separation = sys.modules["keras_sep.separate"]


def stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "keras-sep stage"]


def test_background_yields_everything_in_order():
    assert list(background(iter(range(100)))) == list(range(100))
    assert not stage_threads()


def test_background_raises_the_stage_error_in_the_consumer():
    def items():
        yield 1
        raise AudioError("bad block")

    got = []
    with pytest.raises(AudioError, match="bad block"):
        for item in background(items()):
            got.append(item)
    assert got == [1] and not stage_threads()


def test_background_runs_a_bounded_distance_ahead_and_stops_when_closed():
    made, closed = [], threading.Event()

    def items():
        try:
            for n in range(1000):
                made.append(n)
                yield n
        finally:
            closed.set()

    stream = background(items())
    assert next(stream) == 0
    for _ in range(50):  # give the producer time to fill its queue
        if len(made) > DEPTH:
            break
        threading.Event().wait(0.02)
    # One taken, DEPTH queued, one waiting to be queued: never the whole song.
    assert len(made) <= DEPTH + 2
    stream.close()
    assert closed.is_set() and not stage_threads()


def test_in_order_keeps_depth_calls_running_and_their_order():
    running, most, lock = [0], [0], threading.Lock()
    first_alone = []

    def work(n):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            if n == 0:
                first_alone.append(running[0] == 1)
        threading.Event().wait(0.01 * (n % 3))  # later calls may finish first
        with lock:
            running[0] -= 1
        return n * n

    assert list(in_order(range(30), work, 3)) == [(n, n * n) for n in range(30)]
    assert most[0] == 3 and first_alone == [True]
    assert list(in_order(range(5), work, 1)) == [(n, n * n) for n in range(5)]
    assert list(in_order([], work, 2)) == []
    # Without ``first_alone`` (a model with nothing to build) the first call is in the pool.
    first = []
    calls = in_order(range(6), lambda n: first.append(threading.current_thread().name), 2, False)
    assert len(list(calls)) == 6 and all(name.startswith("keras-sep call") for name in first)
    assert list(in_order([], work, 2, first_alone=False)) == []


def test_in_order_starts_the_next_call_while_the_consumer_holds_a_result():
    """A thread that finishes a call takes the queued one: while the consumer works on
    result n, call n + depth has started (with depth 2: results n + 1 and n + 2)."""
    started, change = [], threading.Condition()

    def work(n):
        with change:
            started.append(n)
            change.notify_all()
        return n

    stream = in_order(range(12), work, 2)
    for n, _ in stream:
        if 1 <= n <= 8:
            with change:
                assert change.wait_for(lambda n=n: max(started) >= n + 2, timeout=10)
    assert sorted(started) == list(range(12))


def test_in_order_raises_a_call_error_and_starts_nothing_after_close():
    started = []

    def work(n):
        started.append(n)
        if n == 3:
            raise AudioError("bad batch")
        return n

    with pytest.raises(AudioError, match="bad batch"):
        list(in_order(range(100), work, 2))
    assert max(started) <= 6  # the failed call, two running and one queued after it
    started.clear()
    stream = in_order(range(100), work, 2)
    assert next(stream) == (0, 0)
    stream.close()
    assert len(started) <= 3


@pytest.mark.parametrize("model", ["bundled", "dilated"])
def test_two_model_calls_at_once_give_the_stems_of_one(monkeypatch, model):
    """A model under TensorFlow takes two calls at once; one at a time gives the same."""
    if model == "bundled":
        model = keras_sep.load(keras_sep.DEFAULT_MODEL)
    else:
        model = keras_sep.build("dilated_dense", preset="tiny", segment_length=4096)
    assert model.parallel_calls and separation.calls_at_once(True) == 2
    calls = []
    original = model.predict_on_batch

    def counted(x):
        calls.append(threading.current_thread().name)
        return original(x)

    monkeypatch.setattr(model, "predict_on_batch", counted)
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (9 * 16384, 2)).astype("float32")
    at_once = separation.separate(model, x)
    assert sum(name.startswith("keras-sep call") for name in calls) >= 2
    monkeypatch.setattr(separation, "CALLS_AT_ONCE", 1)
    one_at_a_time = separation.separate(model, x)
    for source, stem in one_at_a_time.items():
        np.testing.assert_allclose(at_once[source], stem, atol=1e-6, rtol=0)


def test_the_onnx_copy_gets_a_short_last_batch_and_the_same_stems(monkeypatch):
    """The bundled model's ONNX copy takes any batch size (``any_batch``): a song of 9
    segments goes as batches of 4, 4 and 1, not a last batch padded to 4, with the stems
    of padded batches (bit for bit: each segment is computed alone either way)."""
    runner = warm_start.onnx_runner(keras_sep.DEFAULT_MODEL)
    assert runner.any_batch
    sizes = []
    original = runner.predict_on_batch

    def counted(x):
        sizes.append(len(x))
        return original(x)

    monkeypatch.setattr(runner, "predict_on_batch", counted)
    plan = separation.segment_plan(runner.arch_config)
    x = np.random.default_rng(4).uniform(-0.5, 0.5, (8 * plan.hop + plan.segment, 2))
    short = separation.separate(runner, x.astype("float32"), tta=1)
    assert sizes == [4, 4, 1]
    runner.any_batch = False
    padded = separation.separate(runner, x.astype("float32"), tta=1)
    assert sizes[3:] == [4, 4, 4]
    for source, stem in padded.items():
        np.testing.assert_array_equal(short[source], stem)


class Scaler:
    """Source k is (k + 1) / 8 x the input: exact arithmetic, fast."""

    def __init__(self):
        self.arch_config = WaveUNetConfig.preset("tiny", segment_length=1024)

    def predict_on_batch(self, x):
        return {s: x / 8 * (k + 1) for k, s in enumerate(self.arch_config.sources)}


def write_song(path, frames, rate=22050, seed=0):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (frames, 2)).astype("float32")
    sf.write(path, x, rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("model", ["scaler", "bundled"])
def test_pipelined_stems_equal_sequential_stems(tmp_path, model):
    model = Scaler() if model == "scaler" else keras_sep.load(keras_sep.DEFAULT_MODEL)
    path = write_song(tmp_path / "song.wav", 3 * BLOCK_FRAMES + 17, rate=44100)
    piped = separate_file(model, path, tta=2).stems
    one_by_one = separate_file(model, path, tta=2, pipeline=False).stems
    for source, stem in one_by_one.items():
        assert stem.shape == (3 * BLOCK_FRAMES + 17, 2)
        np.testing.assert_allclose(piped[source], stem, atol=1e-6, rtol=0)
    assert not stage_threads()


def test_a_folder_separated_pipelined_equals_sequential(tmp_path, monkeypatch, capsys):
    songs = tmp_path / "songs"
    songs.mkdir()
    for n in range(2):
        mixture = sum(toy.generate_song(n, 4.0, 22050).values())
        sf.write(songs / f"song{n}.wav", mixture, 22050, subtype="FLOAT")
    argv = ["separate", str(songs), "--tta", "1", "--format", "wav", "--bit-depth", "float", "-q"]
    assert main([*argv, "-o", str(tmp_path / "piped")]) == 0
    sequential = functools.partial(separation.separate_stream, pipeline=False)
    monkeypatch.setattr(separation, "separate_stream", sequential)
    assert main([*argv, "-o", str(tmp_path / "sequential")]) == 0
    capsys.readouterr()
    stems = sorted((tmp_path / "sequential").rglob("*.wav"))
    assert len(stems) == 8
    for path in stems:
        other = tmp_path / "piped" / path.relative_to(tmp_path / "sequential")
        np.testing.assert_allclose(read_audio(other)[0], read_audio(path)[0], atol=1e-6, rtol=0)


class Failing(Scaler):
    """Fails on its ``fail_at``-th call, after earlier blocks were written."""

    def __init__(self, fail_at):
        super().__init__()
        self.calls, self.fail_at, self.lock = 0, fail_at, threading.Lock()

    def predict_on_batch(self, x):
        with self.lock:  # calls may come from two threads
            self.calls += 1
            failing = self.calls == self.fail_at
        if failing:
            raise KerasSepError("the model stage failed")
        return super().predict_on_batch(x)


@pytest.mark.parametrize("parallel", [False, True])
def test_a_model_failure_midway_is_raised_and_leaves_no_output(tmp_path, parallel):
    """One call at a time, or two at once and one queued: then the call beside the failed
    one, and the queued one, which the thread freed by the failure may take before the
    error reaches the consumer (seen on a loaded machine), may have started."""
    path = write_song(tmp_path / "song.wav", 4 * BLOCK_FRAMES)
    model = Failing(fail_at=20)
    model.parallel_calls = parallel
    with pytest.raises(KerasSepError, match="the model stage failed"):
        separate_to_folder(model, path, tmp_path / "out", tta=1)
    assert 20 <= model.calls <= 20 + 2 * parallel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]
    assert not stage_threads()
    assert not [t for t in threading.enumerate() if t.name.startswith("keras-sep call")]


def test_a_write_failure_stops_the_decoder_and_the_model(tmp_path, monkeypatch):
    from keras_sep import audio

    path = write_song(tmp_path / "song.wav", 6 * BLOCK_FRAMES)
    real = audio._open_for_writing

    def failing_after_one_block(target, *args):
        closing, write = real(target, *args)
        blocks = []

        def write_once(block):
            blocks.append(len(block))
            if len(blocks) > 1:
                raise OSError(28, "No space left on device", str(target.parent))
            write(block)

        return closing, write_once

    model = Failing(fail_at=-1)
    separate_file(model, path, tta=1)
    batches, model.calls = model.calls, 0
    monkeypatch.setattr(audio, "_open_for_writing", failing_after_one_block)
    with pytest.raises(OSError, match="No space left"):
        separate_to_folder(model, path, tmp_path / "out", tta=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]
    assert not stage_threads()
    # The model stage stopped within a few batches of the failure, not at the song's end.
    assert model.calls < batches / 2, (model.calls, batches)


def test_a_decoding_failure_midway_is_one_line_and_leaves_no_output(tmp_path, monkeypatch, capsys):
    """A FLAC cut short decodes for seconds, then loses sync: the model has run on the
    first blocks by then, and the command still ends in one line and writes nothing."""
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "full.flac", rng.uniform(-0.3, 0.3, (6 * BLOCK_FRAMES, 2)), 44100)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) * 6 // 10])
    (tmp_path / "full.flac").unlink()
    model = Failing(fail_at=-1)
    monkeypatch.setattr(keras_sep, "load", lambda *args, **kwargs: model)
    monkeypatch.setattr(warm_start, "onnx_separator", lambda *args: None)
    code = main(["separate", str(tmp_path / "cut.flac"), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code != 0
    assert model.calls > 0
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"error: .*cut.flac cannot be decoded after [1-9][0-9.]* s .*", errors[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.flac"]
    assert not stage_threads()


def test_the_decoder_runs_while_the_model_computes(tmp_path):
    """The model's first call waits until the decoder has read past the first blocks:
    only a pipeline can do that (one after the other, the reader would be waiting on the
    model)."""
    from keras_sep.audio import open_audio

    path = write_song(tmp_path / "song.wav", 4 * BLOCK_FRAMES)
    read_ahead = threading.Event()
    blocks_read = []

    class Watched(Scaler):
        def predict_on_batch(self, x):
            assert read_ahead.wait(timeout=30), "the decoder did not run during the model call"
            return super().predict_on_batch(x)

    with open_audio(path) as reader:
        real_read = reader.read

        def read(frames):
            block = real_read(frames)
            blocks_read.append(len(block))
            if len(blocks_read) >= 3:
                read_ahead.set()
            return block

        reader.read = read
        stems = list(separation.separate_stream(Watched(), reader, tta=1))
    assert sum(len(b["vocals"]) for b in stems) == 4 * BLOCK_FRAMES


def test_threads_caps_the_model_in_a_fresh_process_and_changes_no_stem(tmp_path, model_folder):
    """--threads 1 is applied (no note that it was not) and the stems are the same."""
    import subprocess

    path = write_song(tmp_path / "song.wav", BLOCK_FRAMES)
    outputs = {}
    for threads in ([], ["--threads", "1"]):
        out = tmp_path / f"out{len(threads)}"
        done = subprocess.run(
            [sys.executable, "-m", "keras_sep.cli", "separate", str(path), "-o", str(out)]
            + ["--model", str(model_folder), "--bit-depth", "float", "-q", *threads],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert "not applied" not in done.stderr
        outputs[len(threads)] = read_audio(out / "song" / "vocals.wav")[0]
    np.testing.assert_allclose(outputs[2], outputs[0], atol=1e-6, rtol=0)

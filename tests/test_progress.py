"""What a person sees: one progress display, a bar on a terminal, plain lines on a pipe.

The unit tests drive ``keras_sep.progress`` with streams that say they are or are not a
terminal. The slow test runs every long command for real, on a pseudo-terminal, on a pipe
and with ``--quiet``, with tiny models and seconds of audio, and reads what each shows.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keras_sep.native_logs import is_native_log, native_logs_hidden
from keras_sep.progress import BAR, END, LINES, OFF, Progress, display_mode

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_items(stream, **kwargs) -> str:
    with Progress("songs", 2, "song", stream=stream, **kwargs) as shown:
        for name in ("a.wav", "b.wav"):
            shown.start(name)
            segments = shown.child("segments", unit="batch")
            for done in (1, 2, 3):
                segments.callback(done, 3)
            shown.finish()
    return stream.getvalue()


def test_a_terminal_gets_a_bar_naming_the_current_item():
    stream = Terminal()
    assert display_mode(stream=stream) == BAR
    text = run_items(stream)
    assert "\r" in text and "songs: 100%" in text and "2/2" in text
    # The item is named while it runs, not after: the bar shows a.wav before 1/2.
    assert text.index("a.wav") < text.index("1/2")
    assert "\rsegments:" in text  # the nested bar of the song's parts, under the first


def test_a_pipe_gets_one_plain_line_per_finished_item():
    stream = io.StringIO()
    assert display_mode(stream=stream) == LINES
    lines = run_items(stream).splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2
    assert re.fullmatch(r"songs 1/2 a\.wav: \d+\.\d s", lines[0]), lines
    assert lines[1].startswith("songs 2/2 b.wav: ")


def test_quiet_shows_nothing_anywhere():
    for stream in (Terminal(), io.StringIO()):
        assert display_mode(quiet=True, stream=stream) == OFF
        assert run_items(stream, quiet=True) == ""


def test_fine_grained_items_give_one_line_at_the_end_on_a_pipe():
    stream = io.StringIO()
    with Progress("separating", 6, "batch", stream=stream, lines=END) as shown:
        for done in range(1, 7):
            shown.set(done)
    assert re.fullmatch(r"separating: 6/6 batches in \d+\.\d s\n", stream.getvalue())


def test_say_prints_in_every_mode(capsys):
    for quiet in (False, True):
        with Progress("x", 1, stream=Terminal(), quiet=quiet) as shown:
            shown.say("result line")
    assert capsys.readouterr().out == "result line\nresult line\n"


def test_native_log_lines_on_descriptor_2_are_dropped_and_the_rest_kept(capfd, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    lines = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        b"W0000 00:00:1796300830.165817   11893 tf_tfl_flatbuffer_helpers.cc:392] Ignored "
        b"output_format.\n",
        b"I0000 00:00:1796300833.205311   11893 devices.cc:67] Number of eligible GPUs (core "
        b"count >= 8, compute capability >= 0.0): 0\n",
        b"2026-12-03 12:26:38.205900: I tensorflow/core/platform/cpu_feature_guard.cc:210] "
        b"This TensorFlow binary is optimized\n",
        b"a line of our own\n",
    ]
    with native_logs_hidden():
        for line in lines:
            os.write(2, line)  # as C++ writes: below Python's sys.stderr
    assert capfd.readouterr().err == "a line of our own\n"
    assert [is_native_log(line.decode()) for line in lines] == [True] * 4 + [False]


# --- every long command, on a terminal, on a pipe, with --quiet --------------------------

DRIVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import keras_sep  # first, as the keras-sep command does: it quiets TensorFlow's logs
    import keras
    from keras_sep.cli import main

    tmp, mode = Path(sys.argv[1]), sys.argv[2]
    quiet = ["--quiet"] if mode == "quiet" else []
    keras.utils.set_random_seed(0)
    model = tmp / "tiny"
    if not model.exists():
        keras_sep.save(keras_sep.build("dilated", preset="tiny", segment_length=4096), model)
    spec = tmp / "two.yaml"
    spec.write_text(
        "title: two\\nvariants: {a: a.yaml, b: b.yaml}\\n"
        "claims: [{better: b, worse: a, text: wider}]\\nbudget: {steps: 2}\\nseeds: [1, 2]\\n"
        "validate_every: 1\\neval_tracks: 1\\neval_seconds: 2\\n"
        f"set: [preset=tiny, toy_songs=1, toy_valid_songs=1, toy_seconds=2, "
        f"model.segment_length=1024, batch_size=2, valid_segments_per_track=1, "
        f"jit_compile=false, cache_dir={tmp / 'cache'}]\\n"
    )
    (tmp / "a.yaml").write_text("architecture: wave_u_net\\n")
    (tmp / "b.yaml").write_text("architecture: wave_u_net\\nmodel: {filters: 6}\\n")
    out = tmp / mode
    small = ["--set", "preset=tiny", "--set", "toy_songs=1", "--set", "toy_valid_songs=1",
             "--set", "toy_seconds=2", "--set", "model.segment_length=1024",
             "--set", "batch_size=2", "--set", "valid_segments_per_track=1",
             "--set", "steps_per_epoch=2", "--set", "jit_compile=false"]
    commands = {
        "make-toy-data": ["make-toy-data", str(out / "toy"), "--songs", "1", "--valid", "0",
                          "--test", "1", "--seconds", "1"],
        "demo": ["demo", "-o", str(out / "demo"), "--seconds", "2"],
        "separate": ["separate", str(out / "demo" / "mixture.wav"), "--model", str(model),
                     "-o", str(out / "sep"), "--tta", "1"],
        "evaluate": ["evaluate", "--model", str(model), "--data", "toy", "--tracks", "1",
                     "--tta", "1", "-o", str(out / "report")],
        "train": ["train", "--config", "wave_u_net", "--data", "toy", "--epochs", "2",
                  *small, "--cache-dir", str(tmp / "cache"), "--out", str(out / "run")],
        "study": ["study", str(spec), "-o", str(out / "study")],
        "export": ["export", str(model), "--out", str(out / "export"), "--formats",
                   "saved_model", "tflite"],
    }
    for name, argv in commands.items():
        print(f"=== {name} ===", flush=True)
        code = main(argv + quiet)
        print(f"=== {name} exit {code} ===", flush=True)
    """
)
# What each command prints on a pipe: one plain line per finished item.
LINES_SEEN = {
    "make-toy-data": [r"^toy songs 1/2 train/Toy Song \d+: \d", r"^toy songs 2/2 test/"],
    "demo": [r"^separating: \d+/\d+ batches in "],
    "separate": [r"^separating 1/1 mixture\.wav: \d"],
    "evaluate": [r"^evaluate 1/1 Toy Song \d+ \(seed \d+\): \d"],
    "train": [
        r"^caching at 22050 Hz: 1/1 tracks in ",
        r"^epoch 1/2: loss \S+, val_loss \S+, ",
        r"^epoch 2/2: loss ",
    ],
    "study": [
        r"^two: 4 runs, each ",
        r"^a seed 1 1/2 steps: \d+ s, loss \S+, val_loss ",
        r"^two run 1/4 a seed 1: 2 steps, ",
        r"^two run 4/4 b seed 2: 2 steps, ",
        r"^evaluate 1/1 ",
    ],
    "export": [r"^export 1/4 SavedModel -> saved_model/1: \d", r"^export 4/4 tflite against"],
}


def run_driver(tmp: Path, mode: str) -> dict[str, str]:
    """Run every command in one process (TensorFlow loads once); {command: what it showed}.

    ``mode``: "terminal" (a pseudo-terminal), "pipe", or "quiet" (a pipe, ``--quiet``).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    terminal = mode == "terminal"
    argv = [sys.executable, "-c", DRIVER, str(tmp), mode]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    if terminal:
        master, slave = pty.openpty()
        # 24 rows of 120 columns, as a terminal window says its size.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        chunks: list[bytes] = []

        def drain() -> None:  # a full pty would block the command
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=drain)
        reader.start()
        proc = subprocess.run(
            argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, timeout=900
        )
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
        text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    else:
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            timeout=900,
        )
        text = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    sections = re.split(r"^=== (\S+) ===\n", text, flags=re.M)[1:]
    shown = dict(zip(sections[::2], sections[1::2], strict=True))
    for name, body in shown.items():
        assert f"=== {name} exit 0 ===" in body, body[-2000:]
    assert set(shown) == set(LINES_SEEN)
    return shown


@pytest.mark.slow
def test_every_long_command_on_a_terminal_a_pipe_and_quiet(tmp_path):
    # Each run keeps about one core busy for a minute (tiny models: Python, not maths), so
    # the three run side by side, each in its own folder.
    modes = ("pipe", "terminal", "quiet")
    with ThreadPoolExecutor(len(modes)) as pool:
        runs = [pool.submit(run_driver, tmp_path / mode, mode) for mode in modes]
        on_pipe, on_terminal, quiet = (run.result() for run in runs)
    for name, patterns in LINES_SEEN.items():
        body = on_pipe[name]
        assert "\r" not in body, (name, body)
        for pattern in patterns:
            assert re.search(pattern, body, flags=re.M), (name, pattern, body)
        native = [line for line in body.splitlines() if is_native_log(line)]
        assert native == [], (name, native)  # no TensorFlow / absl C++ log lines

    for name, body in on_terminal.items():
        # tqdm redraws its bar in place: carriage returns and a percentage.
        assert "\r" in body and re.search(r"\d+%\|", body), (name, body)
        assert not re.search(LINES_SEEN[name][0], body, flags=re.M), (name, body)

    for name, body in quiet.items():
        assert "\r" not in body, (name, body)
        for pattern in LINES_SEEN[name]:
            assert not re.search(pattern, body, flags=re.M), (name, pattern, body)

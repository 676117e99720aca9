"""Keep TensorFlow's C++ log lines off the terminal.

TensorFlow's own logger obeys ``TF_CPP_MIN_LOG_LEVEL`` (``keras_sep`` sets it to 3 before
TensorFlow loads), but its converters log through absl, which ignores it and writes
straight to file descriptor 2: ``tf_tfl_flatbuffer_helpers.cc:392] Ignored output_format.``
from the TFLite converter, ``devices.cc:67] Number of eligible GPUs ...`` from Grappler,
each after ``WARNING: All log messages before absl::InitializeLog() is called are written
to STDERR``. ``native_logs_hidden`` runs a block with descriptor 2 sent to a file and
passes on every line of it that is not such a log line.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# absl: "W0000 00:00:1796300830.165817   11893 file.cc:392] ..."; TensorFlow's own:
# "2026-12-03 12:26:38.205900: I tensorflow/core/file.cc:210] ..."; absl's first-use notice.
NATIVE_LINE = re.compile(
    r"[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: [IWEF] \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    # The second line of TensorFlow's CPU-feature notice.
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate"
)


def is_native_log(line: str) -> bool:
    """Whether ``line`` is a C++ log line of TensorFlow or absl."""
    return NATIVE_LINE.match(line) is not None


@contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Run the block with C++ log lines on descriptor 2 dropped, other output kept.

    ``TF_CPP_MIN_LOG_LEVEL=0`` (asking for every log line) turns this off.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_native_log(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow_start() -> None:
    """Import TensorFlow now, with its start-up log lines dropped, if Keras will run on it.

    TensorFlow 2.21 prints ``All log messages before absl::InitializeLog() is called ...``
    and oneDNN / CUDA-driver notices through absl when it is imported, whatever
    ``TF_CPP_MIN_LOG_LEVEL`` says (2.17 prints nothing). Called where a command is about to
    load Keras, so that no command shows them; other backends skip it.
    """
    import importlib.util

    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    with native_logs_hidden():
        import tensorflow as tf

        # Device discovery logs too ("failed call to cuInit" on a machine without a GPU).
        tf.config.list_physical_devices()

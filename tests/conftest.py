import os

import pytest

# Quiet TensorFlow's C++ start-up logs in test output, as keras_sep does (the CUDA build's
# spurious cuDNN/cuFFT/cuBLAS registration lines are ERROR level).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """A tiny dilated model folder: separates a few seconds of audio in about a second."""
    import keras

    import keras_sep

    folder = tmp_path_factory.mktemp("model")
    # Seeded: with random weights the difference stem can pass 1.0 and clip in PCM files,
    # so an unseeded model made format tests pass or fail by chance.
    keras.utils.set_random_seed(0)
    keras_sep.save(keras_sep.build("dilated", preset="tiny", segment_length=4096), folder)
    return folder

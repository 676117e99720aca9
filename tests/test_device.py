"""train.py says where it trains, and what a CPU costs for the paper-size dilated models."""

from keras_sep.training.device import cpu_cost_note, training_device


def test_training_device_names_the_gpu_or_the_cpu():
    import tensorflow as tf

    device = training_device("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        assert device not in ("", "CPU")  # the card's name
    else:
        assert device == "CPU"


def test_cpu_cost_note_for_paper_size_dilated_models_only():
    note = cpu_cost_note("dilated_dense", "paper", "tensorflow")
    assert note.startswith("note: training the paper-size dilated_dense on the CPU")
    assert "196 s a step" in note and "93 h a MUSDB18 epoch" in note
    assert 'pip install "keras-sep[cuda]"' in note and "--backend jax" in note
    assert "\n" not in note
    jax = cpu_cost_note("dilated", "paper", "jax")
    assert "81 s a step" in jax and "keras-sep[jax-cuda]" in jax and "--backend jax" not in jax
    assert cpu_cost_note("dilated_dense", "tiny", "tensorflow") is None
    assert cpu_cost_note("wave_u_net", "paper", "tensorflow") is None

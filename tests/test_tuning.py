"""The torch speed settings: what is turned on, when, and the off switch (tuning.py).

Stand-ins for the torch module play a CUDA machine, with torch's newer (fp32_precision)
or older (allow_tf32) TF32 settings.
"""

from types import SimpleNamespace

import keras
import pytest

from keras_sep.errors import ConfigError
from keras_sep.tuning import TUNING_ENV, apply_backend_tuning, tune_torch, tuning_enabled


def fake_torch(cuda=True, new_api=True, matmul="none", conv="tf32", precision="highest"):
    """torch as keras-sep sees it, with torch's defaults unless told otherwise."""
    if new_api:
        matmul_settings = SimpleNamespace(fp32_precision=matmul)
        cudnn = SimpleNamespace(benchmark=False, conv=SimpleNamespace(fp32_precision=conv))
    else:
        matmul_settings = SimpleNamespace(allow_tf32=False)
        cudnn = SimpleNamespace(benchmark=False, allow_tf32=True)
    return SimpleNamespace(
        cuda=SimpleNamespace(is_available=lambda: cuda),
        backends=SimpleNamespace(cudnn=cudnn, cuda=SimpleNamespace(matmul=matmul_settings)),
        get_float32_matmul_precision=lambda: precision,
    )


def test_cuda_gets_autotuning_and_tf32():
    torch = fake_torch()
    assert tune_torch(torch, {}) == ["cudnn.benchmark=True", "cuda.matmul.fp32_precision=tf32"]
    assert torch.backends.cudnn.benchmark
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # torch's default already
    assert tune_torch(torch, {}) == []  # nothing left to change


def test_the_users_choices_stay():
    torch = fake_torch(matmul="ieee", conv="ieee")
    assert tune_torch(torch, {}) == ["cudnn.benchmark=True"]
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"


def test_older_torch_uses_allow_tf32_unless_a_precision_was_chosen():
    torch = fake_torch(new_api=False)
    assert tune_torch(torch, {}) == ["cudnn.benchmark=True", "cuda.matmul.allow_tf32=True"]
    assert torch.backends.cuda.matmul.allow_tf32
    chosen = fake_torch(new_api=False, precision="medium")
    assert tune_torch(chosen, {}) == ["cudnn.benchmark=True"]
    assert not chosen.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_the_off_switch_leaves_torch_untouched(value):
    torch = fake_torch()
    assert tune_torch(torch, {TUNING_ENV: value}) == []
    assert not torch.backends.cudnn.benchmark
    assert torch.backends.cuda.matmul.fp32_precision == "none"


def test_cpu_only_torch_is_left_alone():
    torch = fake_torch(cuda=False)
    assert tune_torch(torch, {TUNING_ENV: "1"}) == []
    assert not torch.backends.cudnn.benchmark


def test_a_bad_setting_says_what_to_set():
    assert tuning_enabled({}) and tuning_enabled({TUNING_ENV: "1"})
    with pytest.raises(ConfigError, match=f"{TUNING_ENV}='fast' is not understood.*0"):
        tuning_enabled({TUNING_ENV: "fast"})


def test_the_real_torch_module():
    import torch

    changed = tune_torch(torch, {})  # reads every setting it touches: no AttributeError
    if torch.cuda.is_available():
        assert torch.backends.cudnn.benchmark
    else:
        assert changed == []


def test_only_torch_on_cuda_is_tuned():
    import torch

    if keras.backend.backend() != "torch" or not torch.cuda.is_available():
        assert apply_backend_tuning() == ()

"""The three architectures, composed from ``blocks``, and the registry behind ``build``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import keras

from keras_sep import blocks
from keras_sep.config import (
    Architecture,
    BaseConfig,
    DilatedConfig,
    WaveUNetConfig,
    architecture,
    register_config,
    resolve_config,
)
from keras_sep.errors import ConfigError
from keras_sep.precision import model_precision, policy_scope, resolve
from keras_sep.tuning import apply_backend_tuning


def wave_u_net(mixture, cfg: WaveUNetConfig):
    """Wave-U-Net: 12 conv + decimation levels, a bottleneck, 12 upsampling levels."""
    impl, f = cfg.conv_impl, cfg.filters
    x, skips = mixture, []
    for i in range(1, cfg.levels + 1):
        skip, x = blocks.down_level(x, f * i, cfg.down_kernel, f"down{i}", impl)
        skips.append(skip)
    x = blocks.conv_leaky_relu(x, f * (cfg.levels + 1), cfg.down_kernel, 1, "bottleneck_conv", impl)
    for i in range(cfg.levels, 0, -1):
        x = blocks.up_level(x, skips[i - 1], f * i, cfg.up_kernel, f"up{i}", impl)
    return x


def down_block(x, cfg: DilatedConfig, b: int, dilations, name: str):
    """Down block ``b`` (or the bottleneck): dilated convolutions at full resolution.

    Plain: one convolution per dilation rate. Dense: a dense block, then a 1x1 transition.
    """
    impl = cfg.conv_impl
    if not cfg.dense:
        return blocks.dilated_block(x, cfg.block_filters(b), cfg.kernel_size, dilations, name, impl)
    x = blocks.dense_block(x, cfg.block_growth(b), cfg.kernel_size, dilations, name, impl)
    return blocks.transition(x, cfg.block_transition(b), f"{name}_transition", impl)


def up_block(x, skip, cfg: DilatedConfig, b: int, name: str):
    """Up block ``b``: transposed dilated convolutions, rates in reverse, fed the skip.

    Plain: the skip is concatenated to the input once. Dense: the dense skip connection
    feeds it to every layer, then a 1x1 transition.
    """
    impl, dilations = cfg.conv_impl, cfg.dilations[b - 1][::-1]
    if not cfg.dense:
        x = blocks.concat([x, skip], f"{name}_skip")
        return blocks.dilated_block(
            x, cfg.block_filters(b), cfg.up_kernel, dilations, name, impl, transpose=True
        )
    x = blocks.dense_skip_block(
        x, skip, cfg.block_growth(b), cfg.up_kernel, dilations, name, impl, transpose=True
    )
    return blocks.transition(x, cfg.block_transition(b), f"{name}_transition", impl)


def dilated_u_net(mixture, cfg: DilatedConfig):
    """Dilated U-Net, or Dilated Dense U-Net when ``cfg.dense`` (the paper's Fig. 1 and 2).

    Down blocks, a bottleneck of undilated layers, and up blocks fed the matching down
    block's output, all at full resolution.
    """
    x, skips = mixture, []
    for b, dilations in enumerate(cfg.dilations, 1):
        x = down_block(x, cfg, b, dilations, f"down{b}")
        skips.append(x)
    x = down_block(x, cfg, cfg.num_blocks + 1, [1] * cfg.bottleneck_layers, "bottleneck")
    for b in range(cfg.num_blocks, 0, -1):
        x = up_block(x, skips[b - 1], cfg, b, f"up{b}")
    return x


# Builders by architecture name; the configs are registered in ``keras_sep.config``.
_BODIES: dict[str, Callable] = {
    "wave_u_net": wave_u_net,
    "dilated": dilated_u_net,
    "dilated_dense": dilated_u_net,
}


def register_architecture(arch: Architecture, body: Callable) -> None:
    """Add an architecture: ``body(mixture, cfg)`` returns the features fed to the source head."""
    register_config(arch)
    _BODIES[arch.name] = body


def architectures() -> list[str]:
    """Names accepted by ``build``."""
    return sorted(_BODIES)


def presets(name: str) -> list[str]:
    """Preset names of architecture ``name`` (``paper`` is the paper's configuration)."""
    return sorted(_lookup(name)[0].config_class.PRESETS)


def _lookup(name: str) -> tuple[Architecture, Callable]:
    return architecture(name), _BODIES[name]


def model_config(name: str, preset: str = "paper", **overrides: Any) -> BaseConfig:
    """The resolved config of architecture ``name`` at ``preset`` with ``overrides``."""
    return resolve_config(name, preset, **overrides)


@keras.saving.register_keras_serializable(package="keras_sep")
class SeparationModel(keras.Model):
    """A functional model mapping ``mixture`` (batch, time, channels) to one output per source.

    Built from an architecture name and its config, which ``model_config`` returns, so
    saving and loading need nothing else. ``precision`` ("float32" or "bfloat16", see
    ``keras_sep.precision``) sets the body's compute dtype; None follows Keras's global
    dtype policy, as the trainer's mixed precision does. The weights are float32 either way.
    """

    def __init__(
        self,
        architecture: str,
        config: BaseConfig | dict,
        precision: str | None = None,
        **kwargs,
    ):
        arch, body = _lookup(architecture)
        apply_backend_tuning()  # cuDNN autotuning and TF32 under torch on CUDA (tuning.py)
        cfg = config if isinstance(config, BaseConfig) else arch.config_class.from_dict(config)
        scope = policy_scope(precision) if precision else contextlib.nullcontext()
        with scope:
            mixture = keras.Input(shape=(None, cfg.channels), name="mixture")
            outputs = blocks.source_head(body(mixture, cfg), mixture, cfg)
            precision = keras.config.dtype_policy().compute_dtype
        kwargs.setdefault("name", architecture)
        super().__init__(inputs=mixture, outputs=outputs, **kwargs)
        self.architecture = architecture
        self.arch_config = cfg
        self.precision = precision

    @property
    def sources(self) -> tuple[str, ...]:
        return self.arch_config.sources

    @property
    def parallel_calls(self) -> bool:
        """Whether ``separate`` may call ``predict_on_batch`` from two threads at once.

        Measured and relied on under TensorFlow only: a traced function runs in parallel with
        itself, and Keras builds it on the first call, which ``separate`` makes alone.
        """
        return keras.backend.backend() == "tensorflow"

    @property
    def sample_rate(self) -> int:
        return self.arch_config.sample_rate

    @property
    def channels(self) -> int:
        return self.arch_config.channels

    def valid_length(self, length: int) -> int:
        """The smallest input length >= ``length`` this model accepts."""
        return self.arch_config.valid_length(length)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "architecture": self.architecture,
            "config": self.arch_config.to_dict(),
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SeparationModel:
        return cls(**config)


def build(name: str, preset: str = "paper", **overrides: Any) -> SeparationModel:
    """Build architecture ``name`` ("wave_u_net", "dilated", "dilated_dense") at ``preset``.

    ``overrides`` replace config fields, e.g. ``build("dilated", dilation="constant:512")``.
    Unknown names, presets or fields raise ``ConfigError`` listing the valid ones.
    """
    return SeparationModel(name, model_config(name, preset, **overrides))


def convert_precision(model, precision: str | None):
    """``model`` computing in ``precision``; a new model sharing no state if it must change.

    ``None`` keeps the model as it is. Other predictors (exported runners) run at the
    precision they were exported in: only ``auto`` and ``float32`` apply to them.
    """
    if precision is None:
        return model
    if not isinstance(model, SeparationModel):
        if precision == "bfloat16":
            raise ConfigError(
                f"precision 'bfloat16' applies to Keras models; {type(model).__name__} runs "
                "at the precision it was exported in"
            )
        return model
    chosen = resolve(precision)
    if chosen == model_precision(model):
        return model
    copy = SeparationModel(model.architecture, model.arch_config, precision=chosen)
    copy.set_weights(model.get_weights())
    return copy

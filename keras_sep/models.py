"""The three architectures, composed from ``blocks``, and the registry behind ``build``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from keras_sep import blocks
from keras_sep.config import Architecture, BaseConfig, DilatedConfig, WaveUNetConfig
from keras_sep.errors import ConfigError


def wave_u_net(mixture, cfg: WaveUNetConfig):
    """Wave-U-Net: 12 conv + decimation levels, a bottleneck, 12 upsampling levels."""
    impl, f = cfg.conv_impl, cfg.filters
    x, skips = mixture, []
    for i in range(1, cfg.levels + 1):
        skip, x = blocks.down_level(x, f * i, cfg.down_kernel, f"down{i}", impl)
        skips.append(skip)
    x = blocks.conv(x, f * (cfg.levels + 1), cfg.down_kernel, 1, "bottleneck_conv", impl)
    for i in range(cfg.levels, 0, -1):
        x = blocks.up_level(x, skips[i - 1], f * i, cfg.up_kernel, f"up{i}", impl)
    return x


def dilated_u_net(mixture, cfg: DilatedConfig):
    """Dilated U-Net, or Dilated Dense U-Net when ``cfg.dense``: full resolution throughout."""
    impl = cfg.conv_impl
    x, skips = mixture, []
    for b, dilations in enumerate(cfg.dilations, 1):
        if cfg.dense:
            x = blocks.dense_block(
                x, cfg.block_growth(b), cfg.kernel_size, dilations, f"down{b}", impl
            )
            x = blocks.transition(x, cfg.block_transition(b), f"down{b}_transition", impl)
        else:
            x = blocks.dilated_block(
                x, cfg.block_filters(b), cfg.kernel_size, dilations, f"down{b}", impl
            )
        skips.append(x)

    b = cfg.num_blocks + 1
    ones = [1] * cfg.bottleneck_layers
    if cfg.dense:
        x = blocks.dense_block(x, cfg.block_growth(b), cfg.kernel_size, ones, "bottleneck", impl)
        x = blocks.transition(x, cfg.block_transition(b), "bottleneck_transition", impl)
    else:
        x = blocks.dilated_block(x, cfg.block_filters(b), cfg.kernel_size, ones, "bottleneck", impl)

    for b in range(cfg.num_blocks, 0, -1):
        dilations, skip = cfg.dilations[b - 1][::-1], skips[b - 1]
        if cfg.dense:
            x = blocks.dense_block(
                x, cfg.block_growth(b), cfg.up_kernel, dilations, f"up{b}", impl, True, skip
            )
            x = blocks.transition(x, cfg.block_transition(b), f"up{b}_transition", impl)
        else:
            x = blocks.concat([x, skip], f"up{b}_skip")
            x = blocks.dilated_block(
                x, cfg.block_filters(b), cfg.up_kernel, dilations, f"up{b}", impl, True
            )
    return x


_ARCHITECTURES: dict[str, tuple[Architecture, Callable]] = {}


def register_architecture(arch: Architecture, body: Callable) -> None:
    """Add an architecture: ``body(mixture, cfg)`` returns the features fed to the source head."""
    if arch.name in _ARCHITECTURES:
        raise ConfigError(f"architecture {arch.name!r} is already registered")
    _ARCHITECTURES[arch.name] = (arch, body)


register_architecture(
    Architecture("wave_u_net", WaveUNetConfig, description="Wave-U-Net baseline"), wave_u_net
)
register_architecture(
    Architecture("dilated", DilatedConfig, {"dense": False}, "Dilated U-Net"), dilated_u_net
)
register_architecture(
    Architecture("dilated_dense", DilatedConfig, {"dense": True}, "Dilated Dense U-Net"),
    dilated_u_net,
)


def architectures() -> list[str]:
    """Names accepted by ``build``."""
    return sorted(_ARCHITECTURES)


def _lookup(name: str) -> tuple[Architecture, Callable]:
    if name not in _ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; valid names: {architectures()}")
    return _ARCHITECTURES[name]


def get_config(name: str, preset: str = "paper", **overrides: Any) -> BaseConfig:
    """The resolved config of architecture ``name`` at ``preset`` with ``overrides``."""
    return _lookup(name)[0].config(preset, **overrides)


@keras.saving.register_keras_serializable(package="keras_sep")
class SeparationModel(keras.Model):
    """A functional model mapping ``mixture`` (batch, time, channels) to one output per source.

    Built from an architecture name and its config, which ``get_config`` returns, so
    saving and loading need nothing else.
    """

    def __init__(self, architecture: str, config: BaseConfig | dict, **kwargs):
        arch, body = _lookup(architecture)
        cfg = config if isinstance(config, BaseConfig) else arch.config_class.from_dict(config)
        mixture = keras.Input(shape=(None, cfg.channels), name="mixture")
        outputs = blocks.source_head(body(mixture, cfg), mixture, cfg)
        kwargs.setdefault("name", architecture)
        super().__init__(inputs=mixture, outputs=outputs, **kwargs)
        self.architecture = architecture
        self.arch_config = cfg

    @property
    def sources(self) -> tuple[str, ...]:
        return self.arch_config.sources

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
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SeparationModel:
        return cls(**config)


def build(name: str, preset: str = "paper", **overrides: Any) -> SeparationModel:
    """Build architecture ``name`` ("wave_u_net", "dilated", "dilated_dense") at ``preset``.

    ``overrides`` replace config fields, e.g. ``build("dilated", dilation="constant:512")``.
    Unknown names, presets or fields raise ``ConfigError`` listing the valid ones.
    """
    return SeparationModel(name, get_config(name, preset, **overrides))

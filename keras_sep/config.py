"""Architecture configs: one frozen dataclass per architecture, paper defaults, named presets.

A config holds everything needed to rebuild a model; it is stored in every model
folder and round-trips through ``to_dict`` / ``from_dict`` (plain JSON types). The
registry of architecture configs lives here, without Keras, so a training config or a
model folder is checked before any model is built (``models.py`` adds the builders).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from keras_sep.errors import ConfigError

SOURCES = ("vocals", "drums", "bass", "other")
OUTPUT_MODES = ("difference", "direct")
CONV_IMPLS = ("auto", "native", "phase", "fold", "spectral", "keras")

# What each annotation of a config field accepts (JSON and YAML give lists for tuples).
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a finite number"),
    "str": ((str,), "a string"),
    "bool": ((bool,), "true or false"),
    "dict": ((dict,), "a mapping"),
    "tuple": ((list, tuple), "a list"),
    "tuple[str, ...]": ((list, tuple), "a list of strings"),
}


def reject_unknown(
    keys: Iterable[str], valid: Iterable[str], noun: str, owner: str = "", hint: str = ""
) -> None:
    """Raise ``ConfigError`` naming the unknown ``keys`` and listing the ``valid`` ones.

    E.g. "unknown DilatedConfig field(s) ['filter']; valid fields: [...]" for
    ``noun="field"``, ``owner="DilatedConfig"``; ``hint`` is appended.
    """
    valid = list(valid)
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        what = f"{owner} {noun}" if owner else noun
        raise ConfigError(f"unknown {what}(s) {unknown}; valid {noun}s: {valid}{hint}")


def check_field_types(config: Any, prefix: str = "") -> None:
    """Check (and normalise) every field of the dataclass ``config`` against its annotation.

    Lists become tuples for tuple fields; a float field takes a numeric string, as YAML 1.1
    reads ``3e-3`` as one. A wrong type raises ``ConfigError`` naming ``prefix + field``.
    """
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        optional = kind.endswith(" | None")
        base = kind.removesuffix(" | None")
        if base not in _KINDS or (optional and value is None):
            continue  # Any: checked by the class itself
        if base == "float" and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        types, expected = _KINDS[base]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and base == "float":
            ok = math.isfinite(value)
        if ok and base == "tuple[str, ...]":
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            null = " or null" if optional else ""
            raise ConfigError(f"{prefix}{f.name} must be {expected}{null}, got {value!r}")
        if base.startswith("tuple"):
            value = tuple(value)
        object.__setattr__(config, f.name, value)


@dataclass(frozen=True)
class BaseConfig:
    """Fields shared by every architecture."""

    sources: tuple[str, ...] = SOURCES
    channels: int = 2
    sample_rate: int = 22050
    # Training segment length, also the default separation segment (paper: 16384).
    segment_length: int = 16384
    # "difference": estimate K-1 sources, the last is mixture minus their sum
    # (the paper's energy conservation); "direct": estimate all K.
    output: str = "difference"
    # How convolutions compute (same weights and function either way): "native" dilated
    # conv, "phase" space-to-batch, "fold" an undilated 2-D conv down rows of d samples,
    # "spectral" short Fourier transforms of those rows, "auto" picks per
    # backend/device/layer; "keras" builds plain
    # keras.layers.Conv1D / Conv1DTranspose, the reference for benchmarks (TensorFlow's
    # CPU kernels cannot run its dilated transposed convolutions).
    conv_impl: str = "auto"

    # Subclasses declare the arguments of their presets.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        if len(self.sources) < 1 or len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"sources must be distinct names, got {list(self.sources)}")
        if self.output not in OUTPUT_MODES:
            raise ConfigError(f"output must be one of {list(OUTPUT_MODES)}, got {self.output!r}")
        if self.output == "difference" and len(self.sources) < 2:
            raise ConfigError("output='difference' needs at least two sources")
        if self.conv_impl not in CONV_IMPLS:
            raise ConfigError(
                f"conv_impl must be one of {list(CONV_IMPLS)}, got {self.conv_impl!r}"
            )
        for name in ("channels", "sample_rate", "segment_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.segment_length % self.length_multiple:
            raise ConfigError(
                f"segment_length={self.segment_length} is not a multiple of "
                f"{self.length_multiple}, which this architecture needs"
            )

    @property
    def length_multiple(self) -> int:
        """Input lengths must be a multiple of this (1: any length)."""
        return 1

    def valid_length(self, length: int) -> int:
        """The smallest length >= ``length`` that the model accepts."""
        m = self.length_multiple
        return max(m, -(-length // m) * m)

    @property
    def estimated_sources(self) -> tuple[str, ...]:
        """Sources the network predicts; with 'difference' the last one is derived."""
        return self.sources[:-1] if self.output == "difference" else self.sources

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sources"] = list(self.sources)
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BaseConfig:
        reject_unknown(values, cls.field_names(), "field", cls.__name__)
        return cls(**values)

    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> BaseConfig:
        """The named preset with ``overrides`` applied."""
        if name not in cls.PRESETS:
            raise ConfigError(
                f"unknown preset {name!r} for {cls.__name__}; valid presets: {sorted(cls.PRESETS)}"
            )
        return cls.from_dict({**cls.PRESETS[name], **overrides})


@dataclass(frozen=True)
class WaveUNetConfig(BaseConfig):
    """Wave-U-Net (Stoller et al. 2018) with 'same' padding, the paper's baseline."""

    levels: int = 12
    # Level i (1..levels) has filters * i channels; the bottleneck filters * (levels + 1).
    filters: int = 15
    down_kernel: int = 15
    up_kernel: int = 5

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        # The original Wave-U-Net used 24 filters per level (10.3 M parameters).
        "original": {"filters": 24},
        "tiny": {"levels": 4, "filters": 4, "down_kernel": 5, "up_kernel": 3},
    }

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("levels", "filters", "down_kernel", "up_kernel"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        super().__post_init__()

    @property
    def length_multiple(self) -> int:
        return 2**self.levels


@dataclass(frozen=True)
class DilatedConfig(BaseConfig):
    """Dilated U-Net (``dense=False``) and Dilated Dense U-Net (``dense=True``).

    Values the paper leaves open, chosen here (and why):
      - ``growth_rate=None``: each dense layer of block i adds ``filters * i`` channels,
        the same width as the Dilated U-Net's layer at that depth.
      - ``transition_width=None``: the transition after block i reduces to ``filters * i``
        channels, so the next block sees the width the Dilated U-Net would.
      - ``up_kernel=15``: the transposed layers mirror the down path exactly.
    With these the paper preset has about 5.8 M parameters (Dilated U-Net: 2.6 M).
    """

    num_blocks: int = 6
    layers_per_block: int = 3
    bottleneck_layers: int = 3
    # Block i (1..num_blocks) has filters * i channels; the bottleneck filters * (num_blocks + 1).
    filters: int = 15
    kernel_size: int = 15
    up_kernel: int = 15
    # "adaptive" (paper: doubling inside a block, each block starting where the last ended),
    # "none" (all 1) or "constant:N".
    dilation: str = "adaptive"
    dense: bool = False
    growth_rate: int | None = None
    transition_width: int | None = None

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "tiny": {"num_blocks": 3, "filters": 4, "kernel_size": 5, "up_kernel": 5},
    }

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("num_blocks", "layers_per_block", "bottleneck_layers", "filters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("kernel_size", "up_kernel", "growth_rate", "transition_width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be positive, got {value}")
        block_dilations(self.dilation, self.num_blocks, self.layers_per_block)  # validates
        super().__post_init__()

    @property
    def dilations(self) -> list[list[int]]:
        """Dilation rate of every layer of every down block."""
        return block_dilations(self.dilation, self.num_blocks, self.layers_per_block)

    def block_filters(self, block: int) -> int:
        """Channels of the plain layers of block ``block`` (1-based)."""
        return self.filters * block

    def block_growth(self, block: int) -> int:
        return self.growth_rate or self.block_filters(block)

    def block_transition(self, block: int) -> int:
        return self.transition_width or self.block_filters(block)


def block_dilations(scheme: str, num_blocks: int, layers_per_block: int) -> list[list[int]]:
    """Per-block dilation rates for a scheme: 'none', 'constant:N' or 'adaptive'.

    'adaptive' doubles the rate inside a block and starts each block where the
    previous one ended: [1, 2, 4], [4, 8, 16], ... for three layers per block.
    """
    if scheme == "none":
        return [[1] * layers_per_block for _ in range(num_blocks)]
    if scheme == "adaptive":
        step = 2 ** (layers_per_block - 1)
        return [[step**b * 2**i for i in range(layers_per_block)] for b in range(num_blocks)]
    if scheme.startswith("constant:"):
        value = scheme.split(":", 1)[1]
        if value.isdigit() and int(value) >= 1:
            return [[int(value)] * layers_per_block for _ in range(num_blocks)]
    raise ConfigError(
        f"unknown dilation scheme {scheme!r}; valid schemes: 'none', 'adaptive', 'constant:N' "
        "(N a positive integer, e.g. 'constant:512')"
    )


@dataclass(frozen=True)
class Architecture:
    """A registry entry: how to configure and build one named architecture."""

    name: str
    config_class: type[BaseConfig]
    # Fields that distinguish this entry from others sharing the config class.
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def config(self, preset: str = "paper", **overrides: Any) -> BaseConfig:
        return self.config_class.preset(preset, **{**self.fixed, **overrides})


_REGISTRY: dict[str, Architecture] = {}


def register_config(arch: Architecture) -> None:
    """Add ``arch`` to the registry (``models.register_architecture`` adds its builder too)."""
    if arch.name in _REGISTRY:
        raise ConfigError(f"architecture {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch


def architecture(name: str) -> Architecture:
    """The registry entry called ``name``, or ``ConfigError`` listing the valid names."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"unknown architecture {name!r}; valid names: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def resolve_config(name: str, preset: str = "paper", **overrides: Any) -> BaseConfig:
    """The config of architecture ``name`` at ``preset`` with ``overrides``, without Keras."""
    return architecture(name).config(preset, **overrides)


register_config(Architecture("wave_u_net", WaveUNetConfig, description="Wave-U-Net baseline"))
register_config(Architecture("dilated", DilatedConfig, {"dense": False}, "Dilated U-Net"))
register_config(
    Architecture("dilated_dense", DilatedConfig, {"dense": True}, "Dilated Dense U-Net")
)

"""``--init-from``: start training from the weights of a model folder (fine-tuning).

The source is a run folder, any model folder, or ``bundled`` (``keras_sep.DEFAULT_MODEL``).
Its architecture and every weight-shaping config field must equal the training config's;
fields that only change how the model computes (``RUNTIME_FIELDS``) may differ. Only the
weights are taken: the optimizer starts fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras_sep
from keras_sep.config import BaseConfig
from keras_sep.errors import ConfigError
from keras_sep.folder import RUNTIME_FIELDS, read_config, read_info

BUNDLED = "bundled"


def source_folder(name: str) -> Path:
    """The model folder that ``--init-from name`` means."""
    return Path(keras_sep.DEFAULT_MODEL) if name == BUNDLED else Path(name)


def _as_override(value: Any) -> str:
    """A value as ``--set`` parses it back (YAML)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Fields of ``a`` (minus runtime fields) whose value ``b`` does not share."""
    return {k: v for k, v in a.items() if k not in RUNTIME_FIELDS and b.get(k) != v}


def check_source(name: str, architecture: str, config: BaseConfig) -> dict[str, Any]:
    """Check that ``--init-from name`` fits the model to train; returns where it starts from.

    Raises a one-line ``ConfigError`` listing the mismatching fields and the ``--config`` /
    ``--set`` arguments that would make the training config match.
    """
    folder = source_folder(name)
    source_arch, source_cfg = read_config(folder)
    wanted, have = source_cfg.to_dict(), config.to_dict()
    if source_arch != architecture:
        mismatch = [f"architecture {source_arch} (source) vs {architecture} (config)"]
        # Relative to the paper preset, which `--config <architecture>` gives.
        fix = [f"--config {source_arch}"]
        fixes = _differences(wanted, keras_sep.model_config(source_arch).to_dict())
    else:
        fixes = _differences(wanted, have)
        mismatch = [f"{k} {v} (source) vs {have.get(k)} (config)" for k, v in fixes.items()]
        fix = []
    if mismatch:
        fix += [f"--set model.{k}={_as_override(v)}" for k, v in fixes.items()]
        raise ConfigError(
            f"--init-from {name} does not fit the model to train: {'; '.join(mismatch)}; "
            f"to fine-tune it, train with {' '.join(fix)}"
        )
    info = read_info(folder)
    return {
        "folder": name,
        "architecture": source_arch,
        "saved_at": info.get("saved_at"),
        "best": info.get("best"),
    }


def load_source_weights(model, name: str) -> None:
    """Set ``model``'s weights from ``--init-from name`` (checked by ``check_source``).

    Loading goes through ``keras_sep.load``, so a damaged weights file is a one-line error.
    """
    model.set_weights(keras_sep.load(source_folder(name)).get_weights())

"""Checking what a converter produced: its distance from Keras, and its error in one line."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def first_line(e: BaseException) -> str:
    """The first line of an exception message: converters raise pages of MLIR or graph dumps."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def max_abs_error(reference: Mapping[str, np.ndarray], estimate: Mapping[str, np.ndarray]) -> float:
    """The largest absolute difference over all sources (keys of ``reference``)."""
    return max(
        float(np.max(np.abs(np.asarray(estimate[k], np.float64) - np.asarray(v, np.float64))))
        for k, v in reference.items()
    )

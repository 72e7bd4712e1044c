"""Conversion and checks shared by the metrics: arrays from lists or tensors, named errors."""

from __future__ import annotations

from typing import Any

import numpy as np


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array-like, got {type(x).__name__}") from err


def _vector(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Return ``x`` as a 1-D array of ``dtype``, or raise naming the argument and its shape."""
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of shape (N,), got shape {arr.shape}")
    return arr.astype(dtype, copy=False)


def _same_length(**arrays: np.ndarray) -> int:
    """Check that all arrays have the same first dimension and return it."""
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"expected arrays of equal length, got {lengths}")
    return next(iter(lengths.values()))


def _scores_and_labels(scores: Any, same: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (scores, same) pair of verification arrays."""
    s = _vector(scores, "scores")
    y = _vector(same, "same", dtype=bool)
    n = _same_length(scores=s, same=y)
    if n == 0:
        raise ValueError("expected at least one pair, got empty arrays")
    if not np.all(np.isfinite(s)):
        raise ValueError(
            f"scores: expected finite values, got {int(np.sum(~np.isfinite(s)))} non-finite"
        )
    return s, y

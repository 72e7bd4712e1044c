"""Seeded train / val / test splits: stratified by image, or disjoint by identity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SplitIndices:
    """Indices into one list of samples for each split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(
            "Expected 0 <= val_fraction, test_fraction and val_fraction + test_fraction < 1, "
            f"got val_fraction={val_fraction}, test_fraction={test_fraction}"
        )


def _allocate(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of ``n`` items go to val and test; at least one stays in train."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    while n_test + n_val >= n and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int = 0
) -> SplitIndices:
    """Split sample indices so that every class keeps its share in each split.

    Each class is shuffled with ``seed`` and cut by rounding its own size times the fractions,
    so a class of 10 images with fractions 0.1 / 0.2 gives exactly 7 / 1 / 2. A class always keeps
    at least one training image.

    Args:
        labels: Class index of each sample.
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for test.
        seed: Seed of the shuffle.

    Returns:
        Sorted index arrays for train, val and test.
    """
    _check_fractions(val_fraction, test_fraction)
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels_arr):
        members = rng.permutation(np.flatnonzero(labels_arr == label))
        n_val, n_test = _allocate(len(members), val_fraction, test_fraction)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return SplitIndices(**{name: np.sort(np.concatenate(p)).astype(np.int64) for name, p in parts.items()})


def identity_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int = 0
) -> SplitIndices:
    """Split by identity: every sample of one label lands in the same split.

    Verification measures how well a model tells apart people it never saw, so validation and
    test people must not appear in training.

    Args:
        labels: Identity index of each sample.
        val_fraction: Share of identities for validation.
        test_fraction: Share of identities for test.
        seed: Seed of the shuffle of identities.

    Returns:
        Sorted index arrays for train, val and test.
    """
    _check_fractions(val_fraction, test_fraction)
    labels_arr = np.asarray(labels)
    identities = np.random.default_rng(seed).permutation(np.unique(labels_arr))
    n_val, n_test = _allocate(len(identities), val_fraction, test_fraction)
    groups = {
        "test": identities[:n_test],
        "val": identities[n_test : n_test + n_val],
        "train": identities[n_test + n_val :],
    }
    return SplitIndices(
        **{name: np.flatnonzero(np.isin(labels_arr, ids)).astype(np.int64) for name, ids in groups.items()}
    )

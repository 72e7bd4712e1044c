"""Batch samplers for metric learning: P x K identity batches and balanced same/different pairs.

Both samplers are *batch* samplers: pass them as ``DataLoader(..., batch_sampler=sampler)``.

- :class:`PKBatchSampler` (triplet training, FaceNet / "In Defense of the Triplet Loss"):
  every batch holds P distinct identities x K images each, so every anchor has a positive and
  a negative inside the batch. Each batch is a ``list[int]`` of P*K dataset indices, grouped by
  identity (K indices of the first identity, then K of the second, ...).
- :class:`BalancedPairSampler` (contrastive training): every batch holds exactly half
  "same identity" and half "different identity" pairs. Each batch is a ``list[tuple[int, int]]``
  of index pairs; wrap the image dataset in :class:`PairDataset` so that a ``DataLoader`` turns
  each pair into ``(img1, img2, same)``.

Randomness: batches depend only on ``(seed, epoch, rank)``, never on global RNG state, so runs
are reproducible and each epoch differs after ``set_epoch(epoch)``.

Distributed training: ``num_replicas`` / ``rank`` default to ``torch.distributed`` when it is
initialised (else 1 / 0); every rank yields the same number of batches. The samplers do the
distributed split themselves, so with Lightning use ``Trainer(use_distributed_sampler=False)``
under DDP (Lightning cannot inject its ``DistributedSampler`` into a custom batch sampler and
says so with a ``TypeError``).

Lightning calls ``set_epoch`` on ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler``,
not on the batch sampler itself, so both samplers expose a ``sampler`` attribute whose
``set_epoch`` forwards to them: with Lightning, epochs advance without extra code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["BalancedPairSampler", "PKBatchSampler", "PairDataset"]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _group_by_label(labels: Sequence[Any], owner: str) -> list[np.ndarray]:
    """Dataset indices of each identity (in sorted label order): a list of 1-D int64 arrays."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{owner}: expected a non-empty 1-D sequence of labels, got shape {array.shape}")
    _, inverse = np.unique(array, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")  # indices sorted by identity, O(N log N)
    counts = np.bincount(inverse)
    return np.split(order, np.cumsum(counts)[:-1])


def _resolve_replicas(num_replicas: int | None, rank: int | None, owner: str) -> tuple[int, int]:
    """``(num_replicas, rank)``: given values, else ``torch.distributed``'s when initialised, else (1, 0)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if num_replicas < 1:
        raise ValueError(f"{owner}: expected num_replicas >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"{owner}: expected 0 <= rank < num_replicas={num_replicas}, got rank={rank}")
    return num_replicas, rank


def _check_seed(seed: int, owner: str) -> int:
    if seed < 0:
        raise ValueError(f"{owner}: expected a seed >= 0 (numpy SeedSequence), got {seed}")
    return int(seed)


def _rng(*keys: int) -> np.random.Generator:
    """A generator that depends only on ``keys`` (e.g. seed, epoch, stream, rank)."""
    return np.random.default_rng([int(key) for key in keys])


def _cycle(rng: np.random.Generator, items: np.ndarray, n: int) -> np.ndarray:
    """``n`` items from back-to-back shuffles of ``items``, so each item is used about equally often."""
    rounds = math.ceil(n / len(items))
    return np.concatenate([rng.permutation(items) for _ in range(rounds)])[:n]


_STREAM_SHARED = 0  # draws that every rank must agree on (identity groups, rank partitions)
_STREAM_LOCAL = 1  # draws private to one rank (which images of an identity, pair partners)


class _EpochForwarder:
    """What Lightning's ``_set_sampler_epoch`` finds at ``batch_sampler.sampler``: forwards ``set_epoch``."""

    def __init__(self, owner: PKBatchSampler | BalancedPairSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


# --------------------------------------------------------------------------------------------
# P x K batches
# --------------------------------------------------------------------------------------------


def _identity_groups(rng: np.random.Generator, num_identities: int, p: int, num_groups: int) -> list[np.ndarray]:
    """``num_groups`` groups of ``p`` distinct identities, covering all identities once per pass.

    Each pass shuffles all identities and cuts them into groups of ``p``; a short last group is
    padded with identities drawn from the rest, so it still has ``p`` distinct ones. Passes repeat
    until ``num_groups`` groups exist (fewer groups than one pass cover only part of the identities).
    """
    groups: list[np.ndarray] = []
    while len(groups) < num_groups:
        order = rng.permutation(num_identities)
        for start in range(0, num_identities, p):
            group = order[start : start + p]
            if len(group) < p:
                others = np.setdiff1d(np.arange(num_identities), group)
                group = np.concatenate([group, rng.choice(others, p - len(group), replace=False)])
            groups.append(group)
            if len(groups) == num_groups:
                break
    return groups


def _draw_k(rng: np.random.Generator, indices: np.ndarray, k: int) -> np.ndarray:
    """``k`` of an identity's dataset indices: without replacement when it has >= k images.

    An identity with fewer than k images gives all its images once, then random repeats
    (sampling with replacement, but no image is left out).
    """
    if len(indices) >= k:
        return rng.choice(indices, k, replace=False)
    repeats = rng.choice(indices, k - len(indices), replace=True)
    return np.concatenate([rng.permutation(indices), repeats])


class PKBatchSampler(Sampler[list[int]]):
    """Batches of P distinct identities x K images each, for triplet-loss training.

    Per epoch, all identities are shuffled (the same way on every rank) and cut into groups of P;
    rank ``r`` takes groups ``r, r + R, r + 2R, ...`` (R = ``num_replicas``), so an identity's K
    images of a batch are always on one rank and, by default, the ranks together cover every
    identity each epoch. Identities with fewer than K images are drawn with replacement.

    Args:
        labels: the identity label of each dataset index, shape (N,).
        p: identities per batch (P >= 2, so every anchor has a negative).
        k: images per identity in a batch (K >= 1; K >= 2 gives every anchor a positive).
        batches_per_epoch: batches *per rank*; default ``ceil(num_identities / (P * R))``, i.e.
            every identity appears at least once per epoch (the last groups are padded with
            randomly chosen extra identities so that every batch has P distinct ones).
        seed: base seed (>= 0); batches depend only on ``(seed, epoch, rank)``.
        num_replicas: number of ranks; default: ``torch.distributed`` world size, else 1.
        rank: this rank; default: ``torch.distributed`` rank, else 0.

    Raises:
        ValueError: p < 2, k < 1, p larger than the number of identities, batches_per_epoch < 1,
            a negative seed, or an invalid rank.
    """

    def __init__(
        self,
        labels: Sequence[int],
        p: int,
        k: int,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        name = type(self).__name__
        self._identities = _group_by_label(labels, name)
        if p < 2:
            raise ValueError(f"{name}: expected p >= 2 identities per batch (a triplet needs a negative), got p={p}")
        if k < 1:
            raise ValueError(f"{name}: expected k >= 1 images per identity, got k={k}")
        if p > self.num_identities:
            raise ValueError(
                f"{name}: p={p} identities per batch, but the labels hold only {self.num_identities} identities"
            )
        self.p, self.k = int(p), int(k)
        self.seed = _check_seed(seed, name)
        self.num_replicas, self.rank = _resolve_replicas(num_replicas, rank, name)
        if batches_per_epoch is None:
            batches_per_epoch = math.ceil(self.num_identities / (self.p * self.num_replicas))
        if batches_per_epoch < 1:
            raise ValueError(f"{name}: expected batches_per_epoch >= 1, got {batches_per_epoch}")
        self.batches_per_epoch = int(batches_per_epoch)
        self.epoch = 0
        self.sampler = _EpochForwarder(self)  # so Lightning's set_epoch reaches this sampler

    @property
    def num_identities(self) -> int:
        return len(self._identities)

    @property
    def batch_size(self) -> int:
        """P * K indices per batch."""
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of ``epoch`` on the next iteration (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        shared = _rng(self.seed, self.epoch, _STREAM_SHARED)
        groups = _identity_groups(shared, self.num_identities, self.p, self.batches_per_epoch * self.num_replicas)
        local = _rng(self.seed, self.epoch, _STREAM_LOCAL, self.rank)
        for group in groups[self.rank :: self.num_replicas]:  # whole groups: an identity never spans ranks
            batch = np.concatenate([_draw_k(local, self._identities[identity], self.k) for identity in group])
            yield batch.tolist()


# --------------------------------------------------------------------------------------------
# balanced pairs
# --------------------------------------------------------------------------------------------


def _rank_share(rng: np.random.Generator, items: np.ndarray, num_replicas: int, rank: int) -> np.ndarray:
    """This rank's part of a shuffle of ``items`` (all of them when there are fewer items than ranks)."""
    shuffled = rng.permutation(items)
    return shuffled[rank::num_replicas] if len(items) >= num_replicas else shuffled


class BalancedPairSampler(Sampler[list[tuple[int, int]]]):
    """Batches of index pairs, exactly half from the same identity and half from different ones.

    Each batch is a ``list[tuple[int, int]]`` of ``pairs_per_batch`` pairs in random order; use it
    with :class:`PairDataset`, which reads a pair ``(i, j)`` as ``(img1, img2, same)``::

        loader = DataLoader(PairDataset(images), batch_sampler=BalancedPairSampler(labels, 32, 100))

    Same pairs: an anchor identity with at least 2 images and two distinct images of it (identities
    with one image are never anchors of same pairs). Different pairs: an anchor identity, one image,
    and one image of another identity drawn uniformly. Anchor identities cycle through a shuffle so
    each is used about equally often.

    Distributed: the anchor identities are split between ranks (disjoint shares of one shared
    shuffle, unless there are fewer identities than ranks) and each rank draws from its own random
    stream ``(seed, epoch, rank)``; every rank yields ``batches_per_epoch`` batches.

    Args:
        labels: the identity label of each dataset index, shape (N,).
        pairs_per_batch: pairs per batch, even (half same, half different).
        batches_per_epoch: batches per epoch *per rank*.
        seed: base seed (>= 0).
        num_replicas: number of ranks; default: ``torch.distributed`` world size, else 1.
        rank: this rank; default: ``torch.distributed`` rank, else 0.

    Raises:
        ValueError: an odd or non-positive pairs_per_batch, batches_per_epoch < 1, fewer than 2
            identities, no identity with 2 images, a negative seed, or an invalid rank.
    """

    def __init__(
        self,
        labels: Sequence[int],
        pairs_per_batch: int,
        batches_per_epoch: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        name = type(self).__name__
        self._identities = _group_by_label(labels, name)
        if pairs_per_batch < 2 or pairs_per_batch % 2:
            raise ValueError(
                f"{name}: expected an even pairs_per_batch >= 2 (half same, half different), got {pairs_per_batch}"
            )
        if batches_per_epoch < 1:
            raise ValueError(f"{name}: expected batches_per_epoch >= 1, got {batches_per_epoch}")
        if len(self._identities) < 2:
            raise ValueError(f"{name}: different-identity pairs need >= 2 identities, the labels hold 1")
        counts = np.array([len(indices) for indices in self._identities])
        self._with_pairs = np.flatnonzero(counts >= 2)  # identities that can form a same pair
        if len(self._with_pairs) == 0:
            raise ValueError(
                f"{name}: same-identity pairs need an identity with >= 2 images; "
                f"all {len(self._identities)} identities have 1 image"
            )
        self.pairs_per_batch = int(pairs_per_batch)
        self.batches_per_epoch = int(batches_per_epoch)
        self.seed = _check_seed(seed, name)
        self.num_replicas, self.rank = _resolve_replicas(num_replicas, rank, name)
        self.epoch = 0
        self.sampler = _EpochForwarder(self)  # so Lightning's set_epoch reaches this sampler

    @property
    def num_identities(self) -> int:
        return len(self._identities)

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of ``epoch`` on the next iteration (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        half = self.pairs_per_batch // 2
        total = half * self.batches_per_epoch
        shared = _rng(self.seed, self.epoch, _STREAM_SHARED)
        same_share = _rank_share(shared, self._with_pairs, self.num_replicas, self.rank)
        diff_share = _rank_share(shared, np.arange(self.num_identities), self.num_replicas, self.rank)
        local = _rng(self.seed, self.epoch, _STREAM_LOCAL, self.rank)
        same_anchors = _cycle(local, same_share, total)  # (total,)
        diff_anchors = _cycle(local, diff_share, total)  # (total,)
        for b in range(self.batches_per_epoch):
            window = slice(b * half, (b + 1) * half)
            pairs = [self._same_pair(local, a) for a in same_anchors[window]]
            pairs += [self._different_pair(local, a) for a in diff_anchors[window]]
            yield [pairs[i] for i in local.permutation(len(pairs))]

    def _same_pair(self, rng: np.random.Generator, identity: int) -> tuple[int, int]:
        i, j = rng.choice(self._identities[identity], 2, replace=False)
        return int(i), int(j)

    def _different_pair(self, rng: np.random.Generator, identity: int) -> tuple[int, int]:
        other = int(rng.integers(self.num_identities - 1))
        other += other >= identity  # uniform over the other identities
        first, second = self._identities[identity], self._identities[other]
        return int(first[rng.integers(len(first))]), int(second[rng.integers(len(second))])


class PairDataset(Dataset):
    """Reads an index pair ``(i, j)`` of a labelled image dataset as ``(img1, img2, same)``.

    ``base_dataset[i]`` must return ``(image, label, ...)``; ``same`` is a float32 scalar tensor,
    1.0 when the two labels are equal, else 0.0 (float32 so a default-collated batch is (B,) float32,
    ready for :class:`facetorch.losses.ContrastiveLoss`). Made for :class:`BalancedPairSampler`,
    whose batches are lists of such pairs.

    Args:
        base_dataset: The labelled images.
        with_labels: Also return both identity labels, ``(img1, img2, same, label1, label2)``
            (for a classification loss beside the pair loss).
    """

    def __init__(self, base_dataset: Dataset, with_labels: bool = False) -> None:
        self.base_dataset = base_dataset
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.base_dataset)  # type: ignore[arg-type]

    def __getitem__(self, pair: tuple[int, int]) -> tuple[Any, ...]:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(
                f"PairDataset expects an index pair (i, j), as BalancedPairSampler yields, got {pair!r}"
            )
        img1, label1 = self.base_dataset[pair[0]][:2]
        img2, label2 = self.base_dataset[pair[1]][:2]
        same = torch.tensor(float(label1 == label2), dtype=torch.float32)
        if self.with_labels:
            return img1, img2, same, int(label1), int(label2)
        return img1, img2, same

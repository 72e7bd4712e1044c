"""P x K batch sampler and balanced pair sampler: batch invariants, determinism, epochs, DDP splits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from facetorch.data.samplers import BalancedPairSampler, PairDataset, PKBatchSampler

# 10 identities with 1..10 images, interleaved in the dataset so indices != identity blocks
SIZES = list(range(1, 11))
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), SIZES)).tolist()


def identities_of(batch: list[int]) -> Counter:
    return Counter(LABELS[i] for i in batch)


def epoch_batches(sampler: PKBatchSampler | BalancedPairSampler, epoch: int) -> list:
    sampler.set_epoch(epoch)
    return list(sampler)


# --------------------------------------------------------------------------------------------
# PKBatchSampler
# --------------------------------------------------------------------------------------------


def assert_p_by_k(batch: list[int], p: int, k: int) -> None:
    counts = identities_of(batch)
    assert len(batch) == p * k
    assert len(counts) == p and set(counts.values()) == {k}, counts
    for identity in counts:
        own = [i for i in batch if LABELS[i] == identity]
        if SIZES[identity] >= k:
            assert len(set(own)) == k  # no repeats when the identity has enough images
        else:
            assert len(set(own)) == SIZES[identity]  # every image, then repeats (with replacement)


@pytest.mark.parametrize(("p", "k"), [(3, 4), (2, 1), (10, 2)])
def test_every_batch_has_p_identities_times_k_images(p: int, k: int) -> None:
    sampler = PKBatchSampler(LABELS, p=p, k=k, seed=1)
    assert len(sampler) == -(-10 // p) and sampler.batch_size == p * k
    for epoch in range(3):
        batches = epoch_batches(sampler, epoch)
        assert len(batches) == len(sampler)
        for batch in batches:
            assert_p_by_k(batch, p, k)
        assert set().union(*(identities_of(b) for b in batches)) == set(range(10))  # every identity


def test_small_identities_appear_k_times() -> None:
    sampler = PKBatchSampler(LABELS, p=5, k=4)  # identities 0, 1, 2 have 1, 2, 3 images
    counts = Counter(LABELS[i] for batch in sampler for i in batch)
    assert all(counts[identity] % 4 == 0 and counts[identity] > 0 for identity in (0, 1, 2))


def test_seeded_determinism_and_epochs() -> None:
    first = epoch_batches(PKBatchSampler(LABELS, p=3, k=2, seed=5), 0)
    assert first == epoch_batches(PKBatchSampler(LABELS, p=3, k=2, seed=5), 0)
    assert first != epoch_batches(PKBatchSampler(LABELS, p=3, k=2, seed=6), 0)
    sampler = PKBatchSampler(LABELS, p=3, k=2, seed=5)
    assert list(sampler) == list(sampler) == first  # iterating again repeats the epoch
    assert epoch_batches(sampler, 1) != first
    assert epoch_batches(sampler, 0) == first


@pytest.mark.parametrize(("replicas", "p", "batches"), [(2, 3, None), (3, 2, None), (4, 2, 3)])
def test_ddp_ranks_split_whole_identity_groups(replicas: int, p: int, batches: int | None) -> None:
    k = 3
    for epoch in range(3):
        per_rank = [
            epoch_batches(PKBatchSampler(LABELS, p, k, batches, seed=2, num_replicas=replicas, rank=r), epoch)
            for r in range(replicas)
        ]
        expected = batches or -(-10 // (p * replicas))
        assert [len(b) for b in per_rank] == [expected] * replicas  # equal lengths
        seen: set[int] = set()
        for batches_of_rank in per_rank:
            for batch in batches_of_rank:
                assert_p_by_k(batch, p, k)  # an identity's K images stay together on one rank
                seen |= set(identities_of(batch))
        assert seen == set(range(10))  # the ranks together cover every identity
    assert per_rank[0] != per_rank[1]


def test_replicas_default_to_torch_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = PKBatchSampler(LABELS, p=2, k=2)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
    sampler = PKBatchSampler(LABELS, p=2, k=2)
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (4, 3, 2)


def test_pk_errors() -> None:
    with pytest.raises(ValueError, match="p=11 identities per batch, but the labels hold only 10 identities"):
        PKBatchSampler(LABELS, p=11, k=2)
    with pytest.raises(ValueError, match="k >= 1.*got k=0"):
        PKBatchSampler(LABELS, p=2, k=0)
    with pytest.raises(ValueError, match="p >= 2.*got p=1"):
        PKBatchSampler(LABELS, p=1, k=2)
    with pytest.raises(ValueError, match="rank < num_replicas=2, got rank=2"):
        PKBatchSampler(LABELS, p=2, k=2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        PKBatchSampler([], p=2, k=2)


def test_pk_in_a_dataloader() -> None:
    dataset = TensorDataset(torch.arange(len(LABELS)), torch.tensor(LABELS))
    indices, labels = next(iter(DataLoader(dataset, batch_sampler=PKBatchSampler(LABELS, p=3, k=2))))
    assert indices.shape == (6,) and len(set(labels.tolist())) == 3


@pytest.mark.parametrize("make", [lambda: PKBatchSampler(LABELS, 2, 2), lambda: BalancedPairSampler(LABELS, 2, 1)])
def test_lightning_reaches_set_epoch(make: Callable[[], PKBatchSampler | BalancedPairSampler]) -> None:
    # Lightning calls set_epoch on dataloader.sampler and dataloader.batch_sampler.sampler only
    fabric_data = pytest.importorskip("lightning_fabric.utilities.data")
    sampler = make()
    loader = DataLoader(list(range(len(LABELS))), batch_sampler=sampler)
    fabric_data._set_sampler_epoch(loader, 7)  # what Lightning calls at each training epoch start
    assert sampler.epoch == 7


# --------------------------------------------------------------------------------------------
# BalancedPairSampler and PairDataset
# --------------------------------------------------------------------------------------------


def assert_balanced(batch: list[tuple[int, int]], n: int) -> None:
    assert len(batch) == n
    same = [(i, j) for i, j in batch if LABELS[i] == LABELS[j]]
    assert len(same) == n // 2
    assert all(i != j and SIZES[LABELS[i]] >= 2 for i, j in same)  # two distinct images, never a singleton


def test_balanced_pairs_half_same_half_different() -> None:
    sampler = BalancedPairSampler(LABELS, pairs_per_batch=8, batches_per_epoch=5, seed=3)
    for epoch in range(2):
        batches = epoch_batches(sampler, epoch)
        assert len(batches) == len(sampler) == 5
        for batch in batches:
            assert_balanced(batch, 8)


def test_balanced_pairs_determinism_and_epochs() -> None:
    def make(seed: int) -> BalancedPairSampler:
        return BalancedPairSampler(LABELS, pairs_per_batch=4, batches_per_epoch=3, seed=seed)

    first = epoch_batches(make(0), 0)
    assert first == epoch_batches(make(0), 0) != epoch_batches(make(1), 0)
    assert epoch_batches(make(0), 1) != first


def test_balanced_pairs_ddp_equal_lengths_disjoint_anchor_identities() -> None:
    per_rank = [
        epoch_batches(BalancedPairSampler(LABELS, 6, 4, seed=0, num_replicas=3, rank=r), epoch=2) for r in range(3)
    ]
    assert [len(b) for b in per_rank] == [4, 4, 4]
    same_identities = []
    for batches in per_rank:
        for batch in batches:
            assert_balanced(batch, 6)
        same_identities.append({LABELS[i] for batch in batches for i, j in batch if LABELS[i] == LABELS[j]})
    assert not (same_identities[0] & same_identities[1]) and not (same_identities[1] & same_identities[2])
    assert not (same_identities[0] & same_identities[2])


def test_balanced_pair_errors() -> None:
    with pytest.raises(ValueError, match="even pairs_per_batch.*got 5"):
        BalancedPairSampler(LABELS, pairs_per_batch=5, batches_per_epoch=1)
    with pytest.raises(ValueError, match="identity with >= 2 images; all 3 identities have 1 image"):
        BalancedPairSampler([0, 1, 2], pairs_per_batch=2, batches_per_epoch=1)
    with pytest.raises(ValueError, match=">= 2 identities"):
        BalancedPairSampler([4, 4, 4], pairs_per_batch=2, batches_per_epoch=1)


def test_pair_dataset_in_a_dataloader() -> None:
    images = TensorDataset(torch.arange(len(LABELS), dtype=torch.float32)[:, None], torch.tensor(LABELS))
    loader = DataLoader(PairDataset(images), batch_sampler=BalancedPairSampler(LABELS, 6, 2))
    for img1, img2, same in loader:
        assert img1.shape == img2.shape == (6, 1) and same.dtype == torch.float32
        labels = torch.tensor(LABELS)
        expected = labels[img1[:, 0].long()] == labels[img2[:, 0].long()]
        assert torch.equal(same, expected.float()) and same.sum() == 3
    with pytest.raises(TypeError, match=r"index pair \(i, j\)"):
        PairDataset(images)[0]

"""Triplet and contrastive losses against values computed by hand on tiny 2-D embeddings."""

from __future__ import annotations

import pytest
import torch

from facetorch import losses
from facetorch.losses import ContrastiveLoss, TripletLoss, pairwise_distances

# Four unit vectors, labels [0, 0, 1, 1]. Squared distances:
#   d01 = 0.4  d02 = 0.8  d03 = 2.0  d12 = 0.08  d13 = 0.8  d23 = 0.4
FOUR = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
FOUR_LABELS = torch.tensor([0, 0, 1, 1])

# FOUR plus x4 = (-0.6, -0.8) of identity 0, labels [0, 0, 1, 1, 0]. Squared distances to x4:
#   d40 = 3.2  d41 = 3.92  d42 = 4.0  d43 = 3.6
FIVE = torch.cat([FOUR, torch.tensor([[-0.6, -0.8]])])
FIVE_LABELS = torch.tensor([0, 0, 1, 1, 0])

# A 0.6 x 0.8 rectangle, labels [0, 0, 1, 1]; Euclidean distances: sides 0.6 (same identity),
# 0.8 (other identity, nearest), diagonals 1.0 (other identity).
RECT = torch.tensor([[0.0, 0.0], [0.6, 0.0], [0.0, 0.8], [0.6, 0.8]])
RECT_LABELS = torch.tensor([0, 0, 1, 1])


def test_pairwise_distances_match_cdist_and_have_finite_gradients_at_zero() -> None:
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]], requires_grad=True)  # rows 0 and 1 coincide
    d = pairwise_distances(x, squared=False)
    assert torch.allclose(d, torch.cdist(x.detach(), x.detach()), atol=1e-6)
    assert torch.allclose(pairwise_distances(x, squared=True), d**2, atol=1e-6)
    assert torch.equal(d.diagonal(), torch.zeros(3)) and d[0, 1] == 0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_pairwise_distances_rejects_a_vector() -> None:
    with pytest.raises(ValueError, match=r"shape \(B, D\), got \(3,\)"):
        pairwise_distances(torch.ones(3), squared=True)


# --------------------------------------------------------------------------------------------
# triplet loss
# --------------------------------------------------------------------------------------------


def test_batch_all_hand_example() -> None:
    # 8 triplets [a, p, n] with loss d(a,p) - d(a,n) + margin:
    #   margin 0.1: (1,0,2) = 0.4 - 0.08 + 0.1 = 0.42 and (2,3,1) = 0.42 active, the other 6 <= 0
    #   margin 0.5: (0,1,2) 0.1, (1,0,2) 0.82, (1,0,3) 0.1, (2,3,0) 0.1, (2,3,1) 0.82, (3,2,1) 0.1
    loss = TripletLoss(margin=0.1, mining="batch_all")
    assert loss(FOUR, FOUR_LABELS).item() == pytest.approx(0.42, abs=1e-5)
    assert loss.last_stats["num_triplets"].item() == 8
    assert loss.last_stats["active_fraction"].item() == pytest.approx(2 / 8)
    loss = TripletLoss(margin=0.5, mining="batch_all")
    assert loss(FOUR, FOUR_LABELS).item() == pytest.approx(2.04 / 6, abs=1e-5)
    assert loss.last_stats["active_fraction"].item() == pytest.approx(6 / 8)


def test_batch_hard_hand_example() -> None:
    # anchor: hardest positive, hardest negative -> max(dp - dn + 0.1, 0)
    #   a0: 3.2  (x4), 0.8  (x2) -> 2.5      a1: 3.92 (x4), 0.08 (x2) -> 3.94
    #   a2: 0.4  (x3), 0.08 (x1) -> 0.42     a3: 0.4  (x2), 0.8  (x1) -> 0
    #   a4: 3.92 (x1), 3.6  (x3) -> 0.42     mean over 5 anchors = 7.28 / 5
    loss = TripletLoss(margin=0.1, mining="batch_hard")
    assert loss(FIVE, FIVE_LABELS).item() == pytest.approx(7.28 / 5, abs=1e-5)
    assert loss.last_stats["num_triplets"].item() == 5
    assert loss.last_stats["active_fraction"].item() == pytest.approx(4 / 5)


def test_semi_hard_hand_example_with_easiest_negative_fallback() -> None:
    # (a, p): d(a,p); negatives farther than p -> nearest of them, else fallback -> loss (margin 0.1)
    #   (0,1) 0.4 : {0.8, 2.0}  -> 0.8              -> 0
    #   (0,4) 3.2 : none (0.8, 2.0 closer)          -> fallback largest 2.0 -> 1.3
    #   (1,0) 0.4 : {0.8}       -> 0.8              -> 0
    #   (1,4) 3.92: none (0.08, 0.8 closer)         -> fallback largest 0.8 -> 3.22
    #   (2,3) 0.4 : {0.8, 4.0}  -> 0.8              -> 0
    #   (3,2) 0.4 : {2.0, 0.8, 3.6} -> 0.8          -> 0
    #   (4,0) 3.2 : {4.0, 3.6}  -> 3.6              -> 0
    #   (4,1) 3.92: {4.0}       -> 4.0 (semi-hard)  -> 0.02
    # mean over 8 pairs = 4.54 / 8. (The hardest-negative fallback would give (2.5 + 3.94 + 0.02) / 8.)
    loss = TripletLoss(margin=0.1, mining="semi_hard")
    assert loss(FIVE, FIVE_LABELS).item() == pytest.approx(4.54 / 8, abs=1e-5)
    assert loss.last_stats["num_triplets"].item() == 8
    assert loss.last_stats["active_fraction"].item() == pytest.approx(3 / 8)
    # margin 0.5: 0.1, 3.2-2+0.5=1.7, 0.1, 3.92-0.8+0.5=3.62, 0.1, 0.1, 3.2-3.6+0.5=0.1, 0.42
    assert TripletLoss(margin=0.5)(FIVE, FIVE_LABELS).item() == pytest.approx(6.24 / 8, abs=1e-5)


@pytest.mark.parametrize(
    ("mining", "expected"),
    [
        ("batch_all", 0.2),  # each (a, p): 0.6 - 0.8 + 0.5 = 0.3 and 0.6 - 1.0 + 0.5 = 0.1
        ("batch_hard", 0.3),  # each anchor: 0.6 - 0.8 + 0.5
        ("semi_hard", 0.3),  # each (a, p): nearest farther negative 0.8
    ],
)
def test_euclidean_hand_example(mining: str, expected: float) -> None:
    loss = TripletLoss(margin=0.5, mining=mining, squared=False)  # type: ignore[arg-type]
    assert loss(RECT, RECT_LABELS).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("labels", [[3, 3, 3, 3], [0, 1, 2, 3]], ids=["no-negative", "no-positive"])
def test_no_valid_triplet_gives_a_connected_zero(mining: str, labels: list[int]) -> None:
    x = FOUR.clone().requires_grad_(True)
    loss = TripletLoss(mining=mining)(x, torch.tensor(labels))  # type: ignore[arg-type]
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
def test_triplet_gradients_are_finite_at_zero_distance(mining: str) -> None:
    # duplicates within an identity and across identities: d = 0 for both a positive and a negative
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    triplet = TripletLoss(margin=0.2, mining=mining, squared=False)  # type: ignore[arg-type]
    loss = triplet(x, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(x.grad).all()


def test_triplet_errors() -> None:
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="hardest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels of shape \(4,\).*got \(3,\)"):
        TripletLoss()(FOUR, torch.tensor([0, 0, 1]))


# --------------------------------------------------------------------------------------------
# contrastive loss
# --------------------------------------------------------------------------------------------

# pairs: A same (0,0)-(0.3,0.4)  C different (0,0)-(0.6,0.8)  B same (1,1)-(1,1)  D different (0,0)-(0,0.2)
#   Euclidean d:            A 0.5    C 1.0   B 0   D 0.2
#   squared d:              A 0.25   C 1.0   B 0   D 0.04
#   mean squared (D = 2):   A 0.125  C 0.5   B 0   D 0.02
X1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
X2 = torch.tensor([[0.3, 0.4], [0.6, 0.8], [1.0, 1.0], [0.0, 0.2]])
SAME = torch.tensor([1.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Hadsell: 0.5 * mean(0.5², 0²) + 0.5 * mean(max(0, 1 - 1)², (1 - 0.2)²) = 0.0625 + 0.16
        ({}, 0.2225),
        # linear: 0.5 * mean(0.5, 0) + 0.5 * mean(0, 0.8) = 0.125 + 0.2
        ({"squared_terms": False}, 0.325),
        # squared d, linear by default: 0.5 * mean(0.25, 0) + 0.5 * mean(0, 1 - 0.04) = 0.0625 + 0.24
        ({"distance": "squared"}, 0.3025),
        # original form: 0.5 * mean(0.125, 0) + 0.5 * mean(max(0, 0.1 - 0.5), 0.1 - 0.02) = 0.03125 + 0.02
        ({"distance": "mean_squared", "margin": 0.1}, 0.05125),
    ],
)
def test_contrastive_hand_examples(kwargs: dict, expected: float) -> None:
    assert ContrastiveLoss(**kwargs)(X1, X2, SAME).item() == pytest.approx(expected, abs=1e-6)


def test_contrastive_one_kind_of_pair_only_and_stats() -> None:
    loss = ContrastiveLoss()
    same_only = loss(X1[[0, 2]], X2[[0, 2]], SAME[[0, 2]])
    assert same_only.item() == pytest.approx(0.0625) and loss.last_stats["num_different"].item() == 0
    assert loss(X1[[1, 3]], X2[[1, 3]], SAME[[1, 3]].bool()).item() == pytest.approx(0.16)
    loss(X1, X2, SAME)
    assert loss.last_stats["num_same"].item() == 2
    assert loss.last_stats["active_fraction"].item() == pytest.approx(0.5)  # D inside the margin, C on it


@pytest.mark.parametrize("distance", ["euclidean", "squared", "mean_squared"])
@pytest.mark.parametrize("squared_terms", [True, False])
def test_contrastive_gradients_are_finite_at_zero_distance(distance: str, squared_terms: bool) -> None:
    x1 = torch.ones(2, 3, requires_grad=True)
    loss = ContrastiveLoss(distance=distance, squared_terms=squared_terms)(  # type: ignore[arg-type]
        x1, torch.ones(2, 3), torch.tensor([1.0, 0.0])
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x1.grad).all()


def test_contrastive_errors() -> None:
    with pytest.raises(ValueError, match="only 0"):
        ContrastiveLoss()(X1, X2, torch.tensor([0.5, 0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"same of shape \(4,\)"):
        ContrastiveLoss()(X1, X2, SAME[:3])
    with pytest.raises(ValueError, match="distance"):
        ContrastiveLoss(distance="cosine")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# against the old dense (B x B x B) implementation and pytorch-metric-learning
# --------------------------------------------------------------------------------------------

from tests.reference_losses import dense_triplet_loss  # noqa: E402


def random_batch(seed: int, batch: int, identities: int, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    return x, torch.randint(identities, (batch,), generator=generator)


@pytest.mark.parametrize("path", ["scan", "sort"])
@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize(("seed", "batch", "identities"), [(0, 24, 6), (1, 40, 3), (2, 33, 30), (3, 64, 16)])
def test_triplet_matches_the_dense_implementation(
    mining: str, squared: bool, seed: int, batch: int, identities: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # scan: one pass over the distances per positive slot; sort: binary search in sorted negatives
    # (used when anchors have many positives), forced here for every batch. A chunk of 1000 cells
    # makes the scan take several chunks.
    monkeypatch.setattr(losses, "_SCAN_MAX_POSITIVES", 10**6 if path == "scan" else 0)
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 1000)
    x, labels = random_batch(seed, batch, identities)
    for margin in (0.05, 0.3, 1.0):
        ours = x.clone().requires_grad_(True)
        dense = x.clone().requires_grad_(True)
        triplet = TripletLoss(margin=margin, mining=mining, squared=squared)  # type: ignore[arg-type]
        loss = triplet(ours, labels)
        expected, num, active = dense_triplet_loss(dense, labels, margin, mining, squared)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
        assert triplet.last_stats["num_triplets"].item() == num
        assert triplet.last_stats["active_fraction"].item() == pytest.approx(active)
        loss.backward()
        expected.backward()
        assert torch.allclose(ours.grad, dense.grad, atol=1e-10)


@pytest.mark.parametrize("mining", ["batch_all", "semi_hard"])
def test_triplet_in_float32_and_bfloat16_autocast_matches_dense(mining: str) -> None:
    x, labels = random_batch(4, 128, 32, dim=16)
    x = x.float()
    expected = dense_triplet_loss(x, labels, 0.2, mining)[0].item()
    assert TripletLoss(0.2, mining)(x, labels).item() == pytest.approx(expected, rel=1e-5)  # type: ignore[arg-type]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert TripletLoss(0.2, mining)(x.bfloat16(), labels).dtype == torch.float32  # type: ignore[arg-type]


def test_batch_all_and_batch_hard_match_pytorch_metric_learning() -> None:
    from pytorch_metric_learning import distances, miners, reducers
    from pytorch_metric_learning import losses as pml_losses

    for seed in range(3):
        x, labels = random_batch(seed, 48, 12)
        x = x.float()
        for squared in (True, False):
            distance = distances.LpDistance(normalize_embeddings=False, power=2 if squared else 1)
            pml_all = pml_losses.TripletMarginLoss(margin=0.2, distance=distance)  # AvgNonZeroReducer: mean of l > 0
            ours_all = TripletLoss(0.2, "batch_all", squared=squared)(x, labels)
            assert ours_all.item() == pytest.approx(pml_all(x, labels).item(), rel=1e-5)
            hard = miners.BatchHardMiner(distance=distance)(x, labels)
            pml_hard = pml_losses.TripletMarginLoss(margin=0.2, distance=distance, reducer=reducers.MeanReducer())
            ours_hard = TripletLoss(0.2, "batch_hard", squared=squared)(x, labels)
            assert ours_hard.item() == pytest.approx(pml_hard(x, labels, hard).item(), rel=1e-5)


@pytest.mark.parametrize(("kwargs", "power"), [({"squared_terms": False}, 1), ({"distance": "squared"}, 2)])
def test_contrastive_matches_pytorch_metric_learning_on_the_same_pairs(kwargs: dict, power: int) -> None:
    # pytorch-metric-learning's ContrastiveLoss with a mean reducer is mean(d - 0) over same pairs plus
    # mean(max(m - d, 0)) over different pairs; facetorch weighs the two means by 0.5 each.
    from pytorch_metric_learning import distances, reducers
    from pytorch_metric_learning import losses as pml_losses

    generator = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, 32, 8, generator=generator).unbind(0)
    same = (torch.arange(32) % 2).float()
    embeddings, labels = torch.cat([x1, x2]), torch.arange(64)
    rows = torch.arange(32)
    is_same = same.bool()
    indices = (rows[is_same], rows[is_same] + 32, rows[~is_same], rows[~is_same] + 32)
    pml = pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, reducer=reducers.MeanReducer(),
                                 distance=distances.LpDistance(normalize_embeddings=False, power=power))
    ours = ContrastiveLoss(margin=1.0, **kwargs)(x1, x2, same)
    assert ours.item() == pytest.approx(0.5 * pml(embeddings, labels, indices).item(), rel=1e-5)

"""Metric-learning losses on embeddings: triplet (FaceNet) and contrastive (pairs).

Both take embeddings of shape (B, D), meant to be L2-normalised (the losses do not normalise
them); distances are computed in float32 or better, even under autocast. A batch without any
valid triplet or pair gives a zero loss that is still connected to the embeddings (no NaN, and
``loss.backward()`` works).

Distances, for embeddings x_i:

- squared Euclidean  ``d²(i, j) = ||x_i - x_j||²``  (range [0, 4] for unit vectors);
- Euclidean          ``d(i, j)  = ||x_i - x_j||``    (range [0, 2]).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn

from facetorch.boxes import ordered_boxes

__all__ = [
    "ContrastiveLoss",
    "DetectionLoss",
    "TripletLoss",
    "diou_loss",
    "giou_loss",
    "original_localization",
    "pairwise_distances",
]

# sqrt'(x) = 1 / (2 sqrt(x)) is infinite at 0: sqrt is taken of max(x, _EPS) and exact zeros put back
_EPS = 1e-12

TripletMining = Literal["batch_all", "batch_hard", "semi_hard"]
PairDistance = Literal["euclidean", "squared", "mean_squared"]


# --------------------------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------------------------


def _check_embeddings(embeddings: Tensor, name: str = "embeddings") -> None:
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise ValueError(f"Expected {name} to be a tensor of shape (B, D), got {shape}")


def _at_least_float32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _safe_sqrt(squared: Tensor) -> Tensor:
    """Square root with a finite gradient everywhere: 0 (value and gradient) where ``squared`` <= _EPS."""
    zero = squared <= _EPS
    return torch.sqrt(squared.clamp_min(_EPS)).masked_fill(zero, 0.0)


def pairwise_distances(embeddings: Tensor, squared: bool) -> Tensor:
    """All pairwise Euclidean distances of a batch, numerically safe.

    ``d²(i, j) = ||x_i||² - 2 x_i·x_j + ||x_j||²``, clamped at 0 (rounding can make it slightly
    negative) with an exact 0 diagonal; ``d = sqrt(d²)`` with a zero gradient where d² = 0.

    Args:
        embeddings: (B, D).
        squared: return d² instead of d.

    Returns:
        (B, B) distances, float32 (or float64 for float64 input).
    """
    _check_embeddings(embeddings)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):  # half precision cancels badly here
        x = _at_least_float32(embeddings)
        norms = (x * x).sum(dim=1)  # (B,) squared norms
        # ||x_i||² + ||x_j||² - 2 x_i·x_j in one GEMM that writes into the sum of norms: fewer (B, B) temporaries
        d2 = torch.addmm(norms[:, None] + norms[None, :], x, x.T, alpha=-2.0).clamp_min(0.0)  # (B, B)
        d2.diagonal().zero_()  # exact zeros (and a zero gradient) on the diagonal
        return d2 if squared else _safe_sqrt(d2)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 (still connected to ``values``) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# triplet loss
# --------------------------------------------------------------------------------------------


class TripletLoss(nn.Module):
    """FaceNet triplet loss with online mining inside the batch.

    For an anchor a, a positive p (same label, p != a) and a negative n (other label)::

        l(a, p, n) = max(d(a, p) - d(a, n) + margin, 0)

    with d the squared Euclidean distance (``squared=True``, as in FaceNet, margin alpha = 0.1)
    or the Euclidean distance. Mining modes:

    - ``batch_all``: mean of l over the *active* triplets (l > 0) among all valid (a, p, n).
    - ``batch_hard`` (Hermans et al. 2017): per anchor, the hardest positive and the hardest
      negative, ``max(max_p d(a, p) - min_n d(a, n) + margin, 0)``; mean over anchors that have
      a positive and a negative.
    - ``semi_hard`` (FaceNet; same rule as TF-addons ``triplet_semihard_loss``): every
      anchor-positive pair (a, p) takes the negative with the smallest d(a, n) among those with
      ``d(a, n) > d(a, p)``, which is the hardest semi-hard one when some n has
      ``d(a, p) < d(a, n) < d(a, p) + margin``. **Fallback** when no negative is farther than the
      positive: the *easiest* negative, the largest d(a, n) (FaceNet notes that the hardest negatives
      early in training can collapse the embedding). Mean over all (a, p) pairs that have a negative,
      zero losses included.

    Cost: no mode builds a (B, B, B) tensor of triplets; memory is O(B²). batch_all and semi_hard
    compare each positive with the anchor's negatives, one (B, B) scan per positive slot (time
    O(K B²) for P x K batches), or, when anchors have more than 32 positives, by a binary search
    in each anchor's sorted negatives (time O(B² log B)). The values are the dense definitions'.

    After each forward, ``last_stats`` holds detached 0-d tensors (no GPU sync; log them as is):
    ``num_triplets`` (batch_all: valid triplets; batch_hard: anchors with a positive and a negative;
    semi_hard: such (a, p) pairs) and ``active_fraction`` (the share of those with l > 0).

    Args:
        margin: alpha, >= 0.
        mining: ``"batch_all"``, ``"batch_hard"`` or ``"semi_hard"``.
        squared: squared Euclidean distances (default, as FaceNet) or Euclidean ones.
    """

    def __init__(self, margin: float = 0.1, mining: TripletMining = "semi_hard", squared: bool = True) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"TripletLoss: expected margin >= 0, got {margin}")
        if mining not in ("batch_all", "batch_hard", "semi_hard"):
            raise ValueError(
                f"TripletLoss: expected mining in ('batch_all', 'batch_hard', 'semi_hard'), got {mining!r}"
            )
        self.margin = float(margin)
        self.mining = mining
        self.squared = squared
        self.last_stats: dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, squared={self.squared}"

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss of a batch: embeddings (B, D), integer labels (B,) -> scalar."""
        _check_embeddings(embeddings)
        if labels.ndim != 1 or len(labels) != len(embeddings):
            raise ValueError(
                f"Expected labels of shape ({len(embeddings)},) for embeddings {tuple(embeddings.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        dist = pairwise_distances(embeddings, squared=self.squared)  # (B, B)
        same = labels[:, None] == labels[None, :]  # (B, B)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive, negative = same & ~eye, ~same  # (B, B) masks over (anchor, other)
        mine = {"batch_all": self._batch_all, "batch_hard": self._batch_hard, "semi_hard": self._semi_hard}
        loss, num, num_active = mine[self.mining](dist, positive, negative)
        self.last_stats = {"num_triplets": num.detach(), "active_fraction": num_active.detach() / num.clamp_min(1)}
        return loss

    def _batch_all(self, dist: Tensor, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        index, slots = _positive_slots(positive)
        with torch.no_grad():
            thresholds = (dist.gather(1, index) + self.margin).masked_fill(~slots, -1.0)  # -1: below every distance
            counts, weights = _active_counts(dist.detach(), thresholds, negative)
        # sum over active (a, p, n) of d_ap - d_an + m = sum_(a,p) c_ap (d_ap + m) - sum_(a,n) w_an d_an, with
        # c_ap the active negatives of (a, p) and w_an the active positives of (a, n): the loss is linear in the
        # distances with these counts as coefficients, so value and gradient come without any (B, B, B) tensor.
        # The sums accumulate in float64: they are much larger than their difference.
        total = torch.sum(counts * (dist.gather(1, index) + self.margin), dtype=torch.float64) - torch.sum(
            weights * dist, dtype=torch.float64
        )
        num_active = counts.sum().long()
        num_triplets = (positive.sum(dim=1) * negative.sum(dim=1)).sum()
        return (total / num_active.clamp_min(1)).to(dist.dtype), num_triplets, num_active

    def _batch_hard(self, dist: Tensor, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # a finite stand-in for "no candidate", so no inf reaches the gradient
        far = dist.detach().max() + self.margin + 1.0
        hardest_positive = dist.masked_fill(~positive, 0.0).amax(dim=1)  # (B,)
        hardest_negative = dist.masked_fill(~negative, far).amin(dim=1)  # (B,)
        losses = (hardest_positive - hardest_negative + self.margin).clamp_min(0.0)  # (B,)
        valid = positive.any(dim=1) & negative.any(dim=1)  # (B,)
        return _masked_mean(losses, valid), valid.sum(), ((losses > 0) & valid).sum()

    def _semi_hard(self, dist: Tensor, positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        index, slots = _positive_slots(positive)
        d_ap = dist.gather(1, index)  # (B, S) [a, slot]
        with torch.no_grad():
            nearest, found = _nearest_farther(dist.detach(), d_ap.detach(), negative)
        easiest = dist.masked_fill(~negative, 0.0).amax(dim=1)  # (B,) fallback: largest d(a, n)
        chosen = torch.where(found, dist.gather(1, nearest), easiest[:, None])  # (B, S)
        losses = (d_ap - chosen + self.margin).clamp_min(0.0)  # (B, S)
        valid = slots & negative.any(dim=1, keepdim=True)  # (B, S): real (a, p) pairs with a negative
        return _masked_mean(losses, valid), valid.sum(), ((losses > 0) & valid).sum()


# Mining helpers. An anchor's positives are few in P x K batches (K - 1), so the (B, B) distance
# matrix is scanned once per positive slot (O(K B^2) time, a (B, B) temporary at a time); with more
# positives per anchor than this, each anchor's negatives are sorted once and searched instead
# (O(B^2 log B) whatever the labels).
_SCAN_MAX_POSITIVES = 32
_CHUNK_ELEMENTS = 2**22  # positive slots scanned together: at most this many (anchor, slot, other) cells


def _positive_slots(positive: Tensor) -> tuple[Tensor, Tensor]:
    """Each anchor's positives as columns: (B, S) indices (S = the most positives of any anchor) and their mask."""
    batch = len(positive)
    counts = positive.sum(dim=1)
    width = int(counts.max()) if batch else 0  # one device sync per step
    rows, cols = positive.nonzero(as_tuple=True)  # row-major: each anchor's positives in order
    slot = torch.arange(len(rows), device=positive.device) - (counts.cumsum(0) - counts)[rows]
    index = torch.zeros(batch, width, dtype=torch.long, device=positive.device)
    index[rows, slot] = cols
    slots = torch.zeros(batch, width, dtype=torch.bool, device=positive.device)
    slots[rows, slot] = True
    return index, slots


def _scan_step(batch: int) -> int:
    """Positive slots scanned together, so a scan's temporaries hold at most ``_CHUNK_ELEMENTS`` cells."""
    return max(1, _CHUNK_ELEMENTS // max(1, batch * batch))


def _sorted_negatives(dist: Tensor, negative: Tensor, above: Tensor) -> tuple[Tensor, Tensor]:
    """Each anchor's negative distances ascending, then a filler larger than ``above``: values and columns (B, B)."""
    far = torch.maximum(dist.max(), above.max()) + 1.0
    return dist.masked_fill(~negative, far).sort(dim=1)


def _active_counts(dist: Tensor, thresholds: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
    """Active triplet counts: per (anchor, slot) the negatives below its threshold, per (anchor, negative) the slots.

    Args:
        dist: (B, B) distances, detached.
        thresholds: (B, S) ``d(a, p) + margin`` of each positive slot (-1 for an empty slot).
        negative: (B, B) mask of (anchor, negative).

    Returns:
        counts (B, S): ``#{n : d(a, n) < threshold}``; weights (B, B): ``#{slot : d(a, n) < threshold}``; both
        in ``dist``'s dtype (exact integers).
    """
    batch, width = thresholds.shape
    if width <= _SCAN_MAX_POSITIVES:
        counts = torch.zeros(batch, width, dtype=dist.dtype, device=dist.device)
        weights = torch.zeros(batch, batch, dtype=dist.dtype, device=dist.device)
        step = _scan_step(batch)
        for start in range(0, width, step):
            hits = (dist[:, None, :] < thresholds[:, start : start + step, None]) & negative[:, None, :]  # (B, c, B)
            counts[:, start : start + step] = hits.sum(dim=2)
            weights += hits.sum(dim=1)
        return counts, weights
    values, columns = _sorted_negatives(dist, negative, thresholds)
    counts = torch.searchsorted(values, thresholds.contiguous())  # (B, S): sorted negatives below the threshold
    # The negative at sorted rank r is active for the slots whose count exceeds r.
    histogram = torch.zeros(batch, batch + 1, dtype=torch.long, device=dist.device)
    histogram.scatter_add_(1, counts, torch.ones_like(counts))
    at_rank = histogram.flip(1).cumsum(1).flip(1)[:, 1:]  # (B, B): #{slot : count > r}
    weights = torch.zeros_like(at_rank).scatter_(1, columns, at_rank)
    return counts.to(dist.dtype), weights.to(dist.dtype)


def _nearest_farther(dist: Tensor, d_ap: Tensor, negative: Tensor) -> tuple[Tensor, Tensor]:
    """Per (anchor, slot), the column of the nearest negative farther than the positive, and whether one exists.

    Args:
        dist: (B, B) distances, detached.
        d_ap: (B, S) distance of each positive slot.
        negative: (B, B) mask of (anchor, negative).
    """
    batch, width = d_ap.shape
    if width <= _SCAN_MAX_POSITIVES:
        nearest = torch.zeros(batch, width, dtype=torch.long, device=dist.device)
        found = torch.zeros(batch, width, dtype=torch.bool, device=dist.device)
        step = _scan_step(batch)
        for start in range(0, width, step):
            farther = negative[:, None, :] & (dist[:, None, :] > d_ap[:, start : start + step, None])  # (B, c, B)
            nearest[:, start : start + step] = dist[:, None, :].masked_fill(~farther, float("inf")).argmin(dim=2)
            found[:, start : start + step] = farther.any(dim=2)
        return nearest, found
    values, columns = _sorted_negatives(dist, negative, d_ap)
    first = torch.searchsorted(values, d_ap.contiguous(), right=True)  # (B, S): first sorted negative > d(a, p)
    found = first < negative.sum(dim=1, keepdim=True)
    return columns.gather(1, first.clamp_max(batch - 1)), found


# --------------------------------------------------------------------------------------------
# contrastive loss
# --------------------------------------------------------------------------------------------


def _pair_distance(x1: Tensor, x2: Tensor, distance: PairDistance) -> Tensor:
    """(B,) distance of each pair: Euclidean, squared Euclidean, or mean squared difference."""
    with torch.autocast(device_type=x1.device.type, enabled=False):
        diff = _at_least_float32(x1) - _at_least_float32(x2)  # (B, D)
        squared = (diff * diff).sum(dim=1)  # (B,)
        if distance == "euclidean":
            return _safe_sqrt(squared)
        if distance == "squared":
            return squared
        return squared / x1.shape[1]  # mean over the D features


class ContrastiveLoss(nn.Module):
    """Contrastive loss on pairs (x1, x2, same), balanced between same and different pairs.

    With d the pair distance and s = 2 if ``squared_terms`` else 1::

        L = 0.5 * mean_{same pairs} d^s + 0.5 * mean_{different pairs} max(0, margin - d)^s

    Each mean is over its own pairs (0 when a batch has none), so same and different pairs
    weigh half each whatever their count. The distance ``d`` is

    - ``"euclidean"``: ||x1 - x2||;
    - ``"squared"``: ||x1 - x2||²;
    - ``"mean_squared"``: ||x1 - x2||² / D, the mean squared difference over the D features.

    ``squared_terms=None`` (default) squares the terms for ``"euclidean"`` only, since squaring an
    already squared distance gives quartic terms that no reference uses.

    Defaults: ``distance="euclidean"`` (so squared terms), ``margin=1.0`` is the classic
    Hadsell, Chopra & LeCun (2006) form, ``0.5 d²`` and ``0.5 max(0, m - d)²``, whose gradient
    vanishes smoothly at d = 0 and at the margin; margin 1 suits unit embeddings (d in [0, 2]).
    On half-same/half-different batches it equals Hadsell's per-pair mean times 2. The original
    project's form is ``distance="mean_squared", squared_terms=False, margin=5.0`` (it had 4096-d
    unnormalised features; on unit embeddings the mean squared difference is at most 4 / D, so the
    margin must shrink accordingly).

    After each forward, ``last_stats`` holds detached 0-d tensors: ``num_same``, ``num_different``
    and ``active_fraction`` (the share of different pairs closer than the margin).

    Args:
        margin: m > 0, in units of the chosen distance.
        distance: ``"euclidean"``, ``"squared"`` or ``"mean_squared"``.
        squared_terms: square both terms (Hadsell) or keep them linear in d; None: square them
            for ``"euclidean"`` only.
    """

    def __init__(
        self, margin: float = 1.0, distance: PairDistance = "euclidean", squared_terms: bool | None = None
    ) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"ContrastiveLoss: expected margin > 0, got {margin}")
        if distance not in ("euclidean", "squared", "mean_squared"):
            raise ValueError(
                f"ContrastiveLoss: expected distance in ('euclidean', 'squared', 'mean_squared'), got {distance!r}"
            )
        self.margin = float(margin)
        self.distance = distance
        self.squared_terms = distance == "euclidean" if squared_terms is None else squared_terms
        self.last_stats: dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}, squared_terms={self.squared_terms}"

    def forward(self, x1: Tensor, x2: Tensor, same: Tensor) -> Tensor:
        """Loss of a batch of pairs: x1, x2 (B, D), same (B,) in {0, 1} (bool or float) -> scalar."""
        _check_embeddings(x1, "x1")
        if x2.shape != x1.shape:
            raise ValueError(f"Expected x2 of the same shape as x1 {tuple(x1.shape)}, got {tuple(x2.shape)}")
        if same.shape != (len(x1),):
            raise ValueError(f"Expected same of shape ({len(x1)},), got {tuple(same.shape)}")
        if not same.dtype == torch.bool and not ((same == 0) | (same == 1)).all():
            raise ValueError("Expected same to hold only 0 (different) and 1 (same identity) values")
        is_same = same.bool()  # (B,)
        dist = _pair_distance(x1, x2, self.distance)  # (B,)
        hinge = (self.margin - dist).clamp_min(0.0)  # (B,)
        power = 2 if self.squared_terms else 1
        loss = 0.5 * _masked_mean(dist**power, is_same) + 0.5 * _masked_mean(hinge**power, ~is_same)
        num_different = (~is_same).sum()
        self.last_stats = {
            "num_same": is_same.sum().detach(),
            "num_different": num_different.detach(),
            "active_fraction": ((hinge > 0) & ~is_same).sum().detach() / num_different.clamp_min(1),
        }
        return loss


# --------------------------------------------------------------------------------------------
# localisation (single-face detector)
# --------------------------------------------------------------------------------------------

BoxLossName = Literal["original", "giou", "diou", "smooth_l1"]
IoULossName = Literal["giou", "diou"]


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"Expected {name} to be a tensor of shape (B, 4) as x1, y1, x2, y2, got {shape}")


def original_localization(pred: Tensor, target: Tensor) -> Tensor:
    """The original project's per-image localisation loss on ``x1, y1, x2, y2`` boxes.

    ``(x1 - x1')² + (y1 - y1')² + (w - w')² + (h - h')²`` with ``w = x2 - x1``, ``h = y2 - y1``:
    the top-left corner and the size. Returns shape (B,).
    """
    size, true_size = pred[:, 2:] - pred[:, :2], target[:, 2:] - target[:, :2]
    return ((pred[:, :2] - target[:, :2]) ** 2).sum(dim=1) + ((size - true_size) ** 2).sum(dim=1)


def _iou_and_hull(p: Tensor, t: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """IoU (B,), union (B,), and the enclosing box's corners (B, 2) each, of sorted boxes."""
    inter_wh = (torch.minimum(p[:, 2:], t[:, 2:]) - torch.maximum(p[:, :2], t[:, :2])).clamp_min(0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) + (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1]) - inter
    return inter / (union + eps), union, torch.minimum(p[:, :2], t[:, :2]), torch.maximum(p[:, 2:], t[:, 2:])


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 - GIoU`` per image (B,), after sorting each predicted box's corners (0 for identical boxes, up to 2)."""
    iou, union, low, high = _iou_and_hull(ordered_boxes(pred), target, eps)
    hull = (high - low).prod(dim=1)
    return 1.0 - (iou - (hull - union) / (hull + eps))


def diou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 - IoU + d² / c²`` per image (B,) (DIoU, Zheng et al. 2020): ``d`` centre distance, ``c`` hull diagonal."""
    p = ordered_boxes(pred)
    iou, _, low, high = _iou_and_hull(p, target, eps)
    centre_gap = ((p[:, :2] + p[:, 2:]) - (target[:, :2] + target[:, 2:])) / 2
    return 1.0 - iou + (centre_gap**2).sum(dim=1) / (((high - low) ** 2).sum(dim=1) + eps)


class DetectionLoss(nn.Module):
    """``box_weight * (localisation + iou_weight * IoU loss) + cls_weight * BCE`` of a single-face detector.

    The localisation terms are averaged over the images that hold a face only: an image without a
    face has no box to learn (the original summed it over every image and so pulled the boxes of
    negatives towards its zero target). The BCE is averaged over every image.

    Args:
        box_loss: ``original`` (corner + size squared error), ``giou`` (1 - GIoU), ``diou`` (1 - DIoU)
            or ``smooth_l1`` (on the four coordinates).
        box_weight: Weight of the localisation term.
        cls_weight: Weight of the face / no-face binary cross-entropy (0.5 in the original).
        iou_loss: ``giou`` or ``diou``: a loss that follows IoU, added beside ``box_loss``; ``None``: none.
        iou_weight: Weight of ``iou_loss`` inside the localisation term.

    Call:
        ``loss(logits (B,) or (B, 1), boxes (B, 4), labels (B,) 0/1, true_boxes (B, 4))``; returns
        the scalar total; ``self.last`` keeps the terms (detached) for logging.
    """

    def __init__(self, box_loss: BoxLossName = "original", box_weight: float = 1.0, cls_weight: float = 0.5,
                 iou_loss: Optional[IoULossName] = None, iou_weight: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        if box_loss not in ("original", "giou", "diou", "smooth_l1"):
            raise ValueError(f"box_loss must be one of original, giou, diou, smooth_l1; got {box_loss!r}")
        if iou_loss not in (None, "giou", "diou"):
            raise ValueError(f"iou_loss must be giou, diou or null; got {iou_loss!r}")
        self.box_loss, self.iou_loss = box_loss, iou_loss
        self.box_weight, self.cls_weight, self.iou_weight = box_weight, cls_weight, iou_weight
        self.last: dict[str, Tensor] = {}

    def per_image_box_loss(self, pred: Tensor, target: Tensor, name: Optional[str] = None) -> Tensor:
        """The localisation loss ``name`` (default: ``box_loss``) of each image, shape (B,)."""
        name = name or self.box_loss
        if name in ("giou", "diou"):
            return giou_loss(pred, target) if name == "giou" else diou_loss(pred, target)
        if name == "smooth_l1":
            return torch.nn.functional.smooth_l1_loss(pred, target, reduction="none", beta=0.05).sum(dim=1)
        return original_localization(pred, target)

    def forward(self, logits: Tensor, boxes: Tensor, labels: Tensor, true_boxes: Tensor) -> Tensor:
        _check_boxes(boxes, "boxes")
        _check_boxes(true_boxes, "true_boxes")
        logits = _at_least_float32(logits.reshape(-1))
        boxes, true_boxes = _at_least_float32(boxes), true_boxes.to(torch.float32)
        labels = labels.reshape(-1).to(logits.dtype)
        if not (len(logits) == len(boxes) == len(labels) == len(true_boxes)):
            raise ValueError(
                f"Expected one logit, box, label and true box per image, got {len(logits)}, {len(boxes)}, "
                f"{len(labels)} and {len(true_boxes)}"
            )
        has_face = labels > 0.5
        # A negative's boxes are swapped for a fixed unit box before the loss: its term is then an
        # exact 0 with a 0 gradient, whatever its target holds (zeros, or even NaN).
        unit = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype).expand_as(boxes)
        keep, faces = has_face[:, None], has_face.sum().clamp_min(1)
        pred, target = torch.where(keep, boxes, unit), torch.where(keep, true_boxes, unit)
        box_term = self.per_image_box_loss(pred, target).sum() / faces
        cls_term = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        self.last = {"box_loss": box_term.detach(), "cls_loss": cls_term.detach()}
        if self.iou_loss is not None:
            iou_term = self.per_image_box_loss(pred, target, self.iou_loss).sum() / faces
            self.last["iou_loss"] = iou_term.detach()
            box_term = box_term + self.iou_weight * iou_term
        return self.box_weight * box_term + self.cls_weight * cls_term

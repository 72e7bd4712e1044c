"""The dense triplet losses facetorch used before O(B²) mining: a reference for tests only.

They build (B, B, B) tensors over every (anchor, positive, negative), so they are slow and
memory-hungry, but each mode is a direct transcription of its definition.
"""

from __future__ import annotations

import torch
from torch import Tensor

from facetorch.losses import pairwise_distances


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def dense_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float, mining: str, squared: bool = True
) -> tuple[Tensor, int, float]:
    """The old ``TripletLoss`` forward: (loss, num_triplets, active_fraction)."""
    dist = pairwise_distances(embeddings, squared=squared)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    positive, negative = same & ~eye, ~same
    if mining == "batch_all":
        losses = (dist[:, :, None] - dist[:, None, :] + margin).clamp_min(0.0)
        valid = positive[:, :, None] & negative[:, None, :]
        loss = _masked_mean(losses, valid & (losses > 0))
    elif mining == "batch_hard":
        far = dist.detach().max() + margin + 1.0
        hardest_positive = dist.masked_fill(~positive, 0.0).amax(dim=1)
        hardest_negative = dist.masked_fill(~negative, far).amin(dim=1)
        losses = (hardest_positive - hardest_negative + margin).clamp_min(0.0)
        valid = positive.any(dim=1) & negative.any(dim=1)
        loss = _masked_mean(losses, valid)
    else:
        far = dist.detach().max() + margin + 1.0
        d_ap, d_an = dist[:, :, None], dist[:, None, :]
        farther = negative[:, None, :] & (d_an > d_ap)
        nearest_farther = d_an.expand_as(farther).masked_fill(~farther, far).amin(dim=2)
        easiest = dist.masked_fill(~negative, 0.0).amax(dim=1)
        chosen = torch.where(farther.any(dim=2), nearest_farther, easiest[:, None])
        losses = (dist - chosen + margin).clamp_min(0.0)
        valid = positive & negative.any(dim=1, keepdim=True)
        loss = _masked_mean(losses, valid)
    num = int(valid.sum())
    return loss, num, float(((losses > 0) & valid).sum()) / max(num, 1)

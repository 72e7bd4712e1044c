"""Margin softmax heads for many identities: ArcFace and CosFace, with class centres sharded across ranks.

:class:`MarginSoftmaxHead` holds one unit-length centre per training identity and turns a batch
of embeddings into a cross-entropy loss with an additive margin on the true class:

- ``arcface`` (Deng et al. 2019): the target logit is ``s * cos(theta + m)`` (default m = 0.5 rad);
  where ``theta + m`` would pass pi it is ``s * (cos(theta) - m sin(m))``, which keeps the logit
  decreasing in theta (insightface's and pytorch-metric-learning's rule);
- ``cosface`` (Wang et al. 2018): ``s * (cos(theta) - m)`` (default m = 0.35).

Other logits are ``s * cos(theta)``, s = 64 by default.

Many identities (Partial FC, An et al. 2021, as insightface trains on millions of people): under
data parallelism with R ranks, rank r holds only the centres of classes ``[r C / R, (r + 1) C / R)``,
so the head's memory per rank is C / R rows, whatever C is. Each step gathers the embeddings and
labels of every rank, computes logits against the local centres only, and the softmax is
normalised across ranks (a max and a sum of exponentials reduced over the process group; the
target logit lives on one rank). With ``sample_rate < 1`` each rank keeps, per step, the centres of
the batch's identities in its range plus a random subset of the other (negative) centres, up to
``sample_rate`` of its centres; ``sample_rate = 1`` is the exact softmax over all classes, equal to
the unsharded head (the tests check it on one process and on two).

Gradients: the loss is the mean over the global batch, identical on every rank. The gather's
backward sums each embedding's gradient over the ranks' logits and multiplies it by R, because
DDP then averages the backbone's gradients over ranks: the backbone receives the gradient of the
global mean loss. The centres' gradients are complete on their own rank: DDP must not average
them (``EmbeddingTask`` lists them in ``_ddp_params_and_buffers_to_ignore``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MARGIN_DEFAULTS", "MarginKind", "MarginSoftmaxHead", "class_range", "init_centres"]

MarginKind = Literal["arcface", "cosface"]
MARGIN_DEFAULTS: dict[str, float] = {"arcface": 0.5, "cosface": 0.35}
_INIT_BLOCK = 4096  # centres are drawn in blocks of rows, each from its own seed: a shard draws only its blocks


def class_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """The classes ``[start, end)`` whose centres rank ``rank`` of ``world_size`` holds (contiguous, sizes differ by <= 1)."""
    return num_classes * rank // world_size, num_classes * (rank + 1) // world_size


def init_centres(start: int, end: int, dim: int, seed: int) -> Tensor:
    """Rows ``[start, end)`` of the (C, D) initial centre matrix, N(0, 0.01²): the same rows for any sharding."""
    rows = []
    for block in range(start // _INIT_BLOCK, math.ceil(end / _INIT_BLOCK)):
        values = np.random.default_rng([seed, block]).normal(0.0, 0.01, (_INIT_BLOCK, dim)).astype(np.float32)
        first = block * _INIT_BLOCK
        rows.append(values[max(start, first) - first : min(end, first + _INIT_BLOCK) - first])
    return torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, dim), np.float32))


# --------------------------------------------------------------------------------------------
# collectives with the gradients this loss needs
# --------------------------------------------------------------------------------------------


def _gather_rows(x: Tensor, group: Any) -> tuple[Tensor, list[int]]:
    """All ranks' rows of ``x`` concatenated in rank order (ranks may hold different numbers of rows)."""
    world = dist.get_world_size(group)
    count = torch.tensor([len(x)], device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    sizes = [int(c) for c in counts]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), sizes


class _GatherEmbeddings(torch.autograd.Function):
    """Forward: every rank's embeddings. Backward: this rank's rows of the gradient summed over ranks, times R."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        gathered, sizes = _gather_rows(x, group)
        ctx.group, ctx.sizes, ctx.rank = group, sizes, dist.get_rank(group)
        return gathered

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        # times R: DDP averages the backbone's gradients over ranks afterwards
        return grad[start : start + ctx.sizes[ctx.rank]] * len(ctx.sizes), None


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum of ``x`` over ranks. Backward: identity.

    Every rank computes the same loss from the same sum, so each rank's own copy of the loss
    gives its own addend the whole gradient; reducing the gradients too would count it R times.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


# --------------------------------------------------------------------------------------------
# the head
# --------------------------------------------------------------------------------------------


class MarginSoftmaxHead(nn.Module):
    """ArcFace / CosFace loss over class centres, this rank's share of them, with sampled negatives.

    Args:
        embedding_dim: D.
        num_classes: C, every training identity (all ranks together).
        kind: ``arcface`` (angular margin) or ``cosface`` (cosine margin).
        margin: m; ``None``: 0.5 for arcface, 0.35 for cosface.
        scale: s, the logit scale.
        sample_rate: Share of this rank's centres used per step (the batch's own identities always
            are); 1.0: all of them, the exact softmax.
        world_size: Ranks that share the centres (1: the whole matrix here).
        rank: This rank.
        seed: Seed of the initial centres (the same rows whatever the sharding).
        group: The process group (default: the whole world) when ``world_size > 1``.

    Call: ``head(embeddings (B, D), labels (B,))`` -> the mean loss over every rank's batch.
    ``last_stats`` then holds ``num_sampled`` (centres used on this rank) and ``accuracy`` (share of
    the batch whose true centre has the largest logit, over the centres used).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        kind: MarginKind = "arcface",
        margin: Optional[float] = None,
        scale: float = 64.0,
        sample_rate: float = 1.0,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        group: Any = None,
    ) -> None:
        super().__init__()
        if kind not in MARGIN_DEFAULTS:
            raise ValueError(f"MarginSoftmaxHead: expected kind in {sorted(MARGIN_DEFAULTS)}, got {kind!r}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"MarginSoftmaxHead: expected 0 < sample_rate <= 1, got {sample_rate}")
        if num_classes < world_size:
            raise ValueError(f"MarginSoftmaxHead: {num_classes} classes cannot be sharded over {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"MarginSoftmaxHead: expected 0 <= rank < world_size={world_size}, got {rank}")
        self.kind = kind
        self.margin = MARGIN_DEFAULTS[kind] if margin is None else float(margin)
        self.scale = float(scale)
        self.sample_rate = float(sample_rate)
        self.num_classes, self.embedding_dim = int(num_classes), int(embedding_dim)
        self.world_size, self.rank, self.group = int(world_size), int(rank), group
        self.start, self.end = class_range(self.num_classes, self.world_size, self.rank)
        self.weight = nn.Parameter(init_centres(self.start, self.end, self.embedding_dim, seed))
        self.last_stats: dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        return (
            f"{self.kind}, classes={self.num_classes} (this rank: {self.start}..{self.end}), dim={self.embedding_dim}, "
            f"margin={self.margin}, scale={self.scale}, sample_rate={self.sample_rate}"
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # ------------------------------------------------------------------ forward
    def _sample(self, local_labels: Tensor) -> tuple[Optional[Tensor], Tensor]:
        """Centres used this step (``None``: all) and each sample's column among them (-1: not on this rank)."""
        num_local = self.end - self.start
        if self.sample_rate >= 1.0:
            return None, local_labels
        positives = torch.unique(local_labels[local_labels >= 0])
        keep = min(num_local, max(len(positives), math.ceil(self.sample_rate * num_local)))
        scores = torch.rand(num_local, device=self.weight.device)
        scores[positives] = 2.0  # the batch's own identities always stay
        index = torch.topk(scores, keep, sorted=False).indices.sort().values  # (S,)
        position = torch.searchsorted(index, local_labels.clamp_min(0))
        found = (local_labels >= 0) & (index[position.clamp_max(keep - 1)] == local_labels)
        return index, torch.where(found, position, torch.full_like(position, -1))

    def _with_margin(self, cosine: Tensor) -> Tensor:
        if self.kind == "cosface":
            return cosine - self.margin
        sine = torch.sqrt((1.0 - cosine * cosine).clamp_min(0.0))
        cos_m, sin_m = math.cos(self.margin), math.sin(self.margin)
        # theta + m <= pi  <=>  cos(theta) >= cos(pi - m)
        return torch.where(cosine >= math.cos(math.pi - self.margin), cosine * cos_m - sine * sin_m, cosine - self.margin * sin_m)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim or labels.shape != (len(embeddings),):
            raise ValueError(
                f"MarginSoftmaxHead: expected embeddings (B, {self.embedding_dim}) and labels (B,), "
                f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"MarginSoftmaxHead: labels must lie in [0, {self.num_classes}), got {int(labels.min())}..{int(labels.max())}"
            )
        if self.distributed:
            x = _GatherEmbeddings.apply(embeddings, self.group)
            y, _ = _gather_rows(labels, self.group)
        else:
            x, y = embeddings, labels
        mine = (y >= self.start) & (y < self.end)
        local_labels = torch.where(mine, y - self.start, torch.full_like(y, -1))
        index, column = self._sample(local_labels)
        centres = self.weight if index is None else self.weight[index]
        # float32 (or float64) even under autocast: bf16 cosines are off by ~0.004, a quarter of a logit at s = 64
        with torch.autocast(device_type=x.device.type, enabled=False):
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            cosine = F.linear(F.normalize(x, dim=1), F.normalize(centres.to(x.dtype), dim=1)).clamp(-1.0, 1.0)  # (B_all, S)
        has_target = column >= 0
        rows = torch.arange(len(y), device=y.device)
        target_cos = cosine[rows, column.clamp_min(0)]
        logits = cosine.index_put((rows[has_target], column[has_target]), self._with_margin(target_cos[has_target]))
        logits = self.scale * logits
        loss = self._cross_entropy(logits, column, has_target)
        with torch.no_grad():
            best = logits.max(dim=1).values
            if self.distributed:
                dist.all_reduce(best, op=dist.ReduceOp.MAX, group=self.group)
            hit = has_target & (logits[rows, column.clamp_min(0)] >= best)
            if self.distributed:
                hit = hit.int()
                dist.all_reduce(hit, op=dist.ReduceOp.SUM, group=self.group)
            self.last_stats = {"num_sampled": torch.tensor(logits.shape[1]), "accuracy": hit.float().mean()}
        return loss

    def _cross_entropy(self, logits: Tensor, column: Tensor, has_target: Tensor) -> Tensor:
        """Mean cross-entropy of softmax rows that span every rank's columns."""
        peak = logits.detach().max(dim=1).values  # (B_all,)
        if self.distributed:
            dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=self.group)
        shifted = logits - peak[:, None]
        sum_exp = shifted.exp().sum(dim=1)  # (B_all,) this rank's part
        target = torch.where(has_target, shifted.gather(1, column.clamp_min(0)[:, None])[:, 0], torch.zeros_like(peak))
        if self.distributed:
            sum_exp = _SumOverRanks.apply(sum_exp, self.group)
            target = _SumOverRanks.apply(target, self.group)  # each sample's target logit is on one rank
        return (torch.log(sum_exp) - target).mean()

    # ------------------------------------------------------------------ checkpoints
    @torch.no_grad()
    def full_weight(self) -> Tensor:
        """The (C, D) centre matrix of all ranks (a collective: call it on every rank)."""
        if not self.distributed:
            return self.weight.detach().clone()
        full, _ = _gather_rows(self.weight.detach(), self.group)
        return full

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A checkpoint holds the whole (C, D) matrix; a shard keeps its own rows of it.
        key = prefix + "weight"
        weight = state_dict.get(key)
        if weight is not None and weight.shape == (self.num_classes, self.embedding_dim) and self.distributed:
            state_dict[key] = weight[self.start : self.end]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

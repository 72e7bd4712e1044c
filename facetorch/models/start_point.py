"""Where a fine-tuning run started: the starting weights and penalties for moving away from them.

Fine-tuning a pretrained face network on a few people can make it worse on everyone else. Two
regularisers keep it near where it started:

- **L2-SP** (Li, Grandvalet and Davoine, "Explicit inductive bias for transfer learning with
  convolutional networks", ICML 2018): the squared distance ``sum((w - w0)^2)`` of the trained
  weights from their starting values ``w0``, in place of weight decay towards zero;
- **distillation** to the starting network: ``1 - cos(e, e0)``, averaged over the batch, between the
  embedding ``e`` of each training image and the embedding ``e0`` that a frozen copy of the
  starting network gives it (``|e - e0|^2 / 2`` for unit vectors, in the triplet loss's units).

Both are zero at the start and grow as the network moves. The snapshot is not a submodule of the
task, so checkpoints keep the same ``state_dict`` (evaluation, export and the gallery are
unaffected); the task keeps it in the checkpoint under its own key so that a resumed run keeps
pulling towards the same start.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StartPoint"]


class StartPoint:
    """A snapshot of ``model`` as it is now, and the distances of ``model`` from it later.

    Args:
        model: The network being fine-tuned (its current weights are the start).
        keep_network: Also keep a frozen copy of the whole network for :meth:`distillation`
            (one more forward pass, without gradients, per training batch).
    """

    def __init__(self, model: nn.Module, keep_network: bool = False) -> None:
        self.weights = {name: param.detach().clone() for name, param in model.named_parameters()}
        self.network: Optional[nn.Module] = None
        if keep_network:
            self.network = copy.deepcopy(model).requires_grad_(False)

    def l2_sp(self, model: nn.Module) -> torch.Tensor:
        """``sum((w - w0)^2)`` over the parameters of ``model`` that are trained (``requires_grad``)."""
        total = torch.zeros((), device=next(model.parameters()).device)
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            start = self.weights.get(name)
            if start is None or start.shape != param.shape:
                raise KeyError(f"L2-SP: parameter {name!r} {tuple(param.shape)} has no starting value of that shape")
            if start.device != param.device:
                start = self.weights[name] = start.to(param.device)
            total = total + (param.float() - start.float()).pow(2).sum()
        return total

    def distillation(self, model: nn.Module, images: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Mean ``1 - cos(embeddings, the start network's embeddings of images)``.

        The frozen network runs in the same mode as ``model``, module by module (batch statistics
        where ``model`` uses them), so the two differ only by how the weights moved.

        Args:
            model: The network being trained (whose modes the frozen copy follows).
            images: The (B, C, H, W) batch that gave ``embeddings`` (in the network's memory format).
            embeddings: (B, D) embeddings of ``model``.
        """
        if self.network is None:
            raise RuntimeError("distillation needs the starting network: build the StartPoint with keep_network=True")
        if next(self.network.parameters()).device != images.device:
            self.network.to(images.device)
        for trained, frozen in zip(model.modules(), self.network.modules()):
            frozen.training = trained.training
        with torch.no_grad():
            target = self.network(images)
        return (1.0 - F.cosine_similarity(embeddings.float(), target.float(), dim=1)).mean()

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """What a checkpoint keeps: the starting weights, and the frozen network's buffers when it is kept.

        The frozen network's parameters are the starting weights, so they are stored once.
        """
        state = {"weights": {name: value.cpu() for name, value in self.weights.items()}}
        if self.network is not None:
            state["buffers"] = {name: value.cpu() for name, value in self.network.named_buffers()}
        return state

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore the start of a run from :meth:`state_dict` (a checkpoint of a resumed run)."""
        self.weights = {name: value.clone() for name, value in state["weights"].items()}
        if self.network is not None:
            self.network.load_state_dict({**self.weights, **state.get("buffers", {})})

"""Keep a pretrained backbone's first stages frozen for the whole fit, and train the rest.

OpenFace's schedule: everything up to inception 4e frozen, 5a / 5b and the embedding layer trained::

    trainer:
      callbacks:
        - class_path: facetorch.callbacks.FreezeStages
          init_args: {up_to: inception_4e}

A frozen stage gets no gradients and stays in eval mode, so its BatchNorm layers normalise with
their pretrained running statistics and never update them (Lightning's ``BaseFinetuning`` would
switch them to batch statistics instead). The task's optimiser must be built over the
parameters that require grad only (as the tasks' ``trainable_parameters`` do); the freeze happens
in ``setup``, before the optimiser is built, so a resumed run freezes the same stages again.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn


class FreezeStages(pl.Callback):
    """Freeze the backbone's stages from its first one up to and including ``up_to``.

    A backbone's stages are the names in its ``stages`` attribute when it has one (timm
    backbones: ``model.layer1`` ...), else its children in forward order (``openface_nn4_small2``:
    ``stem``, ``inception_3a`` ... ``inception_5b``; the torchvision ResNets: ``conv1``, ``bn1``,
    ``relu``, ``maxpool``, ``layer1`` ... ``layer4``).

    Args:
        up_to: Name of the last frozen stage.
        backbone_attr: Dotted attribute path from the task to its backbone module.
    """

    def __init__(self, up_to: str, backbone_attr: str = "model.backbone") -> None:
        super().__init__()
        self.up_to = up_to
        self.backbone_attr = backbone_attr
        self.frozen: list[nn.Module] = []

    def _backbone(self, pl_module: pl.LightningModule) -> nn.Module:
        module: object = pl_module
        for part in self.backbone_attr.split("."):
            module = getattr(module, part, None)
        if not isinstance(module, nn.Module):
            raise AttributeError(
                f"FreezeStages expects the task's backbone at .{self.backbone_attr}; "
                f"{type(pl_module).__name__}.{self.backbone_attr} is {type(module).__name__}"
            )
        return module

    def frozen_stages(self, backbone: nn.Module) -> list[tuple[str, nn.Module]]:
        """The (name, module) stages from the first one up to and including ``up_to``."""
        names = list(getattr(backbone, "stages", None) or [name for name, _ in backbone.named_children()])
        if self.up_to not in names:
            raise ValueError(
                f"FreezeStages up_to={self.up_to!r} is not a stage of backbone {type(backbone).__name__}; "
                f"its stages are {names}"
            )
        return [(name, backbone.get_submodule(name)) for name in names[: names.index(self.up_to) + 1]]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.frozen = [module for _, module in self.frozen_stages(self._backbone(pl_module))]
        for module in self.frozen:
            module.requires_grad_(False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The validation loop restores these modes afterwards, so once per epoch is enough.
        for module in self.frozen:
            module.eval()

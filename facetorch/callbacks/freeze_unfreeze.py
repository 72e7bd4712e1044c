"""Transfer learning schedule: train the head on a frozen backbone, then fine-tune everything.

Add it to a config's trainer callbacks::

    trainer:
      callbacks:
        - class_path: facetorch.callbacks.freeze_unfreeze.FreezeUnfreeze
          init_args: {unfreeze_at_epoch: 5, lr_factor: 0.1}

The task's optimiser must be built over the parameters that require grad only (as
:meth:`facetorch.tasks.IdentityTask.trainable_parameters` does), so that the backbone can join it
later as a parameter group of its own.

To fine-tune a pretrained network by stage, freeze only its early stages, for the whole run::

        - class_path: facetorch.callbacks.FreezeUnfreeze
          init_args: {unfreeze_at_epoch: null, modules: [conv1, layer1, layer2]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer


class FreezeUnfreeze(BaseFinetuning):
    """Freeze ``pl_module.backbone`` (or some of its stages) until epoch ``unfreeze_at_epoch``, then train it too.

    The frozen part joins as a new parameter group at the head's current learning rate times
    ``lr_factor``.

    Args:
        unfreeze_at_epoch: First epoch (0-based) that trains the frozen part; 0 never freezes it,
            ``None`` keeps it frozen for the whole run.
        lr_factor: Learning rate of the backbone group relative to the first group's current rate.
        train_bn: Keep training the backbone's BatchNorm layers while it is frozen (Lightning's
            default; with ``False`` they are frozen too and normalise with batch statistics).
        backbone_attr: Attribute of the task that holds the backbone.
        modules: Names of the backbone's sub-modules to freeze (e.g. ``[conv1, layer1, layer2]``,
            the early stages of a pretrained network); ``None`` freezes the whole backbone.
    """

    def __init__(self, unfreeze_at_epoch: Optional[int] = 5, lr_factor: float = 0.1, train_bn: bool = True,
                 backbone_attr: str = "backbone", modules: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 0:
            raise ValueError(f"unfreeze_at_epoch must be >= 0 or null, got {unfreeze_at_epoch}")
        if lr_factor <= 0:
            raise ValueError(f"lr_factor must be > 0, got {lr_factor}")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.lr_factor = lr_factor
        self.train_bn = train_bn
        self.backbone_attr = backbone_attr
        self.modules = list(modules) if modules is not None else None

    def _backbone(self, pl_module: pl.LightningModule) -> nn.Module:
        backbone = getattr(pl_module, self.backbone_attr, None)
        if not isinstance(backbone, nn.Module):
            raise AttributeError(
                f"FreezeUnfreeze expects the task to hold its backbone module in .{self.backbone_attr}; "
                f"{type(pl_module).__name__}.{self.backbone_attr} is {type(backbone).__name__}"
            )
        if self.modules is None:
            return backbone
        named = dict(backbone.named_modules())
        unknown = [name for name in self.modules if name not in named]
        if unknown:
            children = [name for name, _ in backbone.named_children()]
            raise ValueError(f"FreezeUnfreeze modules {unknown} are not in the backbone {type(backbone).__name__} "
                             f"(its stages: {children})")
        return nn.ModuleList([named[name] for name in self.modules])

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        if self.unfreeze_at_epoch is None or self.unfreeze_at_epoch > 0:
            self.freeze(self._backbone(pl_module), train_bn=self.train_bn)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.unfreeze_at_epoch is None or self.unfreeze_at_epoch == 0 or epoch < self.unfreeze_at_epoch:
            return
        # Also after the milestone: a run resumed from a checkpoint has just frozen the backbone
        # again (in setup) while its optimiser already got the backbone group back (in on_fit_start).
        backbone = self._backbone(pl_module)
        self.make_trainable(backbone)
        # Compare by identity: BaseFinetuning.filter_on_optimizer compares values, which can
        # mistake two freshly initialised BatchNorm weights (all ones) for the same parameter.
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for p in backbone.parameters() if id(p) not in present]
        if not params:
            return
        lr = optimizer.param_groups[0]["lr"] * self.lr_factor
        optimizer.add_param_group({"params": params, "lr": lr, "initial_lr": lr})
        _schedule_new_groups(pl_module.trainer, optimizer)


def _schedule_new_groups(trainer: Any, optimizer: Optimizer) -> None:
    """Let epoch schedulers (cosine, warm-up) drive parameter groups added after they were built.

    Schedulers keep one base rate per group and zip it with the groups, so a new group would keep
    its rate unchanged; giving it a base rate makes cosine-style schedules decay it from there.
    ``ReduceLROnPlateau`` handles new groups itself.
    """
    groups = optimizer.param_groups
    for config in getattr(trainer, "lr_scheduler_configs", []):
        if config.scheduler.optimizer is not optimizer:
            continue
        for scheduler in [config.scheduler, *getattr(config.scheduler, "_schedulers", [])]:
            base_lrs = getattr(scheduler, "base_lrs", None)
            if isinstance(base_lrs, list) and len(base_lrs) < len(groups):
                base_lrs.extend(group["initial_lr"] for group in groups[len(base_lrs):])

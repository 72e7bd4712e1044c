"""Lightning callbacks for facetorch tasks.

Usable from a YAML config::

    trainer:
      callbacks:
        - class_path: facetorch.callbacks.GradCAMLogger
          init_args: {every_n_epochs: 1}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from facetorch.explain.render import COLUMN_TITLE, plot_explanation_grid, render_explanations

__all__ = ["GradCAMLogger"]


class GradCAMLogger(pl.Callback):
    """Save a Grad-CAM grid of a fixed set of validation images every few epochs while fitting.

    Writes ``gradcam/epoch_{epoch:03d}.png`` into the run folder: one row per image with the
    input and its Grad-CAM overlay (or Guided Grad-CAM map), captioned with the predicted class.
    Runs on global rank 0 only, never during the sanity check or under ``fast_dev_run``, at
    every ``every_n_epochs``-th epoch (counting from 1) and at the last epoch. The module's
    training flags and its parameters' ``.grad`` are left as they were.

    Args:
        every_n_epochs: Save after every this many epochs.
        num_images: Validation images in the grid (the first of the validation set).
        method: ``gradcam`` (heatmap over the image) or ``guided_gradcam``.
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        num_images: int = 8,
        method: Literal["gradcam", "guided_gradcam"] = "gradcam",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"GradCAMLogger.every_n_epochs must be at least 1, got {every_n_epochs}")
        if num_images < 1:
            raise ValueError(f"GradCAMLogger.num_images must be at least 1, got {num_images}")
        if method not in ("gradcam", "guided_gradcam"):
            raise ValueError(f"GradCAMLogger.method must be 'gradcam' or 'guided_gradcam', got {method!r}")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.method = method
        self._images: Tensor | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Fail at the start of fitting, not after the first N epochs.
        try:
            pl_module.cam_layer, pl_module.explain_target(None), pl_module.artifact_path
        except (AttributeError, NotImplementedError) as error:
            raise TypeError(
                f"GradCAMLogger needs a facetorch task that names its Grad-CAM layer and targets "
                f"(cam_layer, explain_target, artifact_path); {type(pl_module).__name__}: {error}"
            ) from error

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        path = pl_module.artifact_path(f"gradcam/epoch_{trainer.current_epoch:03d}.png")
        if path is None:  # fast_dev_run, or not rank 0
            return
        images = self._fixed_images(trainer).to(pl_module.device)
        self._images = images  # moved once, then reused on the module's device
        data = trainer.datamodule
        target = pl_module.explain_target(None)
        rendered = render_explanations(
            pl_module, images, [self.method], target,
            getattr(data, "mean", None), getattr(data, "std", None),
        )  # fmt: skip
        rows = [[image, panel] for image, panel in zip(rendered.images, rendered.panels[self.method])]
        explained = getattr(target, "description", "predicted class")
        title = f"epoch {trainer.current_epoch}: {COLUMN_TITLE[self.method]} of {pl_module.cam_layer}, {explained}"
        plot_explanation_grid(rows, rendered.captions, ["input", COLUMN_TITLE[self.method]], title, path)

    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != TrainerFn.FITTING:
            return False
        epoch = trainer.current_epoch
        max_epochs = trainer.max_epochs
        last = max_epochs is not None and max_epochs > 0 and epoch + 1 >= max_epochs
        return last or (epoch + 1) % self.every_n_epochs == 0

    def _fixed_images(self, trainer: pl.Trainer) -> Tensor:
        """The first ``num_images`` validation images, taken once so every grid shows the same ones."""
        if self._images is None:
            # Built outside inference mode: a stored inference tensor could not join autograd later.
            with torch.inference_mode(False):
                self._images = self._first_images(trainer)
        return self._images

    def _first_images(self, trainer: pl.Trainer) -> Tensor:
        datasets = getattr(trainer.datamodule, "datasets", None)
        if isinstance(datasets, Mapping) and "val" in datasets and len(datasets["val"]) > 0:
            dataset = datasets["val"]
            return torch.stack([_image_of(dataset[i]) for i in range(min(self.num_images, len(dataset)))])
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            raise RuntimeError("GradCAMLogger found no validation data (no datamodule.datasets['val'], no val dataloader)")
        images: list[Tensor] = []
        for batch in loader:
            images.extend(_image_of(batch).unbind(0))
            if len(images) >= self.num_images:
                break
        return torch.stack(images[: self.num_images]).clone()


def _image_of(item: Any) -> Tensor:
    """The image tensor of a dataset item or batch: ``(image, label, ...)`` or the image alone."""
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, Tensor):
        raise TypeError(f"GradCAMLogger expected validation items (image, label) with a tensor image, got {type(image).__name__}")
    return image

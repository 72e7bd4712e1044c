"""FaceTask: what every facetorch LightningModule shares (optimiser, schedule, memory format, run outputs)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torch.utils.data import DistributedSampler

from facetorch import io, ranges
from facetorch.ranges import check_values

OptimizerName = Literal["sgd", "adam", "adamw", "adamax"]
SchedulerName = Literal["none", "cosine", "plateau"]

# The detector's backbone width factor and the side of its pooling grid: beyond these no network fits in memory.
WIDTH_FACTOR = ranges.Kind("a width factor of the backbone", low=0, high=8, low_open=True)
POOL_GRID = ranges.Kind("cells on a side of the pooling grid", low=1, high=16, integer=True)
# What each number of a task's model section means (facetorch.ranges): each task's __init__ checks its
# arguments against it first (check_values(..., locals(), ...): a name a task does not take is not there).
MODEL_VALUES = {
    "lr": ranges.POSITIVE, "weight_decay": ranges.NONNEGATIVE, "momentum": ranges.FRACTION_BELOW_ONE,
    "warmup_epochs": ranges.NONNEGATIVE_INT, "plateau_factor": ranges.OPEN_FRACTION,
    "plateau_patience": ranges.NONNEGATIVE_INT, "num_classes": ranges.POSITIVE_INT, "hidden": ranges.LAYER_WIDTH,
    "dropout": ranges.FRACTION_BELOW_ONE, "label_smoothing": ranges.FRACTION_BELOW_ONE,
    "sample_images": ranges.NONNEGATIVE_INT, "embedding_dim": ranges.LAYER_WIDTH, "margin": ranges.NONNEGATIVE,
    "contrastive_margin": ranges.POSITIVE, "classification_weight": ranges.NONNEGATIVE,
    "classifier_scale": ranges.POSITIVE, "classify_epochs": ranges.NONNEGATIVE_INT, "head_margin": ranges.NONNEGATIVE,
    "head_scale": ranges.POSITIVE, "sample_rate": ranges.POSITIVE_FRACTION, "width": WIDTH_FACTOR,
    "pool_grid": POOL_GRID, "box_weight": ranges.NONNEGATIVE, "cls_weight": ranges.NONNEGATIVE,
    "score_threshold": ranges.OPEN_FRACTION, "l2_sp_weight": ranges.NONNEGATIVE, "distill_weight": ranges.NONNEGATIVE,
    "iou_weight": ranges.NONNEGATIVE,
}  # fmt: skip


def dataset_order(gathered: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Per-sample outputs gathered from W ranks, (W, n, ...), back in dataset order, (num_samples, ...).

    An unshuffled ``DistributedSampler`` (Lightning's for evaluation) pads the index list to
    W * n and gives rank r the indices r, r + W, r + 2W, ...; interleaving the ranks restores the
    order, and the padding falls off the end.
    """
    return gathered.transpose(0, 1).flatten(0, 1)[:num_samples]


class FaceTask(pl.LightningModule):
    """Base of every facetorch task.

    Subclasses build ``self.model`` in their ``__init__``, set ``monitor`` / ``monitor_mode``
    (what the checkpoint and the plateau schedule follow), and fill ``self.test_report`` (a flat
    dict of final numbers) at the end of testing; this class writes it to ``metrics.json``.

    The optimisation arguments below are every task's: subclasses take them as ``**optimization``
    and pass them on, so a config sets them as flat keys (``model.init_args.lr``) for any task, and
    each config in ``configs/`` states its own recipe.

    Args:
        optimizer: ``sgd`` (with momentum), ``adam``, ``adamw`` or ``adamax``.
        lr: Learning rate.
        weight_decay: Weight decay (decoupled for adamw).
        momentum: SGD momentum.
        scheduler: ``none``, ``cosine`` (over ``max_epochs``, after ``warmup_epochs``) or
            ``plateau`` (multiply by ``plateau_factor`` when the monitored metric stalls).
        warmup_epochs: Linear warm-up epochs for the cosine schedule.
        plateau_factor: Factor of the plateau schedule.
        plateau_patience: Epochs without improvement before the plateau schedule steps.
        channels_last: Keep weights and inputs in channels-last memory format (faster convs with
            bf16 on CPUs with AMX and on tensor-core GPUs).
        compile: Run the model through ``torch.compile`` for training and for inference without
            gradients (validation, test, predict, the gallery). Explanations, which ask a model in
            eval mode for gradients through hooks on its layers, keep the eager model. Off by
            default: compiling costs tens of seconds per input shape, and pays only on long runs
            (see the README's benchmark section).
    """

    monitor: str = "val_loss"
    monitor_mode: Literal["min", "max"] = "min"

    def __init__(
        self,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: int = 0,
        plateau_factor: float = 0.5,
        plateau_patience: int = 2,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        check_values("model", locals(), MODEL_VALUES)
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.scheduler_name = scheduler
        self.warmup_epochs = warmup_epochs
        self.plateau_factor = plateau_factor
        self.plateau_patience = plateau_patience
        self.channels_last = channels_last
        self.compile_model = compile  # not self.compile: that is nn.Module.compile()
        self.test_report: dict[str, Any] = {}
        # evaluate.py --output FILE: the report goes to FILE and the plots beside it, as <FILE's stem>_<plot>.
        self.report_file: Optional[Path] = None
        self.artifacts: list[Path] = []  # the plot and table paths handed out (artifact_path), in order
        # Not a submodule (kept out of state_dict and of .to()): it shares self.model's parameters.
        self.__dict__["_compiled_model"] = None

    # ------------------------------------------------------------------ memory format
    def on_fit_start(self) -> None:
        self._apply_memory_format()

    def on_validation_start(self) -> None:
        self._apply_memory_format()

    def on_test_start(self) -> None:
        self._apply_memory_format()

    def on_predict_start(self) -> None:
        self._apply_memory_format()

    def _apply_memory_format(self) -> None:
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def run_model(self, images: torch.Tensor) -> Any:
        """``self.model`` on (B, C, H, W) images in the task's memory format, compiled where asked.

        With ``compile``, training and gradient-free inference go through ``torch.compile(self.model)``;
        a model in eval mode asked for gradients (Grad-CAM and the other explainers) stays eager.
        """
        images = self.to_memory_format(images)
        if self.compile_model and (self.training or not torch.is_grad_enabled()):
            if self._compiled_model is None:
                self.__dict__["_compiled_model"] = torch.compile(self.model)
            return self._compiled_model(images)
        return self.model(images)

    def to_memory_format(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in the task's memory format (a no-op unless ``channels_last``)."""
        if self.channels_last and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # ------------------------------------------------------------------ optimisation
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (all of them; override to exclude some)."""
        return list(self.parameters())

    def build_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The configured optimiser over ``params`` (parameters or parameter groups)."""
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer_name == "adamax":
            return torch.optim.Adamax(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"model.optimizer must be one of sgd, adam, adamw, adamax; got {self.optimizer_name!r}")

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer(self.trainable_parameters())
        if self.scheduler_name == "none":
            return optimizer
        if self.scheduler_name == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=self.monitor_mode, factor=self.plateau_factor, patience=self.plateau_patience
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}
        if self.scheduler_name == "cosine":
            epochs = max(1, int(self.trainer.max_epochs or 1) if self.trainer.max_epochs not in (None, -1) else 1)
            warmup = min(self.warmup_epochs, epochs - 1)
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup))
            if warmup <= 0:
                return {"optimizer": optimizer, "lr_scheduler": cosine}
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
            chained = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
            return {"optimizer": optimizer, "lr_scheduler": chained}
        raise ValueError(f"model.scheduler must be one of none, cosine, plateau; got {self.scheduler_name!r}")

    # ------------------------------------------------------------------ evaluation under DDP
    def evaluation_is_distributed(self, split: str) -> bool:
        """Whether each rank saw only its share of ``split`` (``val`` or ``test``).

        True under DDP with Lightning's distributed sampler; false with
        ``use_distributed_sampler: false``, where every rank evaluates the whole split.
        """
        if self.trainer.world_size <= 1:
            return False
        loaders = self.trainer.val_dataloaders if split == "val" else self.trainer.test_dataloaders
        return isinstance(getattr(loaders, "sampler", None), DistributedSampler)

    # ------------------------------------------------------------------ explanations
    @property
    def cam_layer(self) -> str:
        """Name (in ``self.named_modules()``) of the layer Grad-CAM explains for this task."""
        raise NotImplementedError(f"{type(self).__name__} does not name a Grad-CAM layer")

    def explain_target(self, spec: Optional[str] = None) -> Any:
        """A Grad-CAM target (model output -> one score per sample) from a user's ``--target`` string."""
        raise NotImplementedError(f"{type(self).__name__} does not define explanation targets")

    # ------------------------------------------------------------------ run outputs
    @property
    def run_dir(self) -> Optional[Path]:
        """Where plots and metrics of this run go (the logger's version folder), or ``None``.

        ``None`` under ``fast_dev_run`` (which writes nothing, as in Lightning) or without a trainer.
        """
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return None
        if self.report_file is not None:
            return Path(self.report_file).parent
        # Trainer.log_dir, without its broadcast: that is a collective under DDP, and only rank 0
        # writes here, so ranks that skip a plot would call it a different number of times.
        if trainer.loggers:
            logger = trainer.loggers[0]
            log_dir = logger.log_dir if isinstance(logger, (CSVLogger, TensorBoardLogger)) else logger.save_dir
        else:
            log_dir = None
        return Path(log_dir) if log_dir else Path(trainer.default_root_dir)

    def write_report(self, report: dict[str, Any], filename: str = "metrics.json") -> None:
        """Keep ``report`` as ``self.test_report`` and write it to the run folder (rank 0 only).

        A number the split cannot measure (NaN) is written as ``null``, with a warning that names it.
        """
        undefined = sorted(key for key, value in report.items() if isinstance(value, float) and not math.isfinite(value))
        if undefined:
            rank_zero_warn(f"{filename}: {', '.join(undefined)} cannot be measured on this split (NaN); written as null")
            report = {key: (None if key in undefined else value) for key, value in report.items()}
        self.test_report = report
        run_dir = self.run_dir
        if run_dir is not None and self.trainer.is_global_zero:
            io.write_json(self.report_file if self.report_file is not None else run_dir / filename, report)

    def artifact_path(self, name: str) -> Optional[Path]:
        """Path for a plot or table in the run folder, or ``None`` when nothing should be written."""
        run_dir = self.run_dir
        if run_dir is None or not self.trainer.is_global_zero:
            return None
        os.makedirs(run_dir, exist_ok=True)
        path = run_dir / (f"{Path(self.report_file).stem}_{name}" if self.report_file is not None else name)
        self.artifacts.append(path)
        return path

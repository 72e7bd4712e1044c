"""Checkpoints: atomic writes, and the default ``best.ckpt`` / ``last.ckpt`` callback of a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from facetorch import io


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves local checkpoints to a temporary file and renames it, so a crash never leaves a torn file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote file systems: keep Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local paths, got {storage_options!r}")
        with io.atomic_open(Path(path), "wb") as handle:
            torch.save(checkpoint, handle)


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` really is the last epoch.

    Lightning 2.6 writes ``last.ckpt`` only in a step that also saved a top-k checkpoint, so with
    ``save_top_k=1`` it stays at the best epoch, and resuming from it would silently repeat epochs.
    This callback also writes it after every other validation (and training epoch without one).
    """

    _last_written_step: int = -1

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _ensure_last(self, trainer: pl.Trainer) -> None:
        from pytorch_lightning.trainer.states import TrainerFn

        if (
            not self.save_last
            or trainer.fast_dev_run
            or trainer.sanity_checking
            or trainer.state.fn != TrainerFn.FITTING
            or self._last_written_step == trainer.global_step
        ):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)


def best_checkpoint(monitor: str, mode: str) -> ModelCheckpoint:
    """Keep ``checkpoints/best.ckpt`` (best ``monitor``) and ``checkpoints/last.ckpt`` (the last epoch)."""
    return BestAndLastCheckpoint(monitor=monitor, mode=mode, filename="best", save_last=True, auto_insert_metric_name=False)

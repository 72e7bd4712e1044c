"""Checkpoints: atomic writes, and the default ``best.ckpt`` / ``last.ckpt`` callback of a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

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


def best_checkpoint(monitor: str, mode: str) -> ModelCheckpoint:
    """Keep ``checkpoints/best.ckpt`` (best ``monitor``) and ``checkpoints/last.ckpt``."""
    return ModelCheckpoint(monitor=monitor, mode=mode, filename="best", save_last=True, auto_insert_metric_name=False)

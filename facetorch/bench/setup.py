"""What a task's benchmark measures: the task, the plain model inside it, its fixed batches and data.

Its own small module, so that every measurement (training, inference, ...) can take a setup without
importing the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from facetorch.data import FaceDataModule


@dataclass
class BenchmarkSetup:
    """What one task's benchmark trains: a task, the plain model inside it, and fixed batches."""

    name: str
    make_task: Callable[..., pl.LightningModule]  # (channels_last, compile=False) -> task
    plain_model: Callable[[pl.LightningModule], nn.Module]
    plain_loss: Callable[[nn.Module, Any], torch.Tensor]
    batches: list[Any]
    data: FaceDataModule
    batch1_inference: bool = False  # also time single-image inference (the detector's video path)
    # The config's fine-tuning callbacks (FreezeUnfreeze): the Trainer runs them, the plain loop freezes the same
    make_callbacks: Callable[[], list[pl.Callback]] = list
    embedding_inference: bool = False  # also time embedding faces (fp32, bf16 + channels-last, dlib when it applies)

"""Lightning callbacks, one per file, usable from a config's ``trainer.callbacks``.

Example::

  trainer:
    callbacks:
      - class_path: facetorch.callbacks.GradCAMLogger
        init_args: {every_n_epochs: 5}
      - class_path: facetorch.callbacks.FreezeUnfreeze
        init_args: {unfreeze_at_epoch: 5, lr_factor: 0.1}
      - class_path: facetorch.callbacks.FreezeStages
        init_args: {up_to: inception_4e}
      - class_path: facetorch.callbacks.KeepStartCheckpoint   # fine-tuning: best.ckpt starts as the start
        init_args: {monitor: val_pair_acc, noise: val_pair_acc_std}
"""

from facetorch.callbacks.checkpoint import AtomicCheckpointIO, BestAndLastCheckpoint, best_checkpoint
from facetorch.callbacks.freeze_stages import FreezeStages
from facetorch.callbacks.freeze_unfreeze import FreezeUnfreeze
from facetorch.callbacks.gradcam_logger import GradCAMLogger
from facetorch.callbacks.keep_start import KeepStartCheckpoint
from facetorch.callbacks.progress import StderrProgressBar
from facetorch.callbacks.throughput import TrainThroughput

__all__ = [
    "AtomicCheckpointIO", "BestAndLastCheckpoint", "FreezeStages", "FreezeUnfreeze", "GradCAMLogger", "KeepStartCheckpoint",
    "StderrProgressBar", "TrainThroughput", "best_checkpoint",
]

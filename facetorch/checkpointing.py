"""Deprecated location of the checkpoint callback and writer; use ``facetorch.callbacks``.

Kept so that configs naming ``facetorch.checkpointing.BestAndLastCheckpoint`` or
``facetorch.checkpointing.AtomicCheckpointIO`` still run.
"""

import warnings

from facetorch.callbacks.checkpoint import AtomicCheckpointIO, BestAndLastCheckpoint, best_checkpoint

__all__ = ["AtomicCheckpointIO", "BestAndLastCheckpoint", "best_checkpoint"]

warnings.warn(
    "facetorch.checkpointing is deprecated: use facetorch.callbacks (BestAndLastCheckpoint, AtomicCheckpointIO)",
    DeprecationWarning,
    stacklevel=2,
)

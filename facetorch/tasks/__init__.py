"""LightningModules, one per task, sharing :class:`FaceTask`."""

from facetorch.tasks.base import FaceTask
from facetorch.tasks.classification import ClassificationTask, FaceClassifierTask

__all__ = ["ClassificationTask", "FaceClassifierTask", "FaceTask"]

"""LightningModules, one per task, sharing :class:`FaceTask`."""

from facetorch.tasks.base import FaceTask
from facetorch.tasks.classification import ClassificationTask, FaceClassifierTask
from facetorch.tasks.detector import FaceDetectorTask
from facetorch.tasks.embedding import EmbeddingTask
from facetorch.tasks.identity import IdentityTask

__all__ = ["ClassificationTask", "EmbeddingTask", "FaceClassifierTask", "FaceDetectorTask", "FaceTask", "IdentityTask"]

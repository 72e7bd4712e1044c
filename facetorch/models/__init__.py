"""Plain nn.Modules (no Lightning import)."""

from facetorch.models.backbones import BACKBONES, PretrainedWeightsError, build_backbone
from facetorch.models.heads import BackboneClassifier, IdentityHead
from facetorch.models.vgg import FaceVGG

__all__ = ["BACKBONES", "BackboneClassifier", "FaceVGG", "IdentityHead", "PretrainedWeightsError", "build_backbone"]

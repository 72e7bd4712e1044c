"""Plain nn.Modules (no Lightning import)."""

from facetorch.models.vgg import FaceVGG

__all__ = ["FaceVGG"]

"""Face embedding network: a backbone, global pooling and an L2-normalised dense embedding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from facetorch.models import dlib_resnet
from facetorch.models.heads import BackboneClassifier

# Backbones that come with their own pretrained embedding layer: name -> (pretrained, weights_path) -> layer.
PRETRAINED_EMBEDDINGS: dict[str, Callable[[bool, Optional[str]], nn.Linear]] = {
    "dlib_resnet": dlib_resnet.embedding_layer,
}


def backbone_embedding_layer(backbone: str, pretrained: bool = False, weights_path: Optional[str] = None) -> nn.Linear:
    """The embedding layer that backbone ``backbone`` was trained with (dlib's 256 -> 128 for ``dlib_resnet``).

    Raises:
        ValueError: the backbone has no embedding layer of its own.
    """
    if backbone not in PRETRAINED_EMBEDDINGS:
        raise ValueError(
            f"model.embedding_layer=backbone needs a backbone with its own embedding layer ({sorted(PRETRAINED_EMBEDDINGS)}); "
            f"{backbone!r} has none: set model.embedding_layer=new"
        )
    return PRETRAINED_EMBEDDINGS[backbone](pretrained, weights_path)


class EmbeddingHead(nn.Module):
    """``normalize(dense(dropout(pool(features))))``: feature map (B, F, h, w) -> (B, D) unit vectors.

    Args:
        num_features: F, the backbone's output channels.
        embedding_dim: Length D of the embedding (128 as in FaceNet).
        dropout: Dropout before the embedding layer.
        layer: The embedding layer to use (e.g. a backbone's own, :func:`backbone_embedding_layer`);
            ``None``: a new dense layer F -> D.
    """

    def __init__(self, num_features: int, embedding_dim: int = 128, dropout: float = 0.0,
                 layer: Optional[nn.Linear] = None) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"model.embedding_dim must be at least 1, got {embedding_dim}")
        if layer is not None and (layer.in_features, layer.out_features) != (num_features, embedding_dim):
            raise ValueError(
                f"The backbone's embedding layer maps {layer.in_features} -> {layer.out_features}; "
                f"model.embedding_dim must be {layer.out_features}, got {embedding_dim}"
            )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.embedding = layer if layer is not None else nn.Linear(num_features, embedding_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Float32 embeddings, also under autocast."""
        pooled = self.dropout(self.pool(features).flatten(1))
        return F.normalize(self.embedding(pooled).float(), dim=1)


class EmbeddingNet(BackboneClassifier):
    """A backbone with an :class:`EmbeddingHead`: one unit-length vector per face.

    The shared timm-style split into ``forward_features`` (the backbone's feature map) and
    ``forward_head`` lets the two-stage schedule train the head alone. A backbone that comes with
    its own pretrained embedding layer (``backbone.pretrained_embedding``: ``weight`` (D, F) and
    ``bias``, e.g. OpenFace's dense layer) starts the head's embedding layer from it.

    Args:
        backbone: Images (B, C, H, W) -> feature map (B, F, h, w); names its Grad-CAM layer in
            ``backbone.cam_layer`` when it has one.
        num_features: F, the backbone's output channels.
        embedding_dim: Length D of the embedding.
        dropout: Dropout before the embedding layer.
        layer: The embedding layer (``None``: a new dense layer).
    """

    def __init__(self, backbone: nn.Module, num_features: int, embedding_dim: int = 128, dropout: float = 0.0,
                 layer: Optional[nn.Linear] = None) -> None:
        super().__init__(backbone, EmbeddingHead(num_features, embedding_dim, dropout, layer))
        self.embedding_dim = embedding_dim
        pretrained = getattr(backbone, "pretrained_embedding", None)
        if pretrained is not None:
            self._load_pretrained_embedding(pretrained)
            backbone.pretrained_embedding = None  # taken: the head holds it now

    def _load_pretrained_embedding(self, state: dict[str, torch.Tensor]) -> None:
        """Start the embedding layer from a backbone's own pretrained one (``weight`` (D, F), ``bias`` (D,))."""
        layer = self.head.embedding
        weight = state["weight"]
        if tuple(weight.shape) != tuple(layer.weight.shape):
            raise ValueError(
                f"The pretrained embedding layer of backbone {type(self.backbone).__name__} maps {weight.shape[1]} "
                f"features to {weight.shape[0]}; this head maps {layer.in_features} to {layer.out_features}: set "
                f"model.embedding_dim={weight.shape[0]}, or start without the pretrained weights"
            )
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(state.get("bias", torch.zeros_like(layer.bias)))


class CosineClassifier(nn.Module):
    """Logits ``scale * cos(embedding, class weight)``.

    The optional classification loss beside the metric loss, on the same unit sphere (a NormFace /
    CosFace-style head without the margin).

    Args:
        embedding_dim: D.
        num_classes: Training identities.
        scale: Logit scale (cosines alone, in [-1, 1], are too flat for a softmax).
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)
        self.scale = scale

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) unit embeddings -> (B, num_classes) logits."""
        return self.scale * F.linear(embeddings, F.normalize(self.weight, dim=1))

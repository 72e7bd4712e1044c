"""Classifier heads, and the module that puts a head on a backbone."""

from __future__ import annotations

import torch
from torch import nn


class IdentityHead(nn.Sequential):
    """The original project's head: global average pool, dense + ELU, BatchNorm, dropout, classes.

    Args:
        in_features: Channels of the backbone's feature map.
        num_classes: Output classes.
        hidden: Width of the dense layer (512 in the original).
        dropout: Dropout before the last layer (0.5 in the original).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ELU(),
            nn.BatchNorm1d(hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )


class BackboneClassifier(nn.Module):
    """``head(backbone(images))``, split timm-style into ``forward_features`` and ``forward_head``.

    Args:
        backbone: Images (B, C, H, W) -> feature map (B, C', h, w); names its Grad-CAM layer in
            ``backbone.cam_layer`` when it has one.
        head: Feature map -> logits (B, num_classes).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def cam_layer(self) -> str:
        """Grad-CAM layer relative to this module, e.g. ``backbone.layer4``."""
        return f"backbone.{getattr(self.backbone, 'cam_layer', '')}".rstrip(".")

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, C', h, w) features."""
        return self.backbone(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C', h, w) features -> (B, num_classes) logits."""
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

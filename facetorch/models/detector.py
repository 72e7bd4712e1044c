"""The single-face detector as a plain ``nn.Module``: VGG16 features, global max pool, two heads.

As in the original project: VGG16's convolutional features, a global max pool, a class head
(dense 2048, ReLU, 1 logit: "is there a face") and a box head (dense 2048, ReLU, 4 sigmoid
outputs: ``x1, y1, x2, y2`` normalised to [0, 1] of the input). ``forward`` returns the tuple
``(logit (B, 1), boxes (B, 4))`` that :class:`facetorch.explain.gradcam.DetectorTarget` expects.

Backbones: ``vgg16`` and ``vgg16_bn`` (torchvision's layer layout, so ImageNet weights load
into them; ``width`` < 1 narrows every conv for training from scratch on a CPU) and ``tiny``
(two conv blocks, for tests). Pretrained weights come as in :mod:`facetorch.models.backbones`:
torch hub's cache (torchvision downloads them there when missing) or an explicit ``weights_path``.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn
from torchvision.models.vgg import cfgs as VGG_CFGS
from torchvision.models.vgg import make_layers

from facetorch.models.backbones import check_channels, load_backbone_weights, pretrained_state
from facetorch.models.vgg import last_relu_name

__all__ = ["DETECTOR_BACKBONES", "FaceDetector", "VGGFeatures", "build_detector_features"]

DetectorBackbone = Literal["vgg16", "vgg16_bn", "tiny"]
DETECTOR_BACKBONES: tuple[str, ...] = ("vgg16", "vgg16_bn", "tiny")
TINY_CFG: list[int | str] = [8, "M", 16, "M"]


class VGGFeatures(nn.Module):
    """A VGG feature stack in torchvision's layout (``features.N``), with non-in-place ReLUs.

    ReLUs are made non-in-place (torchvision's are in-place) so that Grad-CAM's hook on the last
    ReLU sees a tensor nothing overwrites; the state dict is unchanged by this.

    Attributes:
        width: Channels of the output.
        cam_layer: Name of the last ReLU (the last conv's activation), for Grad-CAM.
    """

    def __init__(self, cfg: list[int | str], in_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.features = _with_in_channels(make_layers(cfg, batch_norm=batch_norm), in_channels)
        for index in [i for i, module in enumerate(self.features) if isinstance(module, nn.ReLU)]:
            self.features[index] = nn.ReLU(inplace=False)
        self.cam_layer = f"features.{last_relu_name(self.features)}"
        self.width = int([c for c in cfg if c != "M"][-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def _with_in_channels(features: nn.Sequential, in_channels: int) -> nn.Sequential:
    first = features[0]
    if in_channels != first.in_channels:
        features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1, bias=first.bias is not None)
    return features


def _scaled_cfg(name: str, width: float) -> list[int | str]:
    if name == "tiny":
        return list(TINY_CFG)
    return [c if c == "M" else max(4, int(round(int(c) * width))) for c in VGG_CFGS["D"]]


def build_detector_features(
    name: str,
    in_channels: int = 3,
    width: float = 1.0,
    pretrained: bool = False,
    weights_path: Optional[str] = None,
) -> VGGFeatures:
    """VGG16 (or ``tiny``) features for the detector.

    Args:
        name: ``vgg16``, ``vgg16_bn`` or ``tiny``.
        in_channels: 1 or 3 (ImageNet first-conv weights are summed over colours for grey input).
        width: Factor on every conv width (1.0 is VGG16); pretrained weights need 1.0.
        pretrained: Start from ImageNet weights in torch hub's cache (torchvision downloads them when missing).
        weights_path: Start from this state dict (torchvision VGG keys ``features.N.*``).

    Raises:
        ValueError: unknown name, bad width or channels, or weights that do not fit.
        PretrainedWeightsError: pretrained weights were asked for and could be neither read nor downloaded.
    """
    if name not in DETECTOR_BACKBONES:
        raise ValueError(f"model.backbone must be one of {DETECTOR_BACKBONES}, got {name!r}")
    check_channels(in_channels, name)
    if not 0.0 < width <= 1.0:
        raise ValueError(f"model.width must be in (0, 1], got {width}")
    features = VGGFeatures(_scaled_cfg(name, width), in_channels, batch_norm=name != "vgg16")
    if pretrained or weights_path is not None:
        if width != 1.0:
            raise ValueError(f"Pretrained weights fit VGG16 at width 1.0 only, got model.width={width}")
        state, source = pretrained_state(name, weights_path)
        load_backbone_weights(features, {k: v for k, v in state.items() if k.startswith("features.")}, source)
    return features


def _head(in_features: int, hidden: int, outputs: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


class FaceDetector(nn.Module):
    """VGG features, max pool to a ``pool_grid`` x ``pool_grid`` grid, a class head and a box head.

    ``pool_grid=1`` is the original global max pool. A global pool keeps no position of its
    own (only what the receptive fields near the padded border encode); a 2x2 or 3x3 grid keeps
    a coarse layout, which helps the box head when training from scratch.

    Args:
        backbone: ``vgg16``, ``vgg16_bn`` or ``tiny``.
        in_channels: 1 or 3.
        width: Conv width factor of the VGG16 backbones.
        hidden: Width of each head's dense layer (2048 in the original).
        dropout: Dropout after each head's dense layer.
        pool_grid: Side of the max-pool grid.
        pretrained: Start the backbone from ImageNet weights in torch hub's cache (downloaded when missing).
        weights_path: Start the backbone from this state dict.
    """

    def __init__(
        self,
        backbone: DetectorBackbone = "vgg16",
        in_channels: int = 3,
        width: float = 1.0,
        hidden: int = 2048,
        dropout: float = 0.0,
        pool_grid: int = 1,
        pretrained: bool = False,
        weights_path: Optional[str] = None,
    ) -> None:
        super().__init__()
        if pool_grid < 1:
            raise ValueError(f"model.pool_grid must be at least 1, got {pool_grid}")
        self.backbone = build_detector_features(backbone, in_channels, width, pretrained, weights_path)
        self.pool = nn.AdaptiveMaxPool2d(pool_grid)
        pooled = self.backbone.width * pool_grid * pool_grid
        self.class_head = _head(pooled, hidden, 1, dropout)
        self.box_head = _head(pooled, hidden, 4, dropout)

    @property
    def cam_layer(self) -> str:
        """Grad-CAM layer name relative to this module (the last conv's ReLU)."""
        return f"backbone.{self.backbone.cam_layer}"

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (face logit (B, 1), boxes (B, 4) in [0, 1] as x1, y1, x2, y2)."""
        pooled = torch.flatten(self.pool(self.backbone(images)), 1)
        return self.class_head(pooled), torch.sigmoid(self.box_head(pooled))

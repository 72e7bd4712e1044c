"""FaceVGG: the small VGG-style face / non-face network of the original project."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

LayerSpec = Union[int, str]
ORIGINAL_CFG: tuple[LayerSpec, ...] = (64, "M", 128, "M", 256, "M", 256, "M")


def make_vgg_features(cfg: Sequence[LayerSpec], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """A VGG feature stack: an int is a 3x3 conv (+BN) + ReLU with that many channels, ``"M"`` a 2x2 max-pool.

    ReLUs are not in-place, so a forward hook on a conv or ReLU sees a tensor that no later
    layer overwrites (Grad-CAM relies on that).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for spec in cfg:
        if spec == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        if not isinstance(spec, int) or spec <= 0:
            raise ValueError(f"FaceVGG cfg entries must be positive ints or 'M', got {spec!r} in {list(cfg)}")
        layers.append(nn.Conv2d(channels, spec, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(spec))
        layers.append(nn.ReLU())
        channels = spec
    return nn.Sequential(*layers)


def last_relu_name(features: nn.Sequential) -> str:
    """Name (``"N"``) of the last ReLU in a VGG stack: the activation Grad-CAM explains."""
    return str(max(i for i, layer in enumerate(features) if isinstance(layer, nn.ReLU)))


class ImageStandardization(nn.Module):
    """Each image to zero mean and unit standard deviation over its own pixels, channel by channel.

    The classical face detectors' variance normalisation: a dark or washed-out crop reaches the
    first conv looking like a well-lit one. ``eps`` (in the input's units) keeps a flat crop from
    turning its noise into contrast.
    """

    def __init__(self, eps: float = 0.01) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W), each (image, channel) plane standardised."""
        mean = x.mean(dim=(2, 3), keepdim=True)
        centred = x - mean
        std = centred.square().mean(dim=(2, 3), keepdim=True).sqrt()
        return centred / (std + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class FaceVGG(nn.Module):
    """VGG-style classifier: conv blocks, adaptive pooling to a fixed grid, dense, dropout, classes.

    With the original config (64, M, 128, M, 256, M, 256, M) and a 120x80 input the feature map
    is 7x5, so ``pool_size=(7, 5)`` reproduces the original flatten exactly; other input sizes
    are pooled to the same grid.

    Args:
        num_classes: Output classes.
        in_channels: 1 (greyscale) or 3.
        cfg: Conv widths and ``"M"`` pools.
        hidden: Width of the dense layer.
        dropout: Dropout before the last layer.
        batch_norm: BatchNorm after every conv (the original had none).
        pool_size: Grid the features are pooled to before the dense layers.
        input_norm: Standardise each image by its own mean and standard deviation first
            (:class:`ImageStandardization`); off in the original.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 1,
        cfg: Sequence[LayerSpec] = ORIGINAL_CFG,
        hidden: int = 64,
        dropout: float = 0.5,
        batch_norm: bool = True,
        pool_size: tuple[int, int] = (7, 5),
        input_norm: bool = False,
    ) -> None:
        super().__init__()
        self.input_norm = ImageStandardization() if input_norm else nn.Identity()
        self.features = make_vgg_features(cfg, in_channels, batch_norm)
        widths = [c for c in cfg if c != "M"]
        if not widths:
            raise ValueError(f"FaceVGG cfg needs at least one conv layer, got {list(cfg)}")
        self.num_features = int(widths[-1])
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.num_features * pool_size[0] * pool_size[1], hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        # Grad-CAM layer: the last ReLU of the features, i.e. the last conv block's activation.
        self.cam_layer = f"features.{last_relu_name(self.features)}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, F, h, w) feature map."""
        return self.features(self.input_norm(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F, h, w) feature map -> (B, num_classes) logits."""
        return self.head(self.pool(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

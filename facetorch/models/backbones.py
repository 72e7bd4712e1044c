"""Backbones by name: each builder returns a feature extractor (images -> (B, C, h, w)) and C.

``BACKBONES`` maps a name to a builder ``(in_channels, pretrained, weights_path) -> (module, width)``.
Every feature extractor names the layer Grad-CAM explains in its ``cam_layer`` attribute. Any timm
model is a backbone too, named ``timm:<model name>`` (:mod:`facetorch.models.timm_backbone`).

ImageNet weights for the torchvision backbones come from torch hub's cache
(``torch.hub.get_dir()/checkpoints/<file>``); when the file is not there, torchvision downloads it
(its weights enum, ``get_state_dict``). A source that cannot be reached is reported at once, with
the file to provide, instead of a hanging download. An explicit ``weights_path`` is read instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
import torchvision
from torch import nn

from facetorch.models.dlib_resnet import build_dlib_resnet
from facetorch.models.downloads import unreachable
from facetorch.models.vgg import LayerSpec, last_relu_name, make_vgg_features
from facetorch.models.weights import (  # noqa: F401 (their old home: callers import them from here too)
    TIMM_PREFIX,
    PretrainedWeightsError,
    check_channels,
    load_backbone_weights,
    read_state_dict,
)

# The face_vgg backbone: the face / non-face network's convolutions, one block wider (stride 16).
FACE_VGG_CFG: tuple[LayerSpec, ...] = (32, "M", 64, "M", 128, "M", 256, "M")

BackboneBuilder = Callable[[int, bool, Optional[str]], tuple[nn.Module, int]]


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its pooling and classifier: images -> (B, C, H/32, W/32).

    The children keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so a
    torchvision state dict loads into it once its ``fc.*`` entries are dropped.
    """

    cam_layer = "layer4"

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TinyFeatures(nn.Module):
    """Two small conv blocks (8 and 16 channels) for fast CPU tests: images -> (B, 16, H/4, W/4)."""

    cam_layer = "layer2"

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.layer1 = _conv_block(in_channels, 8)
        self.layer2 = _conv_block(8, 16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(images))


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


# ---------------------------------------------------------------------------- weight files
IMAGENET_WEIGHTS: dict[str, Any] = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,  # the detector's backbones
    "vgg16_bn": torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1,
}


def hub_weights_file(name: str) -> Path:
    """Where torch hub keeps the ImageNet weights of backbone ``name`` (the file may not exist)."""
    url = IMAGENET_WEIGHTS[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def pretrained_state(name: str, weights_path: Optional[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to start from, and where it came from.

    ``weights_path`` when given; else the ImageNet weights of ``name`` from torch hub's cache,
    downloaded there by torchvision first when the file is missing and the source can be reached.

    Raises:
        PretrainedWeightsError: no weights exist for ``name``, or the file is neither cached nor
            downloadable (offline); the message names the file and where to put it.
    """
    if weights_path is not None:
        return read_state_dict(weights_path), repr(str(weights_path))
    if name not in IMAGENET_WEIGHTS:
        raise PretrainedWeightsError(
            f"Backbone {name!r} has no ImageNet weights; pass model.init_args.weights_path=FILE "
            "or set pretrained: false"
        )
    cached = hub_weights_file(name)
    if not cached.is_file():
        download_imagenet_weights(name)
    return read_state_dict(cached), repr(str(cached))


def download_imagenet_weights(name: str) -> None:
    """Download backbone ``name``'s ImageNet weights into torch hub's cache with torchvision.

    The source is checked first with a short connection timeout, so an offline machine gets its
    answer in seconds.

    Raises:
        PretrainedWeightsError: the source cannot be reached or the download failed.
    """
    weights = IMAGENET_WEIGHTS[name]
    cached = hub_weights_file(name)
    reason = unreachable(weights.url)
    if reason is None:
        try:
            weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
        except OSError as error:  # urllib's URLError, an interrupted transfer, a full disk
            reason = f"{type(error).__name__}: {error}"
        except RuntimeError as error:  # torch hub's hash check
            reason = str(error)
    if reason is not None or not cached.is_file():
        raise PretrainedWeightsError(
            f"pretrained: true needs ImageNet weights for {name!r}, but {str(cached)!r} does not exist and "
            f"torchvision could not download it ({reason or 'no file was written'}). Put the file "
            f"{weights.url} at that path (torch hub's cache: $TORCH_HOME/hub/checkpoints), or pass "
            "model.init_args.weights_path=FILE with a state dict, or set pretrained: false."
        )


def _resnet(name: str) -> BackboneBuilder:
    def build(in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None) -> tuple[nn.Module, int]:
        check_channels(in_channels, name)
        resnet = getattr(torchvision.models, name)(weights=None)
        if in_channels != 3:
            resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return _with_weights(ResNetFeatures(resnet), name, pretrained, weights_path), resnet.fc.in_features

    build.__doc__ = f"torchvision {name} features (stride 32), optionally with local pretrained weights."
    return build


def tiny(in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None) -> tuple[nn.Module, int]:
    """:class:`TinyFeatures` (16 channels); ``weights_path`` loads a saved state dict of it."""
    check_channels(in_channels, "tiny")
    return _with_weights(TinyFeatures(in_channels), "tiny", pretrained, weights_path), 16


class FaceVGGFeatures(nn.Module):
    """A small VGG feature stack (:func:`facetorch.models.vgg.make_vgg_features`, with BatchNorm)."""

    def __init__(self, in_channels: int = 3, cfg: Sequence[LayerSpec] = FACE_VGG_CFG) -> None:
        super().__init__()
        self.features = make_vgg_features(cfg, in_channels, batch_norm=True)
        self.cam_layer = f"features.{last_relu_name(self.features)}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def face_vgg(in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None) -> tuple[nn.Module, int]:
    """:class:`FaceVGGFeatures` with :data:`FACE_VGG_CFG` (the face / non-face network's convolutions)."""
    check_channels(in_channels, "face_vgg")
    features = _with_weights(FaceVGGFeatures(in_channels), "face_vgg", pretrained, weights_path)
    return features, int([c for c in FACE_VGG_CFG if c != "M"][-1])


def _with_weights(features: nn.Module, name: str, pretrained: bool, weights_path: Optional[str]) -> nn.Module:
    """``features``, loaded with backbone ``name``'s pretrained weights when they are asked for."""
    if pretrained or weights_path is not None:
        state, source = pretrained_state(name, weights_path)
        load_backbone_weights(features, state, source)
    return features


def openface_nn4_small2(
    in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None
) -> tuple[nn.Module, int]:
    """OpenFace's nn4.small2 up to inception 5b (736 channels): :mod:`facetorch.models.openface`."""
    from facetorch.models.openface import build_openface_nn4_small2  # it uses this module's helpers

    return build_openface_nn4_small2(in_channels, pretrained, weights_path)


BACKBONES: dict[str, BackboneBuilder] = {
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
    "face_vgg": face_vgg,
    "tiny": tiny,
    "openface_nn4_small2": openface_nn4_small2,
    "dlib_resnet": build_dlib_resnet,  # dlib's face ResNet; pretrained: its .dat file (facetorch.models.dlib_resnet)
}


def build_backbone(
    name: str, in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None
) -> tuple[nn.Module, int]:
    """Build backbone ``name``: a key of :data:`BACKBONES`, or ``timm:<model name>``.

    Args:
        name: A key of :data:`BACKBONES`, or ``timm:`` and any timm model name (``timm:resnet34``,
            ``timm:convnext_tiny.fb_in1k``).
        in_channels: 1 (greyscale) or 3 (RGB).
        pretrained: Start from pretrained weights: ImageNet weights in torch hub's cache for the
            torchvision backbones (downloaded by torchvision when missing and reachable), timm's own
            pretrained weights for ``timm:`` names.
        weights_path: Start from this file (or, for ``openface_nn4_small2``, folder) instead.

    Returns:
        The feature extractor (images (B, C, H, W) -> (B, width, h, w)) and ``width``.

    Raises:
        ValueError: unknown name or channels, or weights that do not fit.
        PretrainedWeightsError: pretrained weights were asked for and none could be read or downloaded.
    """
    if name.startswith(TIMM_PREFIX):
        from facetorch.models.timm_backbone import build_timm_backbone  # imports timm (slow) only when asked

        return build_timm_backbone(name, in_channels, pretrained, weights_path)
    if name not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {sorted(BACKBONES)} or timm:<model name>, got {name!r}")
    return BACKBONES[name](in_channels, pretrained, weights_path)

"""Backbone weight files and what every backbone shares: reading a state dict, fitting it, the errors.

A light module below the backbones (``backbones``, ``openface``, ``timm_backbone``, ``detector``),
so that each of them can use these without importing the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

TIMM_PREFIX = "timm:"  # ``timm:<model name>``: any timm model, see facetorch.models.timm_backbone


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for, but no local file holds them and none could be downloaded."""


def check_channels(in_channels: int, name: str) -> None:
    """Every backbone takes greyscale or RGB images."""
    if in_channels not in (1, 3):
        raise ValueError(f"Backbone {name!r} takes in_channels 1 or 3, got {in_channels}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file.

    The file holds a plain state dict, or a dict holding one under ``state_dict`` or ``model`` (as
    training scripts often save them).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weights file {str(path)!r} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"Expected a state dict (parameter name -> tensor) in {str(path)!r}, got {type(state).__name__}")
    return dict(state)


def _adapt_first_conv(state: dict[str, torch.Tensor], module: nn.Module, source: str) -> None:
    """Fit RGB first-conv weights to a greyscale input (sum over colours), or grey to RGB (spread)."""
    own = module.state_dict()
    for key, value in state.items():
        target = own.get(key)
        if target is None or value.ndim != 4 or target.ndim != 4 or value.shape[1] == target.shape[1]:
            continue
        if value.shape[1] == 3 and target.shape[1] == 1:
            state[key] = value.sum(dim=1, keepdim=True)  # a grey image is R = G = B
        elif value.shape[1] == 1 and target.shape[1] == 3:
            state[key] = value.repeat(1, 3, 1, 1) / 3
        else:
            raise ValueError(f"{key} in {source} takes {value.shape[1]} input channels; the model takes {target.shape[1]}")


def load_backbone_weights(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into a feature extractor.

    A classifier (``fc.*``) is ignored, and the first conv is fitted to the model's input channels.

    Raises:
        ValueError: keys or shapes do not match the backbone; the message names some of them.
    """
    own = set(module.state_dict())
    state = {k: v for k, v in state.items() if k in own or not k.startswith("fc.")}
    _adapt_first_conv(state, module, source)
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    if missing or unexpected:
        raise ValueError(
            f"Weights in {source} do not fit backbone {type(module).__name__}: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"Weights in {source} do not fit backbone {type(module).__name__}: {error}") from error

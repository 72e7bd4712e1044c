"""Any timm model as a backbone: ``backbone: timm:<model name>`` (``timm:resnet34``, ``timm:convnext_tiny``).

The model is built by ``timm.create_model(name, pretrained=..., num_classes=0, global_pool="",
in_chans=...)`` and its ``forward_features`` gives the feature map: (B, C, h, w), with
``C = model.num_features``. Models that return tokens (ViT and kin) give the feature map of their
last block through ``forward_intermediates(..., output_fmt="NCHW")``; channels-last outputs
(``output_fmt == "NHWC"``) are permuted. timm adapts the first conv to 1 input channel itself.

Pretrained weights are timm's own (``pretrained: true``): timm finds them in the Hugging Face
cache or torch hub's cache, and otherwise downloads them. When they are not cached and their
source cannot be reached, the build fails at once with a message that says what to provide.
``weights_path`` loads a timm checkpoint file instead (timm's loader, ``pretrained_cfg_overlay``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from torch import nn

from facetorch.models.downloads import unreachable
from facetorch.models.weights import TIMM_PREFIX, PretrainedWeightsError, check_channels

__all__ = ["TimmFeatures", "build_timm_backbone"]


class TimmFeatures(nn.Module):
    """A timm model as a feature extractor: images (B, C, H, W) -> (B, num_features, h, w).

    ``features`` (an identity at the end) is the Grad-CAM layer: its output is the feature map
    whatever the model's last module is. ``stages`` lists the model's children in forward order
    (``model.layer1`` ...), for freezing the first stages.

    Args:
        model: A timm model built with ``num_classes=0, global_pool=""``.
        name: Its timm name, for messages.
    """

    cam_layer = "features"

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.features = nn.Identity()
        self.name = name
        self.num_features = int(model.num_features)
        # ViT-style models: forward_features gives tokens (B, N, C); their last block as a map instead.
        self.tokens = hasattr(model, "num_prefix_tokens") and hasattr(model, "forward_intermediates")
        self.channels_last_output = getattr(model, "output_fmt", "NCHW") == "NHWC"

    @property
    def stages(self) -> tuple[str, ...]:
        """The model's children in forward order, as names relative to this module."""
        return tuple(f"model.{name}" for name, _ in self.model.named_children())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            x = self.model.forward_intermediates(images, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)[-1]
        else:
            x = self.model.forward_features(images)
            if self.channels_last_output and x.ndim == 4:
                x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"timm model {self.name!r} gives features of shape {tuple(x.shape)}; facetorch's heads need a feature "
                f"map (B, {self.num_features}, h, w). Pick a convolutional model (timm.list_models('resnet*'), 'convnext*')"
            )
        return self.features(x)


def build_timm_backbone(
    name: str, in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None
) -> tuple[nn.Module, int]:
    """:class:`TimmFeatures` for ``timm:<model name>`` and its width.

    Args:
        name: ``timm:`` and a timm model name, optionally with a pretrained tag (``timm:resnet34.a1_in1k``).
        in_channels: 1 or 3.
        pretrained: Start from timm's pretrained weights (cached, or downloaded by timm).
        weights_path: Start from this timm checkpoint file instead (``.pth``, ``.bin`` or ``.safetensors``).

    Raises:
        ValueError: timm has no such model, or the weights do not fit it.
        FileNotFoundError: ``weights_path`` does not exist.
        PretrainedWeightsError: pretrained weights are not cached and cannot be downloaded.
    """
    check_channels(in_channels, name)
    model_name = name[len(TIMM_PREFIX):]
    if not model_name or not timm.is_model(model_name):
        raise ValueError(
            f"model.backbone {name!r} names no timm model: write timm:<name> with a name from timm.list_models(), "
            "e.g. timm:resnet34 or timm:convnext_tiny"
        )
    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": "", "in_chans": in_channels}
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"Backbone weights file {str(weights_path)!r} does not exist")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights_path)})
        source = repr(str(weights_path))
    elif pretrained:
        kwargs["pretrained"] = True
        source = _check_pretrained_source(model_name)
    else:
        source = ""
    try:
        with _missing_keys() as missing:
            model = timm.create_model(model_name, **kwargs)
    except (RuntimeError, KeyError) as error:  # shapes that do not fit
        if not source:
            raise
        raise ValueError(f"Weights in {source} do not fit timm model {model_name!r}: {error}") from error
    except OSError as error:  # huggingface_hub's and urllib's errors are all OSErrors
        if not pretrained or weights_path is not None:
            raise
        raise PretrainedWeightsError(
            f"pretrained: true for {name!r}: timm could not load its weights from {source} "
            f"({type(error).__name__}: {error}). {_what_to_do(model_name)}"
        ) from error
    if missing:
        raise ValueError(
            f"Weights in {source} do not fit timm model {model_name!r}: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)})"
        )
    return TimmFeatures(model, model_name), int(model.num_features)


@contextlib.contextmanager
def _missing_keys() -> Iterator[list[str]]:
    """The keys timm's pretrained loader reports missing while the block runs.

    With the classifier dropped (``num_classes=0``) timm loads weights non-strictly and only logs
    the keys a checkpoint lacks; facetorch makes a backbone left partly at random an error.
    """
    logger = logging.getLogger("timm.models._builder")
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Missing keys (") and ")" in message:
                found.extend(key.strip() for key in message[len("Missing keys ("): message.index(")")].split(",") if key.strip())

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _check_pretrained_source(model_name: str) -> str:
    """Where timm will load ``model_name``'s weights from; raises at once when they cannot be had.

    Cached weights are left to timm (the Hugging Face cache works offline). Otherwise the source
    is probed first, so an offline machine does not wait on a download.
    """
    cfg = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not hub_id and not url:
        raise PretrainedWeightsError(
            f"timm model {model_name!r} has no pretrained weights: pick a tagged name (timm.list_pretrained("
            f"{model_name.split('.')[0] + '*'!r})), pass model.init_args.weights_path=FILE, or set pretrained: false"
        )
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else ["model.safetensors", "pytorch_model.bin"]
        if constants.HF_HUB_OFFLINE or any(
            isinstance(try_to_load_from_cache(repo, n, revision=revision or None), str) for n in names
        ):
            return f"the Hugging Face cache ({repo})"
        source_url = f"{constants.ENDPOINT}/{repo}"
    else:
        if (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlsplit(url).path)).is_file():
            return "torch hub's cache"
        source_url = url
    reason = unreachable(source_url)
    if reason is not None:
        raise PretrainedWeightsError(
            f"pretrained: true for timm:{model_name} needs its weights from {source_url}, which are not cached and "
            f"cannot be downloaded here ({reason}). {_what_to_do(model_name)}"
        )
    return source_url


def _what_to_do(model_name: str) -> str:
    return (
        f"Load timm.create_model({model_name!r}, pretrained=True) once on a machine with network (the weights land "
        "in the Hugging Face cache, ~/.cache/huggingface/hub, readable offline with HF_HUB_OFFLINE=1), or pass "
        "model.init_args.weights_path=FILE (a timm checkpoint), or set pretrained: false."
    )

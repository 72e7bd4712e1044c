"""Backbone registry, the identity head, and pretrained weights from local files only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facetorch.models import BACKBONES, BackboneClassifier, IdentityHead, PretrainedWeightsError, backbones, build_backbone


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
def test_builders_return_features_and_their_width(name: str, channels: int) -> None:
    features, width = build_backbone(name, in_channels=channels)
    out = features(torch.randn(2, channels, 64, 48))
    assert out.ndim == 4 and out.shape[:2] == (2, width)
    assert dict(features.named_modules())[features.cam_layer] is not None


def test_registry_holds_resnet50_and_rejects_unknown_names() -> None:
    assert {"resnet18", "resnet50", "tiny"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="model.backbone must be one of"):
        build_backbone("vgg99")
    with pytest.raises(ValueError, match="in_channels 1 or 3"):
        build_backbone("tiny", in_channels=4)


def test_identity_head_is_the_original_head() -> None:
    head = IdentityHead(16, num_classes=5)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["AdaptiveAvgPool2d", "Flatten", "Linear", "ELU", "BatchNorm1d", "Dropout", "Linear"]
    assert head[2].out_features == 512 and head[5].p == 0.5
    model = BackboneClassifier(build_backbone("tiny")[0], head).eval()
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 5)
    assert model.cam_layer == "backbone.layer2"


def test_pretrained_without_cached_weights_fails_fast_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("facetorch must never try to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(PretrainedWeightsError) as error:
        build_backbone("resnet18", pretrained=True)
    message = str(error.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in message and "weights_path" in message and "never downloads" in message
    with pytest.raises(PretrainedWeightsError, match="weights_path"):
        build_backbone("tiny", pretrained=True)  # no ImageNet weights exist for it


def test_pretrained_reads_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    source, _ = build_backbone("resnet18")
    cached = backbones.hub_weights_file("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save({**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, cached)
    loaded, _ = build_backbone("resnet18", in_channels=1, pretrained=True)
    assert torch.allclose(loaded.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    # RGB first conv summed over colours for a greyscale input
    assert torch.allclose(loaded.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))


def test_weights_path_loads_a_saved_state_dict(tmp_path: Path) -> None:
    source, _ = build_backbone("tiny", in_channels=1)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded, _ = build_backbone("tiny", in_channels=1, weights_path=str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"something.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="do not fit backbone TinyFeatures"):
        build_backbone("tiny", weights_path=str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("tiny", weights_path=str(tmp_path / "missing.pt"))

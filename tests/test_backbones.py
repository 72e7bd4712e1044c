"""Backbone registry, the identity head, and pretrained weights: the hub cache, torchvision's download, offline errors."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
from pathlib import Path

import pytest
import torch

from facetorch.models import (
    BACKBONES,
    BackboneClassifier,
    IdentityHead,
    PretrainedWeightsError,
    backbones,
    build_backbone,
    downloads,
)


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


def _offline_download(calls: list[str]):
    """Stand-in for torchvision's download (``torch.hub.load_state_dict_from_url``) on a machine without network."""

    def download(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    return download


def test_pretrained_without_cached_weights_fails_fast_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(backbones, "unreachable", lambda url: None)  # the source answers; the download fails
    calls: list[str] = []
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", _offline_download(calls))
    with pytest.raises(PretrainedWeightsError) as error:
        build_backbone("resnet18", pretrained=True)
    message = str(error.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]  # torchvision's own download
    assert str(expected) in message and calls[0] in message and "weights_path" in message
    assert "could not download it (URLError" in message and "Temporary failure in name resolution" in message
    with pytest.raises(PretrainedWeightsError, match="weights_path"):
        build_backbone("tiny", pretrained=True)  # no ImageNet weights exist for it


def test_an_unreachable_source_is_reported_at_once_without_a_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls: list[str] = []
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", _offline_download(calls))

    def hang(address: object, timeout: float = 0.0, *args: object) -> None:
        time.sleep(30)  # a firewall that drops packets: the connection would hang

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(downloads, "PROBE_TIMEOUT_S", 0.2)
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match=r"download it \(download.pytorch.org:443 did not answer within 0.2 s\)"):
        build_backbone("resnet18", pretrained=True)
    assert not calls and time.perf_counter() - start < 10


def test_the_probe_gives_up_quickly_and_goes_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def refuse(address: object, timeout: float = 0.0, *args: object) -> None:
        seen.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert "download.pytorch.org:443 cannot be reached (ConnectionRefusedError" in downloads.unreachable(
        "https://download.pytorch.org/models/x.pth"
    )
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    downloads.unreachable("https://download.pytorch.org/models/x.pth")
    assert seen[-1] == ("proxy.example", 3128)

    def hang(address: object, timeout: float = 0.0, *args: object) -> None:
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert "did not answer within 0.2 s" in downloads.unreachable("https://example.org/x", timeout=0.2)
    assert time.perf_counter() - start < 5

    def accept(address: object, timeout: float = 0.0, *args: object) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    monkeypatch.setattr(socket, "create_connection", accept)
    assert downloads.unreachable("https://example.org/x") is None


def test_pretrained_downloads_through_torchvision_when_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(backbones, "unreachable", lambda url: None)
    source, _ = build_backbone("resnet18")
    asked: list[dict] = []

    def download(url: str, *args: object, **kwargs: object) -> dict:  # what torch hub does: fetch into its cache
        asked.append(kwargs)
        target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        target.parent.mkdir(parents=True, exist_ok=True)
        state = {**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
        torch.save(state, target)
        return state

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", download)
    loaded, _ = build_backbone("resnet18", pretrained=True)
    assert asked == [{"progress": True, "check_hash": True, "weights_only": True}]
    assert torch.allclose(loaded.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    again, _ = build_backbone("resnet18", pretrained=True)  # now cached: no second download
    assert len(asked) == 1 and torch.equal(again.conv1.weight, source.conv1.weight)


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


def test_face_vgg_input_norm_sees_a_darker_flatter_crop_as_the_same_crop(tmp_path: Path) -> None:
    from facetorch.data.transforms import InputSpec
    from facetorch.inference.export import check_export, export_graph, export_task
    from facetorch.tasks import FaceClassifierTask

    torch.manual_seed(0)
    task = FaceClassifierTask(cfg=[8, "M", 8, "M"], hidden=8, input_norm=True).eval()
    plain = FaceClassifierTask(cfg=[8, "M", 8, "M"], hidden=8).eval()
    plain.load_state_dict(task.state_dict())  # no weights of its own: old checkpoints load either way
    crop = torch.rand(3, 1, 24, 16) * 2 - 1  # normalised input in [-1, 1]
    dark = 0.25 * crop - 0.7  # a quarter of the contrast, much darker
    with torch.no_grad():
        # equal up to eps (0.01 against the dark crop's std of about 0.14)
        torch.testing.assert_close(task(dark), task(crop), atol=0.01, rtol=0)
        assert not torch.allclose(plain(dark), plain(crop), atol=0.01)
    # The standardisation is part of the network: an export carries it.
    spec = InputSpec((24, 16), 1)
    export_task(task, spec, tmp_path / "vgg.onnx", "onnx")
    assert check_export(export_graph(task, spec), spec, tmp_path / "vgg.onnx", "onnx", 2) < 1e-5

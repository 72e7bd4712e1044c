"""timm models as backbones (``timm:<name>``): the feature-map contract, timm's pretrained loading, offline errors.

timm's tiny ``test_*`` models keep these fast; nothing is downloaded (the download is a stand-in).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import timm.models._builder as timm_builder
import torch

from facetorch import cli
from facetorch.callbacks import FreezeStages
from facetorch.explain.gradcam import GradCAM
from facetorch.inference.checkpoint import load_task
from facetorch.models import BackboneClassifier, IdentityHead, PretrainedWeightsError, build_backbone
from facetorch.models import timm_backbone as tb
from facetorch.tasks import EmbeddingTask, IdentityTask
from tests.conftest import REPO

TINY_EMBEDDING = str(REPO / "tests" / "configs" / "embedding_tiny.yaml")
TINY_IDENTITY = str(REPO / "tests" / "configs" / "identity_tiny.yaml")


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext", "test_efficientnet", "test_vit"])
@pytest.mark.parametrize("channels", [1, 3])
def test_timm_models_give_a_feature_map_and_name_their_cam_layer(name: str, channels: int) -> None:
    features, width = build_backbone(f"timm:{name}", in_channels=channels)
    out = features(torch.randn(2, channels, 64, 64))
    assert out.ndim == 4 and out.shape[:2] == (2, width)
    assert dict(features.named_modules())[features.cam_layer] is features.features
    assert features.stages and all(stage.startswith("model.") for stage in features.stages)


def test_grad_cam_explains_a_timm_backbone_and_its_stages_can_be_frozen() -> None:
    features, width = build_backbone("timm:test_resnet", in_channels=3)
    frozen = [name for name, _ in FreezeStages(up_to="model.layer1").frozen_stages(features)]
    assert frozen == ["model.conv1", "model.bn1", "model.act1", "model.maxpool", "model.layer1"]
    model = BackboneClassifier(features, IdentityHead(width, num_classes=3, hidden=8)).eval()
    with GradCAM(model, model.cam_layer) as cam:
        heat = cam(torch.rand(2, 3, 64, 64), target=1)
    assert heat.shape == (2, 64, 64) and torch.isfinite(heat).all()


def test_unknown_timm_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="names no timm model: write timm:<name>"):
        build_backbone("timm:no_such_net")
    with pytest.raises(ValueError, match="names no timm model"):
        build_backbone("timm:")
    with pytest.raises(ValueError, match="or timm:<model name>"):
        build_backbone("resnet999")
    with pytest.raises(ValueError, match="in_channels 1 or 3"):
        build_backbone("timm:test_resnet", in_channels=2)


def _reference_state(in_chans: int = 3) -> dict[str, torch.Tensor]:
    """A 'pretrained' test_resnet checkpoint as timm publishes them: with its 1000-class classifier."""
    torch.manual_seed(1)
    return timm.create_model("test_resnet", in_chans=in_chans).state_dict()


def test_weights_path_goes_through_timms_own_loader(tmp_path: Path) -> None:
    path = tmp_path / "test_resnet.pth"
    reference = _reference_state()
    torch.save(reference, path)
    features, _ = build_backbone("timm:test_resnet", in_channels=1, weights_path=str(path))
    state = features.model.state_dict()
    assert torch.equal(state["layer4.0.conv1.weight"], reference["layer4.0.conv1.weight"])
    assert torch.allclose(state["conv1.0.weight"], reference["conv1.0.weight"].sum(dim=1, keepdim=True))  # grey
    assert "fc.weight" not in state  # the classifier is dropped (num_classes=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("timm:test_resnet", weights_path=str(tmp_path / "missing.pth"))
    torch.save({"something.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="do not fit timm model 'test_resnet'"):
        build_backbone("timm:test_resnet", weights_path=str(tmp_path / "other.pth"))


def _not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_pretrained_downloads_through_timm_when_the_hub_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    _not_cached(monkeypatch)
    monkeypatch.setattr(tb, "unreachable", lambda url: None)
    asked: list[str] = []

    def download(model_id: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        asked.append(model_id)
        return _reference_state()

    monkeypatch.setattr(timm_builder, "load_state_dict_from_hf", download)
    features, width = build_backbone("timm:test_resnet", pretrained=True)
    assert asked == ["timm/test_resnet.r160_in1k"] and width == 96
    assert torch.equal(features.model.layer1[0].conv1.weight, _reference_state()["layer1.0.conv1.weight"])


def test_pretrained_offline_fails_at_once_and_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    _not_cached(monkeypatch)
    asked: list[str] = []

    def download(model_id: str, *args: object, **kwargs: object) -> None:
        asked.append(model_id)
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic is off")

    monkeypatch.setattr(timm_builder, "load_state_dict_from_hf", download)
    monkeypatch.setattr(tb, "unreachable", lambda url: "huggingface.co:443 cannot be reached (gaierror)")
    with pytest.raises(PretrainedWeightsError) as error:
        build_backbone("timm:test_resnet", pretrained=True)
    message = str(error.value)
    assert not asked  # nothing was tried
    assert "huggingface.co/timm/test_resnet.r160_in1k" in message and "cannot be reached" in message
    assert "weights_path=FILE" in message and "HF_HUB_OFFLINE=1" in message
    # The hub answered, but the download failed all the same (huggingface_hub's errors are OSErrors).
    monkeypatch.setattr(tb, "unreachable", lambda url: None)
    with pytest.raises(PretrainedWeightsError, match="timm could not load its weights .*LocalEntryNotFoundError"):
        build_backbone("timm:test_resnet", pretrained=True)
    assert asked == ["timm/test_resnet.r160_in1k"]


@pytest.mark.slow
@pytest.mark.parametrize("task, config", [(EmbeddingTask, TINY_EMBEDDING), (IdentityTask, TINY_IDENTITY)],
                         ids=["embedding", "identity"])  # fmt: skip
def test_tasks_train_with_a_timm_backbone_through_the_cli_and_reload(
    task: type, config: str, identity_dir: Path, in_tmp: Path
) -> None:
    report = cli.train(["--config", config, "--data.root", str(identity_dir), "--model.init_args.backbone=timm:test_resnet",
                        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert report["num_samples"] > 0
    name = "embedding_tiny" if task is EmbeddingTask else "identity_tiny"
    ckpt = in_tmp / "runs" / name / "version_0" / "checkpoints" / "best.ckpt"
    loaded = load_task(ckpt, task)
    assert loaded.task.hparams.backbone == "timm:test_resnet"
    assert loaded.task.cam_layer == "model.backbone.features"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in loaded.task.state_dict().items() if k in state)
    size = loaded.input.image_size
    with torch.no_grad():
        out = loaded.task(torch.zeros(2, loaded.input.channels, *size))
    assert out.shape[0] == 2 and torch.isfinite(out).all()

"""The one checkpoint loader: every task's checkpoint loads, wrong or broken files are named, and
restoring never reads a pretrained weight file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from facetorch import cli
from facetorch.cli import explain as explain_cli
from facetorch.inference.checkpoint import CheckpointError, load_task
from facetorch.tasks import EmbeddingTask, FaceClassifierTask, FaceDetectorTask, FaceTask, IdentityTask
from tests.conftest import REPO, write_identity_folders

TINY = REPO / "tests" / "configs"
TASKS = {  # config -> task class
    "face_vgg.yaml": FaceClassifierTask,
    "identity_tiny.yaml": IdentityTask,
    "embedding_tiny.yaml": EmbeddingTask,
    "detector_tiny.yaml": FaceDetectorTask,
}


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints: dict[str, tuple[Path, Path]]) -> dict[str, tuple[Path, Path]]:
    """One trained checkpoint per task (conftest's, trained once per session): config -> (best.ckpt, data root)."""
    return tiny_checkpoints


@pytest.mark.parametrize("config", list(TASKS))
def test_every_task_loads_through_the_one_loader(checkpoints: dict, config: str) -> None:
    task_class = TASKS[config]
    path, _ = checkpoints[config]
    loaded = load_task(path, task_class)
    assert type(loaded.task) is task_class and not loaded.task.training
    assert loaded.class_name == task_class.__name__
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(loaded.task.state_dict()[key], value) for key, value in state.items())
    # The evaluation input comes back from the data settings saved beside the weights.
    saved = torch.load(path, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    assert loaded.input.image_size == tuple(saved["image_size"]) and loaded.input.channels == saved["channels"]
    height, width = loaded.input.image_size
    image = np.zeros((50, 40, 3) if loaded.input.channels == 3 else (50, 40), dtype=np.uint8)
    assert tuple(loaded.transform(image).shape) == (loaded.input.channels, height, width)
    # The base class accepts any task.
    assert type(load_task(path, FaceTask).task) is task_class


def test_a_checkpoint_of_another_task_names_both(checkpoints: dict) -> None:
    path, _ = checkpoints["face_vgg.yaml"]
    with pytest.raises(CheckpointError, match=r"is a FaceClassifierTask checkpoint; gallery.py needs an EmbeddingTask"):
        load_task(path, EmbeddingTask, tool="gallery.py")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"PK\x03\x04 not really a zip", "not a readable facetorch checkpoint"),
    (b"plain text, not a checkpoint\n", "not a readable facetorch checkpoint"),
])  # fmt: skip
def test_missing_empty_truncated_or_foreign_files_are_named(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((CheckpointError, FileNotFoundError), match=f"model.ckpt.*{message}"):
        load_task(path, FaceTask)


def test_a_truncated_real_checkpoint_is_named(checkpoints: dict, tmp_path: Path) -> None:
    data = checkpoints["face_vgg.yaml"][0].read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt.*not a readable facetorch checkpoint"):
        load_task(cut, FaceTask)


def test_a_torch_file_that_is_not_a_lightning_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"weights.pt.*not a facetorch checkpoint.*'state_dict' and 'hyper_parameters'"):
        load_task(path, FaceTask)


# --------------------------------------------------------------------------------------------
# Restoring never reads pretrained weight files
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pretrained_run_reloads_without_its_weight_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    from facetorch.models.backbones import hub_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = hub_weights_file("resnet18")  # stand-in "ImageNet" weights where torch hub keeps them
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    data = write_identity_folders(tmp_path / "ids", size=(32, 32))
    monkeypatch.chdir(tmp_path)
    cli.train(["--config", str(TINY / "identity_tiny.yaml"), "--data.root", str(data), "--trainer.max_epochs=1",
               "--model.init_args.backbone=resnet18", "--model.init_args.pretrained=true", "--data.channels=3",
               "--trainer.enable_progress_bar=false"])  # fmt: skip
    run = tmp_path / "runs" / "identity_tiny" / "version_0"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["pretrained"] is True
    weights.unlink()  # a machine without the ImageNet file

    loaded = load_task(run / "checkpoints" / "best.ckpt", IdentityTask)
    assert loaded.task.hparams.backbone == "resnet18"
    # The run's own config (pretrained: true) with the checkpoint: evaluate, explain and resume.
    report = cli.evaluate(["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "best.ckpt"),
                           "--data.root", str(data), "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert report["num_samples"] == 30
    written = explain_cli.explain(["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "best.ckpt"),
                                   "--images", str(data / "person_00" / "0.png"), "--method", "gradcam",
                                   "--output", str(tmp_path / "explained")])  # fmt: skip
    assert written
    cli.train(["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
               "--trainer.max_epochs=2"])  # fmt: skip
    resumed = tmp_path / "runs" / "identity_tiny" / "version_2"  # version_1 was the evaluation's
    assert json.loads((resumed / "metrics.json").read_text())["num_samples"] > 0
    # Without a checkpoint the config still asks for the file, and says so at once.
    with pytest.raises((FileNotFoundError, ValueError), match="needs ImageNet weights for .resnet18."):
        cli.train(["--config", str(run / "config.yaml"), "--trainer.max_epochs=1"])

"""IdentityTask: the real config through the CLI, reports, matrix orientation, freeze / unfreeze, predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from facetorch import cli
from facetorch.callbacks.freeze_unfreeze import FreezeUnfreeze
from facetorch.data import FaceDataModule
from facetorch.explain.gradcam import GradCAM
from facetorch.models import build_backbone
from facetorch.tasks import IdentityTask
from tests.conftest import REPO

TINY = str(REPO / "tests" / "configs" / "identity_tiny.yaml")
REAL = str(REPO / "configs" / "identity_resnet50.yaml")
# The real config at a CPU-test size: tiny backbone, tiny images, generated identities (5 images each).
SHRUNK = ["--model.init_args.backbone=tiny", "--data.image_size=[24,20]", "--data.batch_size=8",
          "--data.val_fraction=0.2", "--data.test_fraction=0.2", "--trainer.enable_progress_bar=false"]
REPORT_FILES = ("config.yaml", "metrics.json", "metrics.csv", "classification_report.txt", "class_balance.png",
                "samples.png", "learning_curves.png", "confusion_matrix.png", "roc.png", "checkpoints/best.ckpt")


def test_real_config_trains_and_writes_every_report(identity_dir: Path, in_tmp: Path) -> None:
    report = cli.train(["--config", REAL, "--data.root", str(identity_dir), "--trainer.max_epochs=2", *SHRUNK])
    folder = in_tmp / "runs" / "identity_resnet50" / "version_0"
    for name in REPORT_FILES:
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == report
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat
    assert {"acc", "top5_acc", "num_samples", "precision/person_00", "recall/person_05", "f1/person_03",
            "precision_macro", "recall_macro", "f1_macro"} <= set(metrics)
    assert metrics["num_samples"] == 6  # 6 identities x 1 test image
    text = (folder / "classification_report.txt").read_text()
    assert "person_00" in text and "precision" in text and "macro avg" in text
    # The label map travels in the checkpoint.
    state = torch.load(folder / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    assert state["hyper_parameters"]["class_names"] == [f"person_{k:02d}" for k in range(6)]
    assert state["hyper_parameters"]["in_channels"] == 3


def test_confusion_matrix_has_true_labels_on_rows() -> None:
    task = IdentityTask(num_classes=3, class_names=["A", "B", "C"], backbone="tiny", hidden=8)
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([1, 1, 1, 1, 1, 2])  # every A is predicted as B
    probs = np.eye(3)[predicted] * 0.8 + 0.2 / 3
    matrix = task.confusion_matrix(probs, labels)
    assert matrix[0, 1] == 3 and matrix[1, 0] == 0  # row = true A, column = predicted B
    assert matrix.sum(axis=1).tolist() == [3, 2, 1]  # rows add up to the true counts
    report = task.classification_report(probs, labels)
    assert report["recall/A"] == 0.0 and report["precision/A"] == 0.0
    assert report["recall/B"] == 1.0 and report["precision/B"] == pytest.approx(2 / 5)
    assert report["f1/C"] == 1.0 and report["acc"] == pytest.approx(0.5)


def test_cam_layer_names_a_layer_of_the_task() -> None:
    resnet = IdentityTask(num_classes=4, backbone="resnet18")
    assert resnet.cam_layer == "model.backbone.layer4"
    assert resnet.cam_layer in dict(resnet.named_modules())
    tiny = IdentityTask(num_classes=4, backbone="tiny", hidden=8)
    with GradCAM(tiny, tiny.cam_layer) as cam:
        heat = cam(torch.randn(2, 3, 24, 20))
    assert heat.shape == (2, 24, 20)


def test_weights_path_reaches_the_backbone(tmp_path: Path) -> None:
    source, _ = build_backbone("tiny", in_channels=1)
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    task = IdentityTask(num_classes=3, in_channels=1, backbone="tiny", weights_path=str(path), hidden=8)
    assert torch.equal(task.backbone.layer1[0].weight, source.layer1[0].weight)


class _Probe(pl.Callback):
    """Records, at the first batch of each epoch, what the optimiser and the backbone look like."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, Any]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, task: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx:
            return
        optimizer = trainer.optimizers[0]
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        backbone = list(task.backbone.parameters())
        self.seen[trainer.current_epoch] = {
            "requires_grad": {p.requires_grad for p in backbone},
            "groups": [group["lr"] for group in optimizer.param_groups],
            "backbone_in_optimizer": {id(p) in in_optimizer for p in backbone},
            "head_in_optimizer": all(id(p) in in_optimizer for p in task.model.head.parameters()),
            "weights": task.backbone.layer1[0].weight.detach().clone(),
            "base_lrs": len(trainer.lr_scheduler_configs[0].scheduler.base_lrs),
        }


def test_freeze_then_unfreeze_adds_the_backbone_as_a_param_group(identity_dir: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = FaceDataModule(str(identity_dir), layout="identity_folders", image_size=(24, 20), batch_size=8,
                          val_fraction=0.2, test_fraction=0.2)
    task = IdentityTask(num_classes=data.num_classes, class_names=data.class_names, in_channels=1, backbone="tiny",
                        hidden=8, optimizer="adamw", lr=0.01, scheduler="cosine")
    probe = _Probe()
    trainer = pl.Trainer(max_epochs=3, callbacks=[FreezeUnfreeze(unfreeze_at_epoch=2, lr_factor=0.1, train_bn=False), probe],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=data)
    frozen, thawed = probe.seen[1], probe.seen[2]
    assert frozen["requires_grad"] == {False} and frozen["backbone_in_optimizer"] == {False}
    assert frozen["head_in_optimizer"] and len(frozen["groups"]) == 1
    assert torch.equal(probe.seen[0]["weights"], frozen["weights"])  # nothing moved while frozen
    assert thawed["requires_grad"] == {True} and thawed["backbone_in_optimizer"] == {True}
    assert len(thawed["groups"]) == 2 and thawed["groups"][1] == pytest.approx(0.1 * thawed["groups"][0])
    assert thawed["base_lrs"] == 2  # the cosine schedule drives the new group too
    assert not torch.equal(thawed["weights"], task.backbone.layer1[0].weight)  # trained once thawed


def test_predict_csv_with_an_identity_checkpoint(identity_dir: Path, in_tmp: Path, tmp_path: Path) -> None:
    cli.train(["--config", TINY, "--data.root", str(identity_dir), "--trainer.max_epochs=1"])
    ckpt = in_tmp / "runs" / "identity_tiny" / "version_0" / "checkpoints" / "best.ckpt"
    images = tmp_path / "to_predict"
    images.mkdir()
    for person in ("person_01", "person_04"):
        source = next((identity_dir / person).iterdir())
        (images / f"{person}{source.suffix}").write_bytes(source.read_bytes())
    (images / "broken.png").write_bytes(b"not a png")
    cli.main(["predict", "--config", TINY, "--data.root", str(identity_dir), "--data.predict_dir", str(images),
              "--ckpt_path", str(ckpt)])
    rows = (in_tmp / "runs" / "identity_tiny" / "version_1" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,prediction,probability,top5,error"
    assert len(rows) == 4
    broken = [r for r in rows if "broken.png" in r]
    assert broken and "Cannot read image" in broken[0]
    names = {f"person_{k:02d}" for k in range(6)}
    good = [r.split(",") for r in rows[1:] if "broken.png" not in r]
    assert all(r[1] in names and len(r[3].split(";")) == 5 for r in good)

    # The same checkpoint explained: overlays of the predicted identity and of a named one.
    from facetorch.cli import explain as explain_cli

    written = explain_cli.explain(["--config", TINY, "--ckpt_path", str(ckpt), "--data.root", str(identity_dir),
                                "--images", str(identity_dir / "person_01"), "--target", "person_01",
                                "--output", str(tmp_path / "explained")])  # fmt: skip
    assert sum(p.name.endswith("_gradcam_overlay.png") for p in written) == 5 and (tmp_path / "explained" / "grid.png").is_file()


def test_resuming_after_the_milestone_keeps_the_backbone_trainable(identity_dir: Path, tmp_path: Path) -> None:
    data = FaceDataModule(str(identity_dir), layout="identity_folders", image_size=(24, 20), batch_size=8,
                          val_fraction=0.2, test_fraction=0.2)

    def fit(epochs: int, probe: _Probe, ckpt_path: Any = None) -> pl.Trainer:
        pl.seed_everything(0)
        task = IdentityTask(num_classes=data.num_classes, class_names=data.class_names, in_channels=1,
                            backbone="tiny", hidden=8, optimizer="adamw", lr=0.01, scheduler="cosine")
        trainer = pl.Trainer(max_epochs=epochs, callbacks=[FreezeUnfreeze(unfreeze_at_epoch=1), probe], logger=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(task, datamodule=data, ckpt_path=ckpt_path)
        return trainer

    first = fit(2, _Probe())
    probe = _Probe()
    fit(3, probe, ckpt_path=first.checkpoint_callback.best_model_path)  # no monitor: the latest epoch
    assert list(probe.seen) == [2]
    assert probe.seen[2]["requires_grad"] == {True} and probe.seen[2]["backbone_in_optimizer"] == {True}
    assert len(probe.seen[2]["groups"]) == 2

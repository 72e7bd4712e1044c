"""Fine-tuning that never ends worse than it started: epoch 0 is the start, best.ckpt keeps it unless
beaten by more than the noise, and L2-SP / distillation keep the network near it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.demos.boring_classes import BoringModel
from torch import nn

from facetorch import cli
from facetorch.callbacks import KeepStartCheckpoint
from facetorch.data import FaceDataModule
from facetorch.models.start_point import StartPoint
from facetorch.tasks import EmbeddingTask
from tests.conftest import REPO, read_csv, write_identity_folders

TINY = str(REPO / "tests" / "configs" / "embedding_finetune_tiny.yaml")


# ---------------------------------------------------------------------------------------------- the rule


class ScoredModel(BoringModel):
    """Logs ``val_pair_acc`` = ``scores[0]`` before training, ``scores[epoch + 1]`` after each epoch, noise 0.01."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        trained = self.current_epoch + 1 if self.trainer.global_step > 0 else 0
        self.log("val_pair_acc", self.scores[trained])
        self.log("val_pair_acc_std", 0.01)


def fit(model: pl.LightningModule, tmp_path: Path, epochs: int, data: Any = None, **kwargs: Any) -> KeepStartCheckpoint:
    callback = KeepStartCheckpoint(**kwargs)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=epochs, limit_train_batches=2,
                         limit_val_batches=1 if data is None else 1.0, num_sanity_val_steps=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])  # fmt: skip
    trainer.fit(model, datamodule=data)
    return callback


def saved_epoch_and_step(path: str) -> tuple[int, int]:
    state = torch.load(path, weights_only=False, map_location="cpu")
    return state["epoch"], state["global_step"]


@pytest.mark.parametrize(
    ("scores", "best_is_start", "best_step"),
    [
        ([0.90, 0.85, 0.80], True, 0),  # training only hurts
        ([0.90, 0.905, 0.909], True, 0),  # better, but by less than the noise (0.01)
        ([0.90, 0.92, 0.91], False, 2),  # epoch 0 beats the start by more than the noise: the best trained epoch
        ([0.90, 0.905, 0.95], False, 4),
    ],
)
def test_an_epoch_replaces_the_start_only_beyond_the_noise(
    scores: list[float], best_is_start: bool, best_step: int, tmp_path: Path
) -> None:
    callback = fit(ScoredModel(scores), tmp_path, epochs=2)
    assert callback.start_score == pytest.approx(scores[0]) and callback.margin == pytest.approx(0.01)
    assert callback.best_is_start is best_is_start
    assert saved_epoch_and_step(callback.best_model_path)[1] == best_step
    assert saved_epoch_and_step(callback.last_model_path)[1] == 4  # last.ckpt: the last epoch, whatever the best
    summary = callback.summary()
    assert summary["best_is_start"] == float(best_is_start) and summary["start_val_pair_acc"] == pytest.approx(scores[0])
    assert summary["best_trained_val_pair_acc"] == pytest.approx(max(scores[1:]))


def test_the_margin_follows_the_factor_and_the_floor(tmp_path: Path) -> None:
    callback = fit(ScoredModel([0.90, 0.92, 0.91]), tmp_path / "a", epochs=2, noise_factor=3.0)
    assert callback.margin == pytest.approx(0.03) and callback.best_is_start
    callback = fit(ScoredModel([0.90, 0.92, 0.91]), tmp_path / "b", epochs=2, noise=None, min_delta=0.005)
    assert callback.margin == pytest.approx(0.005) and not callback.best_is_start
    with pytest.raises(ValueError, match="noise_factor and min_delta must be >= 0"):
        KeepStartCheckpoint(noise_factor=-1)


def test_the_start_and_its_noise_survive_a_resume(tmp_path: Path) -> None:
    callback = fit(ScoredModel([0.90, 0.85, 0.80]), tmp_path, epochs=1)
    again = KeepStartCheckpoint()
    again.load_state_dict(torch.load(callback.last_model_path, weights_only=False)["callbacks"][callback.state_key])
    assert (again.start_score, again.start_noise, again.best_is_start) == (callback.start_score, callback.start_noise, True)
    assert again.margin == pytest.approx(0.01)


# ---------------------------------------------------------------------------------------------- a real run


class WorseningTask(EmbeddingTask):
    """Gradient ascent on the triplet loss: every step pushes the same person apart."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return -super().training_step(batch, batch_idx)


def test_a_run_whose_training_only_hurts_keeps_the_starting_weights(tmp_path: Path) -> None:
    data = FaceDataModule(root=str(write_identity_folders(tmp_path / "people")), layout="identity_folders",
                          image_size=(32, 32), channels=3, split_by="identity", val_fraction=0.34, test_fraction=0.0,
                          train_batches="pk", identities_per_batch=2, images_per_identity=3, batches_per_epoch=3,
                          augmentation=None)  # fmt: skip
    pl.seed_everything(0)
    task = WorseningTask(num_classes=data.num_classes, backbone="tiny", embedding_dim=16, dropout=0.0, flip_test=False,
                         lr=0.05, weight_decay=0.0)  # fmt: skip
    start = {name: value.clone() for name, value in task.state_dict().items()}
    callback = fit(task, tmp_path, epochs=3, data=data)
    assert callback.best_is_start and callback.start_score is not None
    best = torch.load(callback.best_model_path, weights_only=True)["state_dict"]
    last = torch.load(callback.last_model_path, weights_only=True)["state_dict"]
    weights = [name for name in start if name != "threshold" and start[name].is_floating_point()]
    assert all(torch.equal(best[name], start[name]) for name in weights)
    assert not all(torch.equal(last[name], start[name]) for name in weights)  # training did move the weights


def test_epoch_0_is_validated_logged_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    people = write_identity_folders(tmp_path / "people")
    report = cli.train(["--config", TINY, "--data.root", str(people)])
    run = tmp_path / "runs" / "embedding_finetune_tiny" / "version_0"
    logged = read_csv(run / "metrics.csv")
    assert logged[0]["val_pair_acc"] and not logged[0]["train_loss"]  # validated before any training step
    assert (logged[0]["epoch"], logged[0]["step"]) == ("0", "0") and logged[0]["val_pair_acc_std"]
    rows = [row for row in logged if row["val_pair_acc"]]
    assert len(rows) == 1 + 2 + 1  # the start, after each of the 2 epochs, and best.ckpt validated at the end
    start = float(rows[0]["val_pair_acc"])
    assert report["start_val_pair_acc"] == pytest.approx(start)
    assert report["keep_start_margin"] == pytest.approx(float(rows[0]["val_pair_acc_std"]))
    assert json.loads((run / "metrics.json").read_text()) == report
    assert report["best_trained_val_pair_acc"] == max(float(row["val_pair_acc"]) for row in rows[1:3])
    if report["best_is_start"]:  # metrics.json then holds the start's numbers
        assert report["val_pair_acc"] == pytest.approx(start)
    train_rows = [row for row in read_csv(run / "metrics.csv") if row.get("train_l2_sp")]
    assert train_rows and all(float(row["train_l2_sp"]) > 0 for row in train_rows)


# ---------------------------------------------------------------------------------------------- the regularisers


def test_l2_sp_and_distillation_are_zero_at_the_start_and_grow_as_weights_move() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 8))  # fmt: skip
    start = StartPoint(model, keep_network=True)
    images = torch.randn(6, 3, 12, 12)
    assert start.l2_sp(model).item() == 0.0
    assert start.distillation(model, images, model(images)).item() == pytest.approx(0.0, abs=1e-6)
    distances = []
    for step in (0.01, 0.1):
        with torch.no_grad():
            model[5].weight.add_(step)
        distances.append((start.l2_sp(model).item(), start.distillation(model, images, model(images)).item()))
    assert 0 < distances[0][0] < distances[1][0] and 0 < distances[0][1] < distances[1][1]
    assert distances[1][0] == pytest.approx(32 * 0.11**2, rel=1e-4)  # 32 weights moved by 0.11
    model[0].requires_grad_(False)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert start.l2_sp(model).item() == pytest.approx(distances[1][0], rel=1e-4)  # frozen layers are not trained


def test_the_task_adds_the_penalties_and_a_resumed_run_keeps_its_start() -> None:
    torch.manual_seed(0)
    task = EmbeddingTask(num_classes=4, backbone="tiny", embedding_dim=8, dropout=0.0, l2_sp_weight=0.5, distill_weight=2.0)
    images = torch.randn(8, 3, 16, 16)
    embeddings = task(images)
    assert task._distance_from_start(images, embeddings, 8).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        task.model.head.embedding.weight.mul_(-1.0)
    moved = task._distance_from_start(images, task(images), 8).item()
    start = task.start_point()
    expected = 0.5 * start.l2_sp(task.model).item() + 2.0 * start.distillation(task.model, images, task(images)).item()
    assert moved > 0 and moved == pytest.approx(expected, rel=1e-5)
    checkpoint: dict[str, Any] = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    resumed = EmbeddingTask(num_classes=4, backbone="tiny", embedding_dim=8, dropout=0.0, l2_sp_weight=0.5,
                            distill_weight=2.0)  # fmt: skip
    resumed.load_state_dict(checkpoint["state_dict"])
    resumed.start_point().load_state_dict(checkpoint["facetorch_start_point"])
    assert resumed._distance_from_start(images, resumed(images), 8).item() == pytest.approx(moved, rel=1e-5)
    with pytest.raises(ValueError, match=r"model.l2_sp_weight must be a number >= 0"):
        EmbeddingTask(backbone="tiny", l2_sp_weight=-1.0)


def test_the_dlib_config_loads_with_the_start_kept_and_a_regulariser_on(identity_dir: Path, in_tmp: Path) -> None:
    config = REPO / "configs" / "embedding_dlib.yaml"
    loaded = cli.TrainCLI(args=["--config", str(config), "--data.root", str(identity_dir), "--data.align=null",
                                "--model.init_args.pretrained=false"], run=False)  # fmt: skip
    callback = loaded.trainer.checkpoint_callback
    assert isinstance(callback, KeepStartCheckpoint) and callback.validate_at_start
    assert (callback.monitor, callback.mode, callback.noise) == ("val_pair_acc", "max", "val_pair_acc_std")
    task = loaded.model
    assert isinstance(task, EmbeddingTask) and (task.l2_sp_weight > 0 or task.distill_weight > 0)
    written = yaml.safe_load(config.read_text())["model"]["init_args"]
    assert (task.l2_sp_weight, task.distill_weight) == (written["l2_sp_weight"], written["distill_weight"])


def test_a_config_with_the_callback_still_evaluates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate.py builds its trainer without checkpointing: the config's KeepStartCheckpoint is left out, not refused."""
    monkeypatch.chdir(tmp_path)
    people = write_identity_folders(tmp_path / "people")
    report = cli.evaluate(["--config", TINY, "--data.root", str(people)])
    assert report["num_samples"] > 0 and 0 <= report["pair_acc"] <= 1


def test_a_fine_tuned_embedding_evaluates_on_people_it_never_saw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification is on other people: the checkpoint's training identities do not restrict --data.root."""
    monkeypatch.chdir(tmp_path)
    cli.train(["--config", TINY, "--data.root", str(write_identity_folders(tmp_path / "people"))])
    best = tmp_path / "runs" / "embedding_finetune_tiny" / "version_0" / "checkpoints" / "best.ckpt"
    others = write_identity_folders(tmp_path / "others", identities=4, seed=1)
    for folder in sorted(others.iterdir()):
        if folder.is_dir():
            folder.rename(folder.with_name(f"stranger_{folder.name}"))
    report = cli.evaluate(["--config", TINY, "--ckpt_path", str(best), "--data.root", str(others)])
    assert report["num_samples"] > 0 and 0 <= report["pair_acc"] <= 1

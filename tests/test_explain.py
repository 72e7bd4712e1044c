"""Explanations: the explain tool on a trained tiny checkpoint, the library behind it, GradCAMLogger."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor, nn

from facetorch import cli
from facetorch.callbacks.gradcam_logger import GradCAMLogger
from facetorch.cli import explain as explain_cli
from facetorch.data import FaceDataModule
from facetorch.explain.gradcam import ClassTarget, GuidedGradCAM, normalize_guided
from facetorch.explain.render import (
    explain_batch,
    load_images,
    to_display_image,
    write_explanations,
)
from facetorch.inference.checkpoint import CheckpointError
from facetorch.tasks import FaceClassifierTask, FaceTask
from tests.conftest import REPO, image_size_and_mode

TINY_FACE_VGG = str(REPO / "tests" / "configs" / "face_vgg.yaml")
SUFFIXES = {"gradcam": "_gradcam_overlay.png", "guided": "_guided.png", "guided_gradcam": "_guided_gradcam.png"}
IMAGE_SIZE = (24, 16)  # (H, W) of the tiny config


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoints: dict[str, tuple[Path, Path]]) -> Path:
    """A FaceVGG checkpoint trained for one epoch on generated crops (the session's, shared by the tool tests)."""
    return tiny_checkpoints["face_vgg.yaml"][0]


def explain(checkpoint: Path, *args: str) -> list[Path]:
    return explain_cli.explain(["--config", TINY_FACE_VGG, "--ckpt_path", str(checkpoint),
                             "--trainer.enable_progress_bar=false", *args])  # fmt: skip


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# tools/explain.py
# --------------------------------------------------------------------------------------------


def test_all_methods_for_a_folder(checkpoint: Path, face_crops_dir: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    out = in_tmp / "out"
    written = explain(checkpoint, "--images", str(face_crops_dir), "--data.root", str(face_crops_dir), "--output", str(out))
    sources = sorted(p for p in face_crops_dir.rglob("*") if p.is_file())
    assert len(sources) == 24
    expected = {out / "grid.png"}
    for source in sources:  # sub-folders are kept: face/f000..., non_face/n000...
        relative = source.relative_to(face_crops_dir).with_suffix("")
        expected |= {out / f"{relative}{suffix}" for suffix in SUFFIXES.values()}
    assert set(written) == expected == files_under(out)  # and no temporary file left behind
    assert image_size_and_mode(out / "face" / "f000_gradcam_overlay.png") == (IMAGE_SIZE[::-1], "RGB")
    assert image_size_and_mode(out / "face" / "f000_guided.png")[1] == "L"  # greyscale model, greyscale map
    assert image_size_and_mode(out / "grid.png")[0][1] > 16 * IMAGE_SIZE[0]  # 16 rows at most, each readable
    printed = capsys.readouterr().out.splitlines()
    assert "24 *_gradcam_overlay.png" in printed and "1 grid.png" in printed
    assert printed[-1] == f"Wrote {len(expected)} files to {out.resolve()}"
    assert not (in_tmp / "runs").exists()  # no training run, no logger folder


@pytest.mark.parametrize("method", ["gradcam", "guided", "guided_gradcam", "all"])
def test_each_method_for_a_single_file(method: str, checkpoint: Path, face_crops_dir: Path, in_tmp: Path) -> None:
    out = in_tmp / "out"
    # No --data.root: the built-in face_crops data is enough (only the transform is used).
    written = explain(checkpoint, "--images", str(face_crops_dir / "face" / "f003.png"), "--method", method,
                      "--output", str(out))  # fmt: skip
    methods = list(SUFFIXES) if method == "all" else [method]
    assert set(written) == {out / "grid.png", *(out / f"f003{SUFFIXES[m]}" for m in methods)} == files_under(out)


def test_target_by_name_or_index_and_a_bad_target(checkpoint: Path, face_crops_dir: Path, in_tmp: Path) -> None:
    image = str(face_crops_dir / "face" / "f000.png")
    for target in ("face", "0", "predicted"):
        out = in_tmp / f"out_{target}"
        explain(checkpoint, "--images", image, "--target", target, "--output", str(out))
        assert (out / "grid.png").is_file()
    with pytest.raises(ValueError, match="non_face, face.*got 'smile'"):
        explain(checkpoint, "--images", image, "--target", "smile", "--output", str(in_tmp / "bad"))
    assert not (in_tmp / "bad").exists()


def test_non_empty_output_is_refused_without_overwrite(checkpoint: Path, face_crops_dir: Path, in_tmp: Path) -> None:
    out = in_tmp / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "f000_gradcam_overlay.png").write_bytes(b"old")
    args = ["--images", str(face_crops_dir / "face" / "f000.png"), "--output", str(out)]
    with pytest.raises(FileExistsError, match="not empty.*--overwrite"):
        explain(checkpoint, *args)
    assert files_under(out) == {out / "notes.txt", out / "f000_gradcam_overlay.png"}
    assert (out / "f000_gradcam_overlay.png").read_bytes() == b"old"
    explain(checkpoint, *args, "--overwrite")
    assert (out / "notes.txt").read_text() == "keep me"  # other files are kept
    assert image_size_and_mode(out / "f000_gradcam_overlay.png")[0] == IMAGE_SIZE[::-1]


def test_unreadable_image_is_skipped_with_a_notice(checkpoint: Path, face_crops_dir: Path, in_tmp: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    folder = in_tmp / "mixed"
    folder.mkdir()
    for name in ("f000.png", "f001.png"):
        (folder / name).write_bytes((face_crops_dir / "face" / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("not an image, ignored")
    out = in_tmp / "out"
    explain(checkpoint, "--images", str(folder), "--method", "gradcam", "--output", str(out))
    assert any(re.search(r"skipped 1 unreadable image.*broken\.jpg", r.getMessage()) for r in caplog.records)
    assert files_under(out) == {out / "grid.png", out / "f000_gradcam_overlay.png", out / "f001_gradcam_overlay.png"}


def test_reference_needs_an_embedding_task(checkpoint: Path, face_crops_dir: Path, in_tmp: Path) -> None:
    image = str(face_crops_dir / "face" / "f000.png")
    with pytest.raises(ValueError, match="--reference needs an embedding task.*FaceClassifierTask"):
        explain(checkpoint, "--images", image, "--reference", image, "--output", str(in_tmp / "out"))
    assert not (in_tmp / "out").exists()


def test_the_checkpoint_not_the_config_decides_the_model(checkpoint: Path, face_crops_dir: Path, in_tmp: Path) -> None:
    # The config asks for another dense width; the weights and their shapes come from the checkpoint.
    written = explain(checkpoint, "--images", str(face_crops_dir / "face" / "f000.png"), "--model.init_args.hidden=8",
                      "--method", "gradcam", "--output", str(in_tmp / "o"))  # fmt: skip
    assert (in_tmp / "o" / "f000_gradcam_overlay.png") in written


def test_an_unreadable_checkpoint_is_a_clear_error(face_crops_dir: Path, in_tmp: Path) -> None:
    broken = in_tmp / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="broken.ckpt.*not a readable facetorch checkpoint"):
        explain(broken, "--images", str(face_crops_dir), "--output", str(in_tmp / "o"))


# --------------------------------------------------------------------------------------------
# Library
# --------------------------------------------------------------------------------------------


class TinyEmbedder(nn.Module):
    """Stands in for an embedding task: L2-normalised embeddings, a named CAM layer."""

    embedding_dim = 8
    cam_layer = "features.1"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, self.embedding_dim))

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.head(self.features(images)), dim=1)


def tiny_task() -> FaceClassifierTask:
    torch.manual_seed(0)
    return FaceClassifierTask(class_names=["non_face", "face"], cfg=[4, "M", 8], hidden=8, dropout=0.5)


def test_reference_explains_similarity_for_an_embedding_model(face_crops_dir: Path, tmp_path: Path) -> None:
    spec = FaceDataModule(image_size=IMAGE_SIZE).input_spec  # how the images are fed
    images = load_images(face_crops_dir / "face", channels=1)[:3]
    written = write_explanations(TinyEmbedder().eval(), spec, images, ["gradcam"], None, tmp_path / "out",
                                 reference=face_crops_dir / "face" / "f005.png")  # fmt: skip
    assert [p.name for p in written] == ["f000_gradcam_overlay.png", "f001_gradcam_overlay.png",
                                         "f002_gradcam_overlay.png", "grid.png"]  # fmt: skip


def test_display_image_is_the_resized_input_exactly() -> None:
    data = FaceDataModule(image_size=(20, 12), channels=3, normalization="imagenet")
    picture = np.random.default_rng(0).integers(0, 256, (50, 37, 3), dtype=np.uint8)
    resized = A.Resize(20, 12, interpolation=cv2.INTER_AREA)(image=picture)["image"]
    shown = to_display_image(data.transform(train=False)(picture), data.mean, data.std)
    np.testing.assert_array_equal(shown, resized)


def test_explain_batch_shapes_ranges_and_guided_gradcam() -> None:
    task = tiny_task()
    images = torch.randn(3, 1, *IMAGE_SIZE)
    heat = explain_batch(task, images, "gradcam", ClassTarget(1))
    guided = explain_batch(task, images, "guided", ClassTarget(1))
    combined = explain_batch(task, images, "guided_gradcam", ClassTarget(1))
    assert heat.shape == (3, *IMAGE_SIZE) and 0 <= heat.min() and heat.max() <= 1
    assert guided.shape == combined.shape == (3, *IMAGE_SIZE, 1)
    with GuidedGradCAM(task, task.cam_layer) as reference:  # the two-pass shortcut matches the class
        expected = normalize_guided(reference(images, ClassTarget(1))).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(combined, expected, atol=1e-6)
    with pytest.raises(ValueError, match="Expected a method in"):
        explain_batch(task, images, "saliency", None)  # type: ignore[arg-type]


def test_equal_stems_do_not_overwrite_each_other(face_crops_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "same"
    folder.mkdir()
    (folder / "a.png").write_bytes((face_crops_dir / "face" / "f000.png").read_bytes())
    (folder / "a.jpg").write_bytes((face_crops_dir / "non_face" / "n000.jpg").read_bytes())
    written = write_explanations(tiny_task(), FaceDataModule(image_size=IMAGE_SIZE).input_spec, load_images(folder, 1),
                                 ["guided"], None, tmp_path / "out")  # fmt: skip
    assert sorted(p.name for p in written) == ["a_2_guided.png", "a_guided.png", "grid.png"]


def test_missing_or_empty_image_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_images(tmp_path / "nowhere", 1)
    with pytest.raises(ValueError, match="No readable image"):
        load_images(tmp_path, 1)


# --------------------------------------------------------------------------------------------
# GradCAMLogger
# --------------------------------------------------------------------------------------------


def test_callback_from_yaml_writes_a_grid_per_epoch(face_crops_dir: Path, in_tmp: Path) -> None:
    extra = in_tmp / "callbacks.yaml"
    extra.write_text(json.dumps({"trainer": {"callbacks": [
        {"class_path": "facetorch.callbacks.GradCAMLogger", "init_args": {"every_n_epochs": 1, "num_images": 4}},
    ]}}))  # fmt: skip  (JSON is YAML)
    cli.train(["--config", TINY_FACE_VGG, "--config", str(extra), "--data.root", str(face_crops_dir),
               "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])  # fmt: skip
    folder = in_tmp / "runs" / "face_vgg_tiny" / "version_0" / "gradcam"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_000.png", "epoch_001.png"]


def test_callback_on_the_command_line_writes_nothing_under_fast_dev_run(face_crops_dir: Path, in_tmp: Path) -> None:
    cli.train(["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir), "--trainer.fast_dev_run=1",
               "--trainer.callbacks+=facetorch.callbacks.GradCAMLogger", "--trainer.callbacks.every_n_epochs=1",
               "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert not list(in_tmp.rglob("*.png"))


def fake_trainer(data: FaceDataModule, epoch: int = 0, max_epochs: int = 3, **overrides: object) -> SimpleNamespace:
    """Just what GradCAMLogger reads from a Trainer, in the middle of fitting."""
    fields = {"sanity_checking": False, "is_global_zero": True, "state": SimpleNamespace(fn=TrainerFn.FITTING),
              "current_epoch": epoch, "max_epochs": max_epochs, "datamodule": data, "val_dataloaders": None}  # fmt: skip
    return SimpleNamespace(**{**fields, **overrides})


@pytest.fixture
def tiny_setup(face_crops_dir: Path, tmp_path: Path) -> Iterator[tuple[FaceClassifierTask, FaceDataModule]]:
    data = FaceDataModule(root=str(face_crops_dir), image_size=IMAGE_SIZE, val_fraction=0.25, test_fraction=0.25)
    data.setup("fit")
    task = tiny_task()
    task.artifact_path = lambda name: tmp_path / "run" / name  # type: ignore[method-assign]  # no trainer here
    yield task, data


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam"])
def test_callback_hook_under_inference_mode_leaves_the_module_as_it_was(
    method: str, tiny_setup: tuple[FaceClassifierTask, FaceDataModule], tmp_path: Path
) -> None:
    task, data = tiny_setup
    task.train()
    task.model.head[3].eval()  # a module left in eval mode on purpose must stay so
    for p in task.parameters():
        p.grad = torch.randn_like(p)
    grads = [p.grad.clone() for p in task.parameters()]
    state = {k: v.clone() for k, v in task.state_dict().items()}  # BatchNorm running stats included
    flags = [m.training for m in task.modules()]
    rng = torch.get_rng_state()
    logger = GradCAMLogger(every_n_epochs=1, num_images=5, method=method)
    logger.setup(fake_trainer(data), task, "fit")  # type: ignore[arg-type]
    with torch.inference_mode():  # as in Lightning's validation loop
        logger.on_validation_epoch_end(fake_trainer(data, epoch=4, max_epochs=10), task)  # type: ignore[arg-type]
    grid = tmp_path / "run" / "gradcam" / "epoch_004.png"
    assert grid.is_file() and image_size_and_mode(grid)[0][1] > 5 * IMAGE_SIZE[0]
    assert [m.training for m in task.modules()] == flags
    assert all(torch.equal(p.grad, g) for p, g in zip(task.parameters(), grads))
    assert all(torch.equal(v, state[k]) for k, v in task.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert logger._images is not None and len(logger._images) == 5 and not logger._images.is_inference()


def test_callback_schedule(tiny_setup: tuple[FaceClassifierTask, FaceDataModule], tmp_path: Path) -> None:
    task, data = tiny_setup
    logger = GradCAMLogger(every_n_epochs=2, num_images=2)
    for epoch in range(5):
        logger.on_validation_epoch_end(fake_trainer(data, epoch=epoch, max_epochs=5), task)  # type: ignore[arg-type]
    for skipped in ({"sanity_checking": True}, {"is_global_zero": False},
                    {"state": SimpleNamespace(fn=TrainerFn.VALIDATING)}):  # fmt: skip
        logger.on_validation_epoch_end(fake_trainer(data, epoch=7, **skipped), task)  # type: ignore[arg-type]
    written = sorted(p.name for p in (tmp_path / "run" / "gradcam").iterdir())
    assert written == ["epoch_001.png", "epoch_003.png", "epoch_004.png"]  # every 2nd, and the last


def test_callback_needs_a_task_with_a_cam_layer() -> None:
    with pytest.raises(TypeError, match="GradCAMLogger needs a facetorch task"):
        GradCAMLogger().setup(SimpleNamespace(), FaceTask(), "fit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every_n_epochs must be at least 1"):
        GradCAMLogger(every_n_epochs=0)

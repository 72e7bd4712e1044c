"""The benchmark's tasks: each builds a :class:`~facetorch.bench.setup.BenchmarkSetup` from its config.

A task, the plain model inside it with a plain loss (what a hand-written PyTorch loop would train),
and fixed batches drawn once from the config's data, so that every variant sees the same images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from facetorch import io
from facetorch.bench.setup import BenchmarkSetup
from facetorch.data import FaceDataModule
from facetorch.tasks import EmbeddingTask, FaceClassifierTask, FaceTask, IdentityTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _fixed_batches(data: FaceDataModule, batch_size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` augmented training batches, made once so every variant sees the same tensors."""
    data.batch_size = batch_size
    data.setup("fit")
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    while len(batches) < count:
        for batch in data.train_dataloader():
            batches.append((batch[0].clone(), _clone(batch[1])))
            if len(batches) == count:
                break
    return batches


def _clone(target: Any) -> Any:
    """A copy of a batch's targets: a tensor, or a dict of tensors (the detector's label and box)."""
    return {key: value.clone() for key, value in target.items()} if isinstance(target, dict) else target.clone()


def config_path(config: str | Path) -> Path:
    """A config file: a path as given, else a name in ``configs/``."""
    path = Path(config)
    if path.is_file():
        return path
    if (CONFIGS / path.name).is_file():
        return CONFIGS / path.name
    raise FileNotFoundError(f"--config {str(config)!r} does not exist (expected a YAML file, e.g. configs/embedding_dlib.yaml)")


def config_section(config: str | Path, section: str) -> dict[str, Any]:
    """``init_args`` of the model (or the data section) of a YAML config, to benchmark its defaults."""
    values = io.read_config(config_path(config)).get(section)
    if not isinstance(values, dict):
        raise ValueError(f"--config {str(config)!r}: its {section} section is {'missing' if values is None else 'not a mapping'}")
    return dict(values.get("init_args", values)) if section == "model" else dict(values)


def config_callbacks(config: str | Path) -> list[pl.Callback]:
    """The config's fine-tuning callbacks (:class:`~facetorch.callbacks.FreezeUnfreeze`), which change what trains."""
    from facetorch.callbacks import FreezeUnfreeze

    trainer = io.read_config(config_path(config)).get("trainer") or {}
    callbacks: list[pl.Callback] = []
    for spec in trainer.get("callbacks") or []:
        if isinstance(spec, dict) and str(spec.get("class_path", "")).endswith("FreezeUnfreeze"):
            callbacks.append(FreezeUnfreeze(**(spec.get("init_args") or {})))
    return callbacks


def _cross_entropy(model: nn.Module, batch: Any) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(model(images).float(), labels)


def _config_data(config: str | Path, data_root: Optional[str]) -> FaceDataModule:
    """The DataModule of ``configs/<config>``'s data section (augmentations included) on ``data_root``."""
    from facetorch.data.box_transforms import BoxAugmentation
    from facetorch.data.transforms import Augmentation

    data_args = config_section(config, "data")
    data_args.pop("batch_size", None)  # the benchmark's --batch-size decides
    augmentation = data_args.pop("augmentation", {})
    box_augmentation = data_args.pop("box_augmentation", {})
    if box_augmentation is not None and "negative_scale" in box_augmentation:
        box_augmentation["negative_scale"] = tuple(box_augmentation["negative_scale"])
    for key in ("center_crop", "align_box"):
        if data_args.get(key) is not None:
            data_args[key] = tuple(data_args[key])
    return FaceDataModule(
        root=data_root,
        **{**data_args, "image_size": tuple(data_args["image_size"])},
        augmentation=Augmentation(**augmentation) if augmentation is not None else None,
        box_augmentation=BoxAugmentation(**box_augmentation) if box_augmentation is not None else None,
    )


def config_setup(
    name: str,
    config: str | Path,
    task_class: type[FaceTask],
    batch_size: int,
    steps: int,
    data_root: Optional[str],
    plain_model: Callable[[pl.LightningModule], nn.Module] = lambda task: task.model,
    plain_loss: Callable[[nn.Module, Any], torch.Tensor] = _cross_entropy,
) -> BenchmarkSetup:
    """A task and its data, with the model and data settings of ``configs/<config>``.

    The plain loop trains ``plain_model(task)`` with ``plain_loss`` (by default the model and
    cross-entropy).
    """
    model_args = config_section(config, "model")
    data = _config_data(config, data_root)
    model_args.update(num_classes=data.num_classes, class_names=data.class_names, in_channels=data.channels,
                      scheduler="none")

    if data.train_batches == "pk":  # P x K batches of --batch-size images
        data.identities_per_batch = max(2, batch_size // data.images_per_identity)

    def make_task(channels_last: bool, compile: bool = False) -> FaceTask:
        return task_class(**{**model_args, "channels_last": channels_last, "compile": compile})

    return BenchmarkSetup(name, make_task, plain_model, plain_loss, _fixed_batches(data, batch_size, steps), data,
                          make_callbacks=lambda: config_callbacks(config))


def face_vgg_setup(batch_size: int, steps: int, data_root: Optional[str], config: Optional[str] = None) -> BenchmarkSetup:
    """FaceVGG as in ``configs/face_vgg.yaml`` (built-in data when no root is given)."""
    return config_setup("face_vgg", config or "face_vgg.yaml", FaceClassifierTask, batch_size, steps, data_root)


def identity_setup(batch_size: int, steps: int, data_root: Optional[str], config: Optional[str] = None) -> BenchmarkSetup:
    """IdentityTask (ResNet50) as in ``configs/identity_resnet50.yaml``, on a folder per person (e.g. ORL)."""
    if data_root is None:
        raise ValueError("--task identity needs --data-root DIR: a folder per person (e.g. ../shared/data/orl_faces)")
    return config_setup("identity", config or "identity_resnet50.yaml", IdentityTask, batch_size, steps, data_root)


class _PlainEmbedding(nn.Module):
    """The embedding network and the classification head the triplet config trains beside it."""

    def __init__(self, task: EmbeddingTask) -> None:
        super().__init__()
        self.net, self.classifier = task.model, task.classifier
        self.triplet, self.classification_weight = task.triplet, task.classification_weight

    def loss(self, batch: Any) -> torch.Tensor:
        images, labels = batch
        embeddings = self.net(images)
        loss = self.triplet(embeddings, labels)
        if self.classifier is not None and self.classification_weight > 0:
            loss = loss + self.classification_weight * F.cross_entropy(self.classifier(embeddings), labels)
        return loss


def embedding_setup(batch_size: int, steps: int, data_root: Optional[str], config: Optional[str] = None) -> BenchmarkSetup:
    """EmbeddingTask as in ``configs/embedding_triplet.yaml`` (or ``config``) on a folder per person (e.g. LFW DevTrain).

    ResNet18, P x K batches, triplet + classification loss; with ``configs/embedding_dlib.yaml``,
    fine-tuning dlib's pretrained network (its early stages frozen). Also times embedding faces.
    """
    if data_root is None:
        raise ValueError("--task embedding needs --data-root DIR: a folder per person (e.g. ../shared/data/lfw_devtrain/images)")
    setup = config_setup("embedding", config or "embedding_triplet.yaml", EmbeddingTask, batch_size, steps, data_root,
                         plain_model=_PlainEmbedding, plain_loss=lambda model, batch: model.loss(batch))
    return dataclasses.replace(setup, embedding_inference=True)


def _detection_loss(criterion: nn.Module) -> Callable[[nn.Module, Any], torch.Tensor]:
    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        images, target = batch
        logits, boxes = model(images)
        return criterion(logits, boxes, target["label"], target["box"])

    return loss


def detector_setup(batch_size: int, steps: int, data_root: Optional[str], config: Optional[str] = None) -> BenchmarkSetup:
    """FaceDetectorTask as in ``configs/detector_vgg16.yaml`` on a ``labelme`` folder (e.g. face_boxes_dev)."""
    from facetorch.tasks import FaceDetectorTask

    if data_root is None:
        raise ValueError("--task detector needs --data_root DIR: a labelme folder (e.g. ../shared/data/face_boxes_dev)")
    setup = config_setup("detector", config or "detector_vgg16.yaml", FaceDetectorTask, batch_size, steps, data_root)
    criterion = setup.make_task(False).criterion
    return dataclasses.replace(setup, plain_loss=_detection_loss(criterion), batch1_inference=True)


SETUPS: dict[str, Callable[[int, int, Optional[str], Optional[str]], BenchmarkSetup]] = {
    "detector": detector_setup,
    "face_vgg": face_vgg_setup,
    "identity": identity_setup,
    "embedding": embedding_setup,
}

"""Single-face detection: is there a face, and where (one box), from a ``labelme`` dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import cv2
import numpy as np
import torch
from torch import Tensor

from facetorch import evaluation, io, reports
from facetorch.boxes import mirrored_boxes, ordered_boxes
from facetorch.explain import gradcam
from facetorch.losses import BoxLossName, DetectionLoss, IoULossName
from facetorch.models.detector import DetectorBackbone, FaceDetector
from facetorch.ranges import check_values
from facetorch.tasks.base import MODEL_VALUES, FaceTask, dataset_order

DetectionBatch = tuple[Tensor, dict[str, Tensor]]
EXPLAIN_PARTS = ("score", "x1", "y1", "x2", "y2")
GREEN, RED = (0, 200, 0), (230, 0, 0)


class FaceDetectorTask(FaceTask):
    """One face per image: a face score (sigmoid) and a box, as in the original project.

    Batches are ``(images, {"label": (B,) float 0/1, "box": (B, 4) normalised x1, y1, x2, y2})``
    (:class:`facetorch.data.detection.FaceBoxDataset`). ``forward`` returns ``(logit (B, 1),
    boxes (B, 4))``. Validation and test report ``cls_acc``, ``mean_iou`` (over images with a face,
    a predicted "no face" counting 0), ``iou50_rate``, ``ap50`` and ``num_samples``
    (:func:`facetorch.evaluation.detection_summary`); test also writes ``detections.png``
    (predictions green, ground truth red).

    Args:
        num_classes: Linked from the data (2: ``no_face``, ``face``); kept for the CLI link.
        class_names: Linked from the data; kept in the checkpoint.
        in_channels: Image channels; linked from the data.
        backbone: ``vgg16``, ``vgg16_bn`` or ``tiny`` (tests).
        width: Conv width factor of VGG16 (1.0 is VGG16; pretrained weights need 1.0).
        pretrained: Start from ImageNet weights in torch hub's cache (torchvision downloads them when missing).
        weights_path: Start the backbone from this state dict file instead.
        hidden: Width of each head's dense layer (2048 in the original).
        dropout: Dropout in the heads.
        pool_grid: Max-pool grid before the heads (1: the original global max pool).
        box_loss: ``original``, ``giou``, ``diou`` or ``smooth_l1`` (see :class:`facetorch.losses.DetectionLoss`).
        box_weight: Weight of the localisation term.
        cls_weight: Weight of the BCE term (0.5 in the original).
        iou_loss: ``giou`` or ``diou`` added beside ``box_loss`` (a sum, ``iou_weight`` times it); ``null``: none.
        iou_weight: Weight of ``iou_loss``.
        train_scales: ``[min, max]`` side of the (square) training inputs: each batch is resized to a side drawn
            from this range (multiples of 8; boxes are fractions, so they stay); ``null``: ``data.image_size`` only.
        tta_flip: Evaluate and detect on each image and its mirror image, averaging the face logit and
            the box with the mirrored box of the flipped image.
        score_threshold: A face score at or above this predicts "face".
        sample_images: Test images drawn in ``detections.png``.
        **optimization: ``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``scheduler``,
            ``warmup_epochs``, ``plateau_factor``, ``plateau_patience``, ``channels_last``: see
            :class:`~facetorch.tasks.base.FaceTask` (flat config keys, e.g. ``--model.init_args.lr``).
    """

    monitor = "val_mean_iou"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int = 2,
        class_names: Optional[Sequence[str]] = None,
        in_channels: int = 3,
        backbone: DetectorBackbone = "vgg16",
        width: float = 1.0,
        pretrained: bool = False,
        weights_path: Optional[str] = None,
        hidden: int = 2048,
        dropout: float = 0.0,
        pool_grid: int = 1,
        box_loss: BoxLossName = "original",
        box_weight: float = 1.0,
        cls_weight: float = 0.5,
        iou_loss: Optional[IoULossName] = None,
        iou_weight: float = 1.0,
        train_scales: Optional[tuple[int, int]] = None,
        tta_flip: bool = False,
        score_threshold: float = 0.5,
        sample_images: int = 32,
        **optimization: Any,
    ) -> None:
        check_values("model", locals(), MODEL_VALUES)  # every number against its meaning, before any is used
        super().__init__(**optimization)
        if num_classes != 2:
            raise ValueError(f"model.num_classes must be 2 for FaceDetectorTask (no_face, face), got {num_classes}")
        self.save_hyperparameters()
        self.class_names = list(class_names) if class_names is not None else ["no_face", "face"]
        self.score_threshold = score_threshold
        self.sample_images = sample_images
        self.model = FaceDetector(backbone, in_channels, width, hidden, dropout, pool_grid, pretrained, weights_path)
        self.criterion = DetectionLoss(box_loss, box_weight, cls_weight, iou_loss, iou_weight)
        self.train_scales = check_train_scales(train_scales)
        self.tta_flip = tta_flip
        self._outputs: dict[str, list[dict[str, Tensor]]] = {"val": [], "test": []}
        self._samples: list[Tensor] = []
        self._predictions: list[dict[str, Any]] = []

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) images -> (face logit (B, 1), boxes (B, 4) in [0, 1])."""
        return self.run_model(images)

    def predict_boxes(self, images: Tensor, outputs: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        """``forward`` (or its ``outputs``, already computed); with ``tta_flip``, averaged with the mirror image's."""
        logits, boxes = outputs if outputs is not None else self(images)
        return flip_averaged(self, images, logits, boxes) if self.tta_flip else (logits, boxes)

    @torch.no_grad()
    def detect(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Face probability (B,) and box (B, 4) with sorted corners, in float32 (flip-averaged with ``tta_flip``)."""
        logits, boxes = self.predict_boxes(images)
        return torch.sigmoid(logits.float().reshape(-1)), ordered_boxes(boxes.float())

    # ------------------------------------------------------------------ steps
    def _loss(self, batch: DetectionBatch, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        images, target = batch
        logits, boxes = self(images)
        loss = self.criterion(logits, boxes, target["label"], target["box"])
        size = len(images)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=not on_step)
        for name, value in self.criterion.last.items():
            self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, batch_size=size, sync_dist=not on_step)
        return loss, logits, boxes

    def training_step(self, batch: DetectionBatch, batch_idx: int) -> Tensor:
        images, target = batch
        if self.train_scales is not None:  # one side per batch; the boxes are fractions of the input and stay
            side = 8 * int(torch.randint(-(-self.train_scales[0] // 8), self.train_scales[1] // 8 + 1, (1,)))
            images = torch.nn.functional.interpolate(images, size=(side, side), mode="bilinear", antialias=True)
        return self._loss((images, target), "train")[0]

    def _collect(self, batch: DetectionBatch, stage: str, logits: Tensor, boxes: Tensor) -> None:
        _, target = batch
        self._outputs[stage].append({
            "score": torch.sigmoid(logits.detach().float().reshape(-1)),
            "box": ordered_boxes(boxes.detach().float()),
            "label": target["label"].detach().float(),
            "true_box": target["box"].detach().float(),
        })  # fmt: skip

    def validation_step(self, batch: DetectionBatch, batch_idx: int) -> None:
        _, logits, boxes = self._loss(batch, "val")
        self._collect(batch, "val", *self.predict_boxes(batch[0], (logits, boxes)))

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def on_validation_epoch_end(self) -> None:
        summary = self.summary("val")
        for key in ("cls_acc", "mean_iou", "iou50_rate", "ap50"):
            self.log(f"val_{key}", float(np.nan_to_num(summary[key])), prog_bar=key == "mean_iou", rank_zero_only=True)

    def test_step(self, batch: DetectionBatch, batch_idx: int) -> None:
        images, target = batch
        logits, boxes = self(images)
        loss = self.criterion(logits, boxes, target["label"], target["box"])
        self._collect(batch, "test", *self.predict_boxes(images, (logits, boxes)))
        self.log("test_loss", loss, batch_size=len(images), sync_dist=True)
        if len(self._samples) < self.sample_images:
            self._samples.extend(images[: self.sample_images - len(self._samples)].detach().float().cpu())

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []
        self._samples = []

    def on_test_epoch_end(self) -> None:
        outputs = self._gathered("test")
        report = self.detection_report(outputs)
        for key in ("cls_acc", "mean_iou", "iou50_rate", "ap50"):
            self.log(f"test_{key}", float(np.nan_to_num(report[key])), rank_zero_only=True)
        self.write_detection_grid(outputs)
        self.write_report(report)

    # ------------------------------------------------------------------ metrics and plots
    def _gathered(self, stage: str) -> dict[str, np.ndarray]:
        parts = self._outputs[stage]
        self._outputs[stage] = []
        if not parts:
            return {key: np.zeros((0, 4) if "box" in key else (0,)) for key in ("score", "box", "label", "true_box")}
        merged = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
        if self.evaluation_is_distributed(stage):  # each rank holds its share: gather, drop the padding
            num_samples = len(self.trainer.datamodule.splits[stage])
            merged = {key: dataset_order(self.all_gather(value), num_samples) for key, value in merged.items()}
        return {key: value.cpu().numpy() for key, value in merged.items()}

    def summary(self, stage: str) -> dict[str, float]:
        """Detection metrics of the outputs collected in ``stage`` (then cleared)."""
        outputs = self._gathered(stage)
        if len(outputs["score"]) == 0:
            return {"cls_acc": float("nan"), "mean_iou": float("nan"), "iou50_rate": float("nan"), "ap50": float("nan")}
        return self.detection_report(outputs)

    def detection_report(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Flat final numbers: ``cls_acc``, ``mean_iou``, ``iou50_rate``, ``ap50``, ``num_samples``."""
        return evaluation.detection_summary(
            outputs["box"], outputs["score"], outputs["true_box"], outputs["label"] > 0.5, self.score_threshold
        )

    def write_detection_grid(self, outputs: dict[str, np.ndarray]) -> None:
        """``detections.png``: the first test images, predictions in green, ground truth in red."""
        path = self.artifact_path("detections.png")
        if path is None or not self._samples:
            return
        data = getattr(self.trainer, "datamodule", None)
        mean, std = (getattr(data, "mean", None), getattr(data, "std", None))
        pictures, titles = [], []
        for i, image in enumerate(self._samples):
            true_box = outputs["true_box"][i] if outputs["label"][i] > 0.5 else None
            face = outputs["score"][i] >= self.score_threshold
            pictures.append(draw_detection(image, outputs["box"][i] if face else None, true_box, mean, std))
            iou = float("nan")
            if true_box is not None:
                iou = evaluation.paired_iou(outputs["box"][i : i + 1], outputs["true_box"][i : i + 1])[0]
            score = outputs["score"][i]
            if true_box is None:
                titles.append(f"p={score:.2f} (no face)")
            else:  # a face the model missed counts IoU 0 in the metrics; its box is not drawn
                titles.append(f"p={score:.2f} IoU={iou:.2f}" if face else f"p={score:.2f} missed")
        reports.plot_image_grid(pictures, titles, path)
        self._samples = []

    # ------------------------------------------------------------------ explain
    @property
    def cam_layer(self) -> str:
        """Grad-CAM layer name, relative to the task (the backbone's last ReLU)."""
        return f"model.{self.model.cam_layer}"

    def explain_target(self, spec: Optional[str] = None) -> gradcam.DetectorTarget:
        """``None`` / ``predicted`` / ``score``: the face logit; ``x1``, ``y1``, ``x2``, ``y2``: a box coordinate."""
        if spec is None or spec in ("", "predicted", "score", "face"):
            return gradcam.DetectorTarget("score")
        if spec in EXPLAIN_PARTS:
            return gradcam.DetectorTarget(spec)  # type: ignore[arg-type]
        raise ValueError(f"--target for the detector must be one of {EXPLAIN_PARTS} (or 'predicted'), got {spec!r}")

    # ------------------------------------------------------------------ predict
    def on_predict_epoch_start(self) -> None:
        self._predictions = []

    def predict_step(self, batch: tuple[Tensor, list[str], list[str]], batch_idx: int) -> list[dict[str, Any]]:
        images, paths, errors = batch
        scores, boxes = self.detect(images)
        rows = []
        for path, error, score, box in zip(paths, errors, scores.tolist(), boxes.tolist()):
            face = not error and score >= self.score_threshold
            # Boxes in the photo's own pixels, as detect.py writes them (the model predicts [0, 1]).
            width, height = _image_size(path) if face else (0, 0)
            coords = [f"{v * scale:.1f}" if face else "" for v, scale in zip(box, (width, height, width, height))]
            rows.append({"file": path, "score": "" if error else f"{score:.6f}", "face": int(face) if not error else "",
                         **dict(zip(("x1", "y1", "x2", "y2"), coords)), "error": error})  # fmt: skip
        self._predictions.extend(rows)
        return rows

    def on_predict_epoch_end(self) -> None:
        path = self.artifact_path("predictions.csv")
        if path is not None:
            io.write_csv(path, ["file", "score", "face", "x1", "y1", "x2", "y2", "error"], self._predictions)


def flip_averaged(
    network: Callable[[Tensor], tuple[Tensor, Tensor]], images: Tensor, logits: Tensor, boxes: Tensor
) -> tuple[Tensor, Tensor]:
    """Face logits and boxes averaged with those of the mirror images; float32, sorted corners.

    ``logits`` and ``boxes`` are ``network``'s on ``images``, already computed; the flipped images'
    boxes are mirrored back before the average.
    """
    flipped_logits, flipped_boxes = network(torch.flip(images, dims=[-1]))
    boxes = (ordered_boxes(boxes.float()) + mirrored_boxes(ordered_boxes(flipped_boxes.float()))) / 2
    return (logits.float() + flipped_logits.float()) / 2, boxes


def check_train_scales(scales: Optional[Sequence[int]]) -> Optional[tuple[int, int]]:
    """``model.train_scales`` as ``(min, max)`` sides, or a ValueError that says what was expected."""
    if scales is None:
        return None
    if len(scales) != 2 or not 16 <= int(scales[0]) <= 8 * (int(scales[1]) // 8) <= 1024:
        raise ValueError(f"model.train_scales must be [min, max] input sides, 16 <= min <= max <= 1024 with a multiple of 8 "
                         f"between them, got {list(scales)}")
    return int(scales[0]), int(scales[1])


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def draw_detection(
    image: Tensor,
    box: Optional[np.ndarray],
    true_box: Optional[np.ndarray] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """A model input (C, H, W) as an RGB uint8 picture with the predicted box (green) and the true box (red).

    Boxes are normalised ``x1, y1, x2, y2``; ``None`` draws none.
    """
    picture = reports.to_display_image(image, mean, std)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=2)
    picture = np.ascontiguousarray(picture)
    height, width = picture.shape[:2]
    for corners, colour in ((true_box, RED), (box, GREEN)):
        if corners is None:
            continue
        x1, y1, x2, y2 = (np.asarray(corners, dtype=np.float64) * [width, height, width, height]).round().astype(int)
        cv2.rectangle(picture, (int(x1), int(y1)), (int(x2), int(y2)), colour, 1)
    return picture

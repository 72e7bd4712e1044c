"""Image classification tasks: face / non-face (FaceVGG) and the shared classification machinery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from sklearn.metrics import confusion_matrix
from torch import nn
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

from facetorch import evaluation, io, reports
from facetorch.explain import gradcam
from facetorch.models.vgg import ORIGINAL_CFG, FaceVGG, LayerSpec
from facetorch.ranges import check_values
from facetorch.tasks.base import MODEL_VALUES, FaceTask, dataset_order


class ClassificationTask(FaceTask):
    """Softmax classification with accuracy, ROC / AUC, confusion matrix and prediction CSVs.

    Subclasses build ``self.model`` (images (B, C, H, W) -> logits (B, num_classes)).
    """

    monitor = "val_acc"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int,
        class_names: Optional[Sequence[str]] = None,
        label_smoothing: float = 0.0,
        **optimization: Any,
    ) -> None:
        check_values("model", locals(), MODEL_VALUES)  # every number against its meaning, before any is used
        super().__init__(**optimization)
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be at least 2, got {num_classes}")
        names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"model.class_names has {len(names)} names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.class_names = names
        self.label_smoothing = label_smoothing
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_auc = BinaryAUROC() if num_classes == 2 else None
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._predictions: list[dict[str, Any]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.run_model(images)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self._loss(logits, labels)
        self.train_acc(logits.detach(), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc.update(logits, labels)  # update only: the epoch value is computed once, at the end
        self.log("val_loss", self._loss(logits, labels), prog_bar=True, batch_size=len(labels), sync_dist=True)
        self.log("val_acc", self.val_acc, prog_bar=True, batch_size=len(labels))
        # The sanity check sees only the first (one-class) batches of the unshuffled val set: no AUC.
        if self.val_auc is not None and not self.trainer.sanity_checking:
            self.val_auc.update(logits.float().softmax(dim=1)[:, 1], labels)
            self.log("val_auc", self.val_auc, batch_size=len(labels))

    # ------------------------------------------------------------------ test
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images).float()
        self._test_outputs.append((logits.detach(), labels.detach()))

    def on_test_epoch_start(self) -> None:
        self._test_outputs = []

    def _gather_test_outputs(self) -> tuple[np.ndarray, np.ndarray]:
        logits = torch.cat([o[0] for o in self._test_outputs])
        labels = torch.cat([o[1] for o in self._test_outputs])
        if self.evaluation_is_distributed("test"):  # each rank holds its share: gather, drop the padding
            num_samples = len(self.trainer.datamodule.splits["test"])
            logits = dataset_order(self.all_gather(logits), num_samples)
            labels = dataset_order(self.all_gather(labels), num_samples)
        return logits.softmax(dim=1).cpu().numpy(), labels.cpu().numpy()

    def on_test_epoch_end(self) -> None:
        probs, labels = self._gather_test_outputs()
        self._test_outputs = []
        report = self.classification_report(probs, labels)
        for key, value in report.items():
            if isinstance(value, float) and "/" not in key:  # per-class keys (precision/<class>) stay in metrics.json
                self.log(f"test_{key}", value, rank_zero_only=True)
        self.write_test_plots(probs, labels)
        self.write_report(report)

    def classification_report(self, probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Flat final numbers: ``acc``, ``auc``, ``top5_acc``, ``loss`` and ``num_samples``.

        ``auc`` is of the face score for 2 classes, macro one-vs-rest otherwise; ``top5_acc`` is
        there with more than 5 classes.
        """
        report: dict[str, Any] = {"acc": evaluation.accuracy(probs, labels)}
        if self.num_classes == 2:
            report["auc"] = evaluation.binary_auc(probs[:, 1], labels == 1)
        else:
            curves = evaluation.roc_curves(probs, labels, self.class_names)
            report["auc"] = float(curves["macro"].auc) if "macro" in curves else float("nan")
            report["top5_acc"] = evaluation.top_k_accuracy(probs, labels, k=5)
        present = np.unique(labels)
        if len(present) < 2 or not np.isfinite(report["auc"]):
            names = [self.class_names[int(k)] for k in present]
            rank_zero_warn(
                f"The test split holds {len(labels)} image(s) of {len(present)} class(es) ({', '.join(names[:5])}): "
                "AUC needs images of at least two classes, so it is reported as null. Give the split more images "
                "of each class (data.test_fraction, or a test/ folder with every class)"
            )
            report["auc"] = None
        log_probs = np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
        report["loss"] = float(-log_probs.mean())
        report["num_samples"] = int(len(labels))
        return report

    def write_test_plots(self, probs: np.ndarray, labels: np.ndarray) -> None:
        """ROC curves (per class, micro, macro) and the confusion matrix, as PNGs in the run folder."""
        roc_path = self.artifact_path("roc.png")
        if roc_path is None:
            return
        curves = evaluation.roc_curves(probs, labels, self.class_names)
        if self.num_classes > 10:  # one line per identity is unreadable; keep the averages
            curves = {k: v for k, v in curves.items() if k in ("micro", "macro")}
        reports.plot_roc_curves(curves, roc_path, title=f"ROC ({len(labels)} test images)")
        matrix = self.confusion_matrix(probs, labels)
        reports.plot_confusion_matrix(matrix, self.class_names, self.artifact_path("confusion_matrix.png"))

    def confusion_matrix(self, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Counts (num_classes, num_classes): true labels on rows, predicted labels on columns."""
        return confusion_matrix(labels, probs.argmax(axis=1), labels=np.arange(self.num_classes))

    # ------------------------------------------------------------------ explain
    def explain_target(self, spec: Optional[str] = None) -> gradcam.ClassTarget:
        """``None`` explains the predicted class; a class name or index explains that class's logit."""
        if spec is None or spec in ("", "predicted"):
            return gradcam.ClassTarget(None)
        if spec in self.class_names:
            return gradcam.ClassTarget(self.class_names.index(spec))
        if spec.isdigit() and int(spec) < self.num_classes:
            return gradcam.ClassTarget(int(spec))
        raise ValueError(
            f"--target must be 'predicted', a class index below {self.num_classes} or a class name "
            f"({', '.join(self.class_names[:10])}{', ...' if self.num_classes > 10 else ''}); got {spec!r}"
        )

    # ------------------------------------------------------------------ predict
    def on_predict_epoch_start(self) -> None:
        self._predictions = []

    def predict_step(self, batch: tuple[torch.Tensor, list[str], list[str]], batch_idx: int) -> list[dict[str, Any]]:
        images, paths, errors = batch
        probs = self(images).float().softmax(dim=1).cpu()
        k = min(5, self.num_classes)
        top_probs, top_ids = probs.topk(k, dim=1)
        rows = []
        for path, error, p, ids in zip(paths, errors, top_probs.tolist(), top_ids.tolist()):
            if error:
                rows.append({"file": path, "prediction": "", "probability": "", "top5": "", "error": error})
                continue
            top = ";".join(f"{self.class_names[i]}:{q:.4f}" for i, q in zip(ids, p))
            rows.append({"file": path, "prediction": self.class_names[ids[0]], "probability": f"{p[0]:.6f}",
                         "top5": top, "error": ""})  # fmt: skip
        self._predictions.extend(rows)
        return rows

    def on_predict_epoch_end(self) -> None:
        path = self.artifact_path("predictions.csv")
        if path is not None:
            io.write_csv(path, ["file", "prediction", "probability", "top5", "error"], self._predictions)


class FaceClassifierTask(ClassificationTask):
    """Face / non-face classification with :class:`~facetorch.models.FaceVGG`.

    Args:
        num_classes: Classes (2: ``non_face``, ``face``); linked from the data.
        class_names: Class names in label order; linked from the data.
        in_channels: Image channels; linked from the data.
        cfg: FaceVGG conv widths and ``"M"`` pools.
        hidden: Width of the dense layer.
        dropout: Dropout before the last layer.
        batch_norm: BatchNorm after every conv.
        label_smoothing: Label smoothing of the cross-entropy.
        input_norm: Standardise each image by its own mean and standard deviation before the
            first conv (dark and low-contrast crops look like well-lit ones).
        **optimization: ``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``scheduler``,
            ``warmup_epochs``, ``plateau_factor``, ``plateau_patience``, ``channels_last``: see
            :class:`~facetorch.tasks.base.FaceTask` (flat config keys, e.g. ``--model.init_args.lr``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        class_names: Optional[Sequence[str]] = None,
        in_channels: int = 1,
        cfg: Sequence[LayerSpec] = ORIGINAL_CFG,
        hidden: int = 64,
        dropout: float = 0.5,
        batch_norm: bool = True,
        label_smoothing: float = 0.0,
        input_norm: bool = False,
        **optimization: Any,
    ) -> None:
        check_values("model", locals(), MODEL_VALUES)  # every number against its meaning, before any is used
        super().__init__(
            num_classes=num_classes,
            class_names=class_names,
            label_smoothing=label_smoothing,
            **optimization,
        )
        self.save_hyperparameters()
        self.model: nn.Module = FaceVGG(
            num_classes, in_channels, list(cfg), hidden, dropout, batch_norm, input_norm=input_norm
        )

    @property
    def cam_layer(self) -> str:
        """Grad-CAM layer name, relative to the task (``model.features.N``)."""
        return f"model.{self.model.cam_layer}"

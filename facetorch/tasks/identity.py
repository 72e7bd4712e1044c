"""Identity classification: a backbone with the original project's head, trained on a folder per person.

The backbone is ResNet50 by default; the reports are those the original produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Optional

import numpy as np
from sklearn.metrics import classification_report as sklearn_report
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from facetorch import io, reports
from facetorch.data.datasets import FaceImageDataset
from facetorch.models.backbones import build_backbone
from facetorch.models.heads import BackboneClassifier, IdentityHead
from facetorch.ranges import check_values
from facetorch.tasks.base import MODEL_VALUES
from facetorch.tasks.classification import ClassificationTask


class IdentityTask(ClassificationTask):
    """Who is this? Softmax over the identities of an ``identity_folders`` dataset.

    ``configs/identity_resnet50_original.yaml`` holds the original project's recipe (Adamax at
    1e-3, learning rate halved when validation accuracy stalls, backbone frozen for the first
    epochs); ``configs/identity_resnet50.yaml`` holds the recipe that trains ResNet50 from
    scratch. Freezing the backbone is a callback: :class:`facetorch.callbacks.FreezeUnfreeze`.

    Args:
        num_classes: Number of identities; linked from the data.
        class_names: Identity names in label order; linked from the data (and so kept in the checkpoint).
        in_channels: Image channels; linked from the data.
        backbone: A name in :data:`facetorch.models.backbones.BACKBONES` (``resnet50``, ``resnet18``, ``tiny``,
            ``dlib_resnet``, ``openface_nn4_small2``) or ``timm:<model name>``.
        pretrained: Start from pretrained weights: ImageNet weights in torch hub's cache for the torchvision
            backbones (torchvision downloads them when missing), timm's own for ``timm:`` names; for
            ``dlib_resnet``, dlib's ``.dat`` (``configs/identity_dlib.yaml``, never downloaded).
        weights_path: Start the backbone from this file instead (a state dict, or dlib's ``.dat``).
        hidden: Width of the head's dense layer.
        dropout: Dropout before the last layer.
        label_smoothing: Label smoothing of the cross-entropy.
        monitor: Metric the best checkpoint and the plateau schedule follow: ``val_acc`` (as the
            original) or ``val_loss`` (a finer signal when the validation split is small and its
            accuracy saturates).
        sample_images: Test images shown in ``samples.png``.
        **optimization: ``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``scheduler``,
            ``warmup_epochs``, ``plateau_factor``, ``plateau_patience``, ``channels_last``: see
            :class:`~facetorch.tasks.base.FaceTask` (flat config keys, e.g. ``--model.init_args.lr``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        class_names: Optional[Sequence[str]] = None,
        in_channels: int = 3,
        backbone: str = "resnet50",
        pretrained: bool = False,
        weights_path: Optional[str] = None,
        hidden: int = 512,
        dropout: float = 0.5,
        label_smoothing: float = 0.0,
        monitor: Literal["val_acc", "val_loss"] = "val_acc",
        sample_images: int = 32,
        **optimization: Any,
    ) -> None:
        check_values("model", locals(), MODEL_VALUES)  # every number against its meaning, before any is used
        super().__init__(
            num_classes=num_classes,
            class_names=class_names,
            label_smoothing=label_smoothing,
            **optimization,
        )
        if monitor not in ("val_acc", "val_loss"):
            raise ValueError(f"model.monitor must be val_acc or val_loss, got {monitor!r}")
        self.save_hyperparameters()
        self.monitor = monitor
        self.monitor_mode = "max" if monitor == "val_acc" else "min"
        self.sample_images = sample_images
        features, width = build_backbone(backbone, in_channels, pretrained, weights_path)
        self.model: BackboneClassifier = BackboneClassifier(features, IdentityHead(width, num_classes, hidden, dropout))

    @property
    def backbone(self) -> nn.Module:
        """The feature extractor (what :class:`~facetorch.callbacks.freeze_unfreeze.FreezeUnfreeze` freezes)."""
        return self.model.backbone

    @property
    def cam_layer(self) -> str:
        """Grad-CAM layer name, relative to the task (``model.backbone.layer4`` for ResNets)."""
        return f"model.{self.model.cam_layer}"

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Only parameters that require grad: a frozen backbone joins the optimiser when unfrozen."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ test reports
    def classification_report(self, probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """The base numbers plus per-class precision, recall and F1 and their macro averages.

        Flat keys: ``precision/<class>``, ``recall/<class>``, ``f1/<class>``, ``precision_macro``, ...
        """
        report = super().classification_report(probs, labels)
        classes = np.arange(self.num_classes)
        preds = probs.argmax(axis=1)
        precision, recall, f1, _ = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            report[f"{name}_macro"] = float(np.mean(values))
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            report.update({f"{name}/{cls}": float(v) for cls, v in zip(self.class_names, values)})
        return report

    def write_test_plots(self, probs: np.ndarray, labels: np.ndarray) -> None:
        """ROC and confusion matrix (base class) plus the identity reports.

        ``classification_report.txt``, ``class_balance.png``, ``samples.png`` and
        ``learning_curves.png``.
        """
        super().write_test_plots(probs, labels)
        path = self.artifact_path("classification_report.txt")
        if path is None:
            return
        preds = probs.argmax(axis=1)
        text = sklearn_report(labels, preds, labels=np.arange(self.num_classes), target_names=self.class_names,
                              digits=4, zero_division=0)
        io.write_text(path, text)
        self._plot_learning_curves()
        data = getattr(self.trainer, "datamodule", None)
        if data is None or not hasattr(data, "splits"):
            return  # tested on plain dataloaders: no split to describe
        self._plot_class_balance(data.splits)
        if self.sample_images > 0 and self.trainer.world_size == 1 and len(data.splits["test"]) == len(labels):
            # one process: the outputs follow the test loader's order
            self._plot_samples(data, preds)

    def _plot_learning_curves(self) -> None:
        if not self.loggers:  # no run folder (evaluate.py --output): no training history to plot
            return
        for logger in self.loggers:  # flush what the CSV logger still buffers
            logger.save()
        series = reports.read_metrics_csv(self.run_dir / "metrics.csv")
        reports.plot_learning_curves(series, self.artifact_path("learning_curves.png"))

    def _plot_class_balance(self, splits: dict[str, Any]) -> None:
        counts = {name: np.bincount(np.asarray(index.labels, dtype=np.int64), minlength=self.num_classes)
                  for name, index in splits.items() if len(index)}
        reports.plot_class_balance(counts, self.class_names, self.artifact_path("class_balance.png"))

    def _plot_samples(self, data: Any, preds: np.ndarray) -> None:
        """Test images titled with the true name, and the prediction when it is wrong (errors first)."""
        index = data.splits["test"]
        raw = FaceImageDataset(index, transform=lambda image: image, channels=data.channels)  # decoded, full size
        wrong = [i for i in range(len(index)) if preds[i] != index.labels[i]]
        right = [i for i in range(len(index)) if preds[i] == index.labels[i]]
        chosen = (wrong + right[:: max(1, len(right) // max(1, self.sample_images))])[: self.sample_images]
        titles = []
        for i in chosen:
            true, pred = self.class_names[index.labels[i]], self.class_names[preds[i]]
            titles.append(true if true == pred else f"{true}\npred: {pred}")
        reports.plot_image_grid([raw.load(i) for i in chosen], titles, self.artifact_path("samples.png"))

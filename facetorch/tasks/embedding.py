"""Face embeddings: triplet or contrastive training, verification, and classifiers on embeddings."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facetorch import evaluation, io, reports
from facetorch.explain import gradcam
from facetorch.losses import ContrastiveLoss, PairDistance, TripletLoss, TripletMining
from facetorch.models.backbones import build_backbone
from facetorch.models.embedding import CosineClassifier, EmbeddingNet, backbone_embedding_layer
from facetorch.models.margin import MARGIN_DEFAULTS, MarginSoftmaxHead
from facetorch.models.start_point import StartPoint
from facetorch.ranges import check_values
from facetorch.tasks.base import MODEL_VALUES, FaceTask, dataset_order

MetricLoss = Literal["triplet", "contrastive", "arcface", "cosface"]
MARGIN_LOSSES = tuple(MARGIN_DEFAULTS)  # ("arcface", "cosface"): a softmax over identity centres
START_KEY = "facetorch_start_point"  # checkpoint key of the weights a regularised fine-tuning run started from



class Verification(NamedTuple):
    """One split verified: the metrics, each pair's cosine similarity and truth, the embeddings."""

    metrics: dict[str, float]
    scores: np.ndarray  # (M,) cosine similarity per pair
    same: np.ndarray  # (M,) bool
    embeddings: torch.Tensor  # (N, D) in dataset order


class EmbeddingTask(FaceTask):
    """An L2-normalised face embedding: the same person close, different people far apart.

    Training batches come from the DataModule's ``train_batches``: ``pk`` (images, labels) for the
    triplet loss, ``pairs`` (img1, img2, same, label1, label2) for the contrastive loss, ``random``
    or ``pk`` (images, labels) for the margin softmax losses (``arcface``, ``cosface``: one centre per
    training identity, see :class:`~facetorch.models.margin.MarginSoftmaxHead`). Under DDP the
    centres are sharded across ranks (Partial FC): each rank holds ``num_classes / world_size`` of
    them, and ``sample_rate`` < 1 uses only that share of each rank's centres per step (the batch's
    identities always); checkpoints hold the whole centre matrix, and evaluation, the gallery and
    export use the embedding network alone. An optional classification loss (a cosine softmax over
    the training identities) is added to the triplet or contrastive loss with
    ``classification_weight``. The original two-stage schedule: ``classify_epochs`` epochs of the
    classification loss alone, then the metric loss, with ``stage_two_trains: embedding`` training
    only the embedding layer (the backbone frozen, its BatchNorm statistics fixed).

    Validation verifies pairs drawn among the validation identities (people never trained on
    when ``data.split_by: identity``): ``val_pair_acc`` (10-fold), ``val_auc``, ``val_eer``. The
    best-accuracy cosine threshold of each validation is kept in the ``threshold`` buffer, so every
    checkpoint carries the threshold calibrated with it. Testing reports the verification keys
    (``pair_acc``, ``auc``, ``eer``, ``tar_at_far_*``, ``threshold``) on the test identities (or on
    ``data.pairs_file``), the accuracy at the calibrated
    threshold, and a linear SVM and 1-NN fit on half the images of each test identity.

    Args:
        num_classes: Identities of the data set (the classification head's size); linked from the data.
        class_names: Identity names; linked from the data.
        in_channels: Image channels; linked from the data.
        backbone: A name in :data:`facetorch.models.backbones.BACKBONES` (``dlib_resnet`` and
            ``openface_nn4_small2`` included) or ``timm:<model name>``.
        pretrained: Start from pretrained weights: ImageNet weights in torch hub's cache for the torchvision
            backbones (torchvision downloads them when missing), timm's own for ``timm:`` names; for
            ``dlib_resnet``, dlib's ``.dat`` from the installed ``face_recognition_models`` package (never downloaded).
        weights_path: Start the backbone from this file instead (a state dict; for ``dlib_resnet``, a
            ``dlib_face_recognition_resnet_model_v1.dat``; for ``openface_nn4_small2``: the Keras-OpenFace CSV
            folder, whose dense layer starts the embedding layer).
        embedding_dim: Length of the embedding.
        dropout: Dropout before the embedding layer.
        embedding_layer: ``new`` (a dense layer on the pooled features) or ``backbone``: the
            embedding layer the backbone was trained with, pretrained with it (``dlib_resnet``:
            dlib's 256 -> 128 layer without bias, so the embedding is dlib's descriptor scaled to
            unit length).
        loss: ``triplet`` (needs ``pk`` batches), ``contrastive`` (needs ``pairs`` batches), or the margin
            softmax ``arcface`` / ``cosface`` (``random`` or ``pk`` batches).
        margin: Triplet margin alpha on squared distances (the original: 0.1).
        mining: Triplet mining: ``batch_all``, ``batch_hard`` or ``semi_hard``.
        contrastive_margin: Contrastive margin, in units of ``contrastive_distance``.
        contrastive_distance: ``euclidean``, ``squared`` or ``mean_squared`` (the original).
        classification_weight: Weight of the classification loss beside the metric loss (0: off).
        classifier_scale: Logit scale of the cosine classifier.
        classify_epochs: Epochs of classification alone before the metric loss starts (stage one).
        stage_two_trains: ``all`` or ``embedding`` (only the embedding layer, as the original).
        flip_test: Embed each evaluation image and its mirror image and average (test-time flip).
        head_margin: Margin of ``arcface`` (radians, default 0.5) or ``cosface`` (default 0.35).
        head_scale: Logit scale s of the margin softmax.
        sample_rate: Share of each rank's identity centres in each step's softmax (Partial FC); 1: all.
        l2_sp_weight: Weight of L2-SP, ``sum((w - w0)^2)`` over the trained weights, ``w0`` where the run
            started (:class:`~facetorch.models.start_point.StartPoint`); 0: off.
        distill_weight: Weight of distillation to the starting network, ``mean(1 - cos(e, e0))`` of each
            training image's embedding and the frozen start's; 0: off. Both are logged (``train_l2_sp``,
            ``train_distill``) and kept towards the same start when a run resumes.
        **optimization: ``optimizer``, ``lr``, ``weight_decay``, ``momentum``, ``scheduler``,
            ``warmup_epochs``, ``plateau_factor``, ``plateau_patience``, ``channels_last``: see
            :class:`~facetorch.tasks.base.FaceTask` (flat config keys, e.g. ``--model.init_args.lr``).
    """

    monitor = "val_auc"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int = 2,
        class_names: Optional[Sequence[str]] = None,
        in_channels: int = 3,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights_path: Optional[str] = None,
        embedding_dim: int = 128,
        dropout: float = 0.2,
        embedding_layer: Literal["new", "backbone"] = "new",
        loss: MetricLoss = "triplet",
        margin: float = 0.2,
        mining: TripletMining = "semi_hard",
        contrastive_margin: float = 1.0,
        contrastive_distance: PairDistance = "euclidean",
        classification_weight: float = 0.0,
        classifier_scale: float = 16.0,
        classify_epochs: int = 0,
        stage_two_trains: Literal["all", "embedding"] = "all",
        flip_test: bool = True,
        head_margin: Optional[float] = None,
        head_scale: float = 64.0,
        sample_rate: float = 1.0,
        l2_sp_weight: float = 0.0,
        distill_weight: float = 0.0,
        **optimization: Any,
    ) -> None:
        check_values("model", locals(), MODEL_VALUES)  # every number against its meaning, before any is used
        super().__init__(**optimization)
        if loss not in ("triplet", "contrastive", *MARGIN_LOSSES):
            raise ValueError(f"model.loss must be one of triplet, contrastive, arcface, cosface; got {loss!r}")
        if loss in MARGIN_LOSSES and (classification_weight > 0 or classify_epochs > 0):
            raise ValueError(
                f"model.loss={loss} is itself a softmax over the identities: set model.classification_weight=0 "
                f"and model.classify_epochs=0 (got {classification_weight} and {classify_epochs})"
            )
        if (classify_epochs > 0 or classification_weight > 0) and num_classes < 2:
            raise ValueError(
                f"model.classify_epochs / classification_weight need at least 2 identities to classify, got {num_classes}"
            )
        if stage_two_trains not in ("all", "embedding"):
            raise ValueError(f"model.stage_two_trains must be 'all' or 'embedding', got {stage_two_trains!r}")
        if embedding_layer not in ("new", "backbone"):
            raise ValueError(f"model.embedding_layer must be 'new' or 'backbone', got {embedding_layer!r}")
        self.save_hyperparameters()
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        features, width = build_backbone(backbone, in_channels, pretrained, weights_path)
        layer = backbone_embedding_layer(backbone, pretrained, weights_path) if embedding_layer == "backbone" else None
        self.model = EmbeddingNet(features, width, embedding_dim, dropout, layer)
        self.embedding_dim = embedding_dim
        self.loss_name = loss
        self.triplet = TripletLoss(margin, mining)
        self.contrastive = ContrastiveLoss(contrastive_margin, contrastive_distance)
        self.classification_weight = classification_weight
        self.classify_epochs = classify_epochs
        self.stage_two_trains = stage_two_trains
        self.flip_test = flip_test
        needs_classifier = classification_weight > 0 or classify_epochs > 0
        self.classifier = CosineClassifier(embedding_dim, num_classes, classifier_scale) if needs_classifier else None
        # The margin head is built in setup("fit"), once the ranks are known, with only this rank's centres.
        self.margin_head: Optional[MarginSoftmaxHead] = None
        self.num_classes = num_classes
        self._head_seed = torch.initial_seed() % 2**31  # the same on every rank after seed_everything
        # Cosine similarity at or above which two faces are the same person; set at each validation.
        self.register_buffer("threshold", torch.tensor(float("nan")))
        self.l2_sp_weight = l2_sp_weight
        self.distill_weight = distill_weight
        self._start: Optional[StartPoint] = None
        self._eval_embeddings: list[torch.Tensor] = []

    @property
    def backbone(self) -> nn.Module:
        """The feature extractor (what :class:`~facetorch.callbacks.freeze_unfreeze.FreezeUnfreeze` freezes)."""
        return self.model.backbone

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, D) unit-length embeddings."""
        return self.run_model(images)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation embeddings (B, D): with ``flip_test``, of the image and its mirror, averaged."""
        embeddings = self(images)
        if self.flip_test:
            embeddings = F.normalize(embeddings + self(torch.flip(images, dims=[3])), dim=1)
        return embeddings

    # ------------------------------------------------------------------ training
    @property
    def in_classification_stage(self) -> bool:
        return self.current_epoch < self.classify_epochs

    def on_train_epoch_start(self) -> None:
        if self.in_classification_stage or self.stage_two_trains == "all":
            return
        # Stage two: only the embedding layer learns. Lightning sets train mode every epoch, so the
        # backbone's BatchNorm is put back to eval here each time.
        self.model.backbone.eval()
        self.model.backbone.requires_grad_(False)
        if self.classifier is not None and self.classification_weight <= 0:
            self.classifier.requires_grad_(False)

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.loss_name not in MARGIN_LOSSES or self.margin_head is not None:
            return
        world, rank = self.trainer.world_size, self.trainer.global_rank
        self.margin_head = MarginSoftmaxHead(
            self.embedding_dim, self.num_classes, self.loss_name, self.hparams.head_margin, self.hparams.head_scale,
            self.hparams.sample_rate, world_size=world, rank=rank, seed=self._head_seed,
        )  # fmt: skip
        if world > 1:
            # Each rank holds other centres, complete gradients included: DDP must neither broadcast nor average them.
            self._ddp_params_and_buffers_to_ignore = ["margin_head.weight"]

    def _classification_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("no classifier: set model.classification_weight or model.classify_epochs")
        return F.cross_entropy(self.classifier(embeddings), labels)

    def _unpack(self, batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Training batch -> (images, embeddings, labels, same); ``same`` only for pair batches."""
        if self.loss_name != "contrastive":
            if len(batch) != 2:
                wanted = "pk" if self.loss_name == "triplet" else "random or pk"
                raise ValueError(
                    f"model.loss={self.loss_name} expects (images, labels) batches: set data.train_batches: {wanted}; "
                    f"got a batch of {len(batch)} items"
                )
            images, labels = batch
            return images, self(images), labels, None
        if len(batch) != 5:
            raise ValueError(
                "model.loss=contrastive expects (img1, img2, same, label1, label2) batches: set "
                f"data.train_batches: pairs; got a batch of {len(batch)} items"
            )
        x1, x2, same, label1, label2 = batch
        images = torch.cat([x1, x2])
        return images, self(images), torch.cat([label1, label2]), same  # one forward for both halves: (2B, D)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        images, embeddings, labels, same = self._unpack(batch)
        loss = self._task_loss(embeddings, labels, same)
        loss = loss + self._distance_from_start(images, embeddings, len(labels))
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def _task_loss(self, embeddings: torch.Tensor, labels: torch.Tensor, same: Optional[torch.Tensor]) -> torch.Tensor:
        """The loss of the stage: classification, margin softmax, or triplet / contrastive (+ classification)."""
        batch_size = len(labels)
        if self.in_classification_stage:
            return self._classification_loss(embeddings, labels)
        if self.loss_name in MARGIN_LOSSES:
            if self.margin_head is None:
                raise RuntimeError("the margin head is built in setup('fit'); train the task through a Trainer")
            metric_loss = self.margin_head(embeddings, labels)
            self.log("train_head_accuracy", self.margin_head.last_stats["accuracy"], on_step=False, on_epoch=True,
                     batch_size=batch_size)  # fmt: skip
            # centres held by this rank (rank 0's value is what the CSV shows): num_classes / world_size
            self.log("train_head_centres", float(len(self.margin_head.weight)), on_step=False, on_epoch=True,
                     batch_size=batch_size)  # fmt: skip
            self.log(f"train_{self.loss_name}_loss", metric_loss, on_step=False, on_epoch=True, batch_size=batch_size)
            return metric_loss
        if same is None:
            metric_loss = self.triplet(embeddings, labels)
            stats = self.triplet.last_stats
        else:
            half = len(embeddings) // 2
            metric_loss = self.contrastive(embeddings[:half], embeddings[half:], same)
            stats = self.contrastive.last_stats
        loss = metric_loss
        if self.classification_weight > 0:
            loss = loss + self.classification_weight * self._classification_loss(embeddings, labels)
        self.log(f"train_{self.loss_name}_loss", metric_loss, on_step=False, on_epoch=True, batch_size=batch_size)
        self.log("train_active_fraction", stats["active_fraction"], on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def start_point(self) -> StartPoint:
        """The weights this run started from (taken at the first training step unless a checkpoint restored them)."""
        if self._start is None:
            self._start = StartPoint(self.model, keep_network=self.distill_weight > 0)
        return self._start

    def _distance_from_start(self, images: torch.Tensor, embeddings: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``l2_sp_weight * sum((w - w0)^2) + distill_weight * mean(1 - cos(e, e0))``: zero at the start."""
        total = torch.zeros((), device=embeddings.device)
        if self.l2_sp_weight > 0:
            penalty = self.start_point().l2_sp(self.model)
            self.log("train_l2_sp", penalty, on_step=False, on_epoch=True, batch_size=batch_size)
            total = total + self.l2_sp_weight * penalty
        if self.distill_weight > 0:
            distill = self.start_point().distillation(self.model, self.to_memory_format(images), embeddings)
            self.log("train_distill", distill, on_step=False, on_epoch=True, batch_size=batch_size)
            total = total + self.distill_weight * distill
        return total

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ validation and test
    def on_validation_epoch_start(self) -> None:
        self._eval_embeddings = []

    def on_test_epoch_start(self) -> None:
        self._eval_embeddings = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_embeddings.append(self.embed(batch[0]).float())

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_embeddings.append(self.embed(batch[0]).float())

    def _gathered_embeddings(self, split: str, num_samples: int) -> torch.Tensor:
        """The split's embeddings (N, D) in dataset order, from every rank."""
        embeddings = torch.cat(self._eval_embeddings) if self._eval_embeddings else torch.empty(0, self.embedding_dim)
        self._eval_embeddings = []
        if self.evaluation_is_distributed(split):
            embeddings = dataset_order(self.all_gather(embeddings), num_samples)
        # Otherwise (one process, or DDP with use_distributed_sampler: false, as P x K and pair
        # batches need) this rank embedded the whole split itself.
        return embeddings[:num_samples].cpu()

    def _verify(self, split: str) -> Optional[Verification]:
        """Verify the pairs of a split.

        ``None`` when the loop saw too few images to form both kinds of pair (sanity check,
        ``fast_dev_run``).
        """
        data = self.trainer.datamodule
        embeddings = self._gathered_embeddings(split, len(data.splits[split]))
        pairs, folds = data.verification_pairs_of(split)
        seen = (pairs[:, 0] < len(embeddings)) & (pairs[:, 1] < len(embeddings))
        pairs, folds = pairs[seen], (folds[seen] if folds is not None else None)
        same = pairs[:, 2].astype(bool)
        if same.sum() < 2 or (~same).sum() < 2 or (folds is None and not seen.all()):
            return None
        scores = (embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]]).sum(dim=1).numpy()  # cosine similarity
        n_folds = min(10, int(same.sum()), int((~same).sum()))
        metrics = evaluation.verification_metrics(scores, same, n_folds=n_folds, fold_ids=folds)
        return Verification(metrics, scores, same, embeddings)

    def on_validation_epoch_end(self) -> None:
        result = self._verify("val")
        if result is None:
            return
        metrics = result.metrics
        self.threshold.fill_(metrics["threshold"])
        self.log("val_pair_acc", metrics["pair_acc"], prog_bar=True, rank_zero_only=True)
        self.log("val_pair_acc_std", metrics["pair_acc_std"], rank_zero_only=True)  # over the folds: the noise
        self.log("val_auc", metrics["auc"], prog_bar=True, rank_zero_only=True)
        self.log("val_eer", metrics["eer"], rank_zero_only=True)

    def on_test_epoch_end(self) -> None:
        result = self._verify("test")
        if result is None:
            raise ValueError("The test split holds too few pairs to verify: it needs two identities with two images")
        scores, same = result.scores, result.same
        report: dict[str, Any] = dict(result.metrics)
        report["num_pairs"] = report["num_samples"]
        threshold = float(self.threshold)
        if np.isfinite(threshold):
            report["calibrated_threshold"] = threshold
            report["acc_at_calibrated_threshold"] = float(np.mean((scores >= threshold) == same))
        if self.trainer.datamodule.pairs_file is None:
            labels = np.asarray(self.trainer.datamodule.splits["test"].labels)
            report.update(evaluation.enrolled_classifier_accuracy(result.embeddings.numpy(), labels, seed=0))
        for key in ("pair_acc", "auc", "eer"):
            self.log(f"test_{key}", report[key], rank_zero_only=True)
        self.write_test_plots(scores, same)
        self.write_report(report)

    def write_test_plots(self, scores: np.ndarray, same: np.ndarray) -> None:
        """The verification ROC and the similarity histograms of same / different pairs (PNGs)."""
        roc_path = self.artifact_path("roc.png")
        if roc_path is None:
            return
        curve = evaluation.roc_curves(np.stack([-scores, scores], axis=1), same.astype(int), ["different", "same"])["same"]
        reports.plot_roc_curves({"verification": curve}, roc_path, title=f"Verification ROC ({len(scores)} pairs)")
        reports.plot_score_histograms(
            scores, same, self.artifact_path("similarities.png"), threshold=float(self.threshold)
        )

    # ------------------------------------------------------------------ predict
    def on_predict_epoch_start(self) -> None:
        self._predictions: list[dict[str, Any]] = []

    def predict_step(self, batch: tuple[torch.Tensor, list[str], list[str]], batch_idx: int) -> torch.Tensor:
        images, paths, errors = batch
        embeddings = self.embed(images).float().cpu()
        for path, error, embedding in zip(paths, errors, embeddings.tolist()):
            self._predictions.append({"file": path, "error": error, "embedding": [] if error else embedding})
        return embeddings

    def on_predict_epoch_end(self) -> None:
        """``embeddings.csv`` in the run folder: file, error, then the D embedding values."""
        path = self.artifact_path("embeddings.csv")
        if path is None:
            return
        header = ["file", "error"] + [f"e{i}" for i in range(self.embedding_dim)]
        with io.atomic_open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in self._predictions:
                writer.writerow([row["file"], row["error"], *(f"{v:.6f}" for v in row["embedding"])])

    # ------------------------------------------------------------------ checkpoints and explanations
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._start is not None:  # beside the state_dict: what a resumed run keeps pulling towards
            checkpoint[START_KEY] = self._start.state_dict()
        head = self.margin_head
        if head is None or not head.distributed:
            return
        # Called on every rank (Lightning dumps the checkpoint everywhere, rank 0 writes it): gather the
        # shards, so the file holds the whole (C, D) centre matrix and loads into any number of ranks.
        checkpoint["state_dict"]["margin_head.weight"] = head.full_weight().cpu()
        # This rank's optimiser moments cover its own centres only: leave them out (a resumed run
        # restarts the centres' moments, the rest of its state is restored).
        position = 0
        for optimizer, state in zip(self.trainer.optimizers, checkpoint.get("optimizer_states", [])):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if param is head.weight:
                        state.get("state", {}).pop(position, None)
                    position += 1

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state_dict = checkpoint.get("state_dict", {})
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting and START_KEY in checkpoint and (self.l2_sp_weight > 0 or self.distill_weight > 0):
            self.start_point().load_state_dict(checkpoint[START_KEY])  # a resumed run: the same start as before
        if "margin_head.weight" in state_dict and self.margin_head is None:
            # Not built (not fitting): the centres only serve training; evaluation, the gallery and export
            # use the embedding alone.
            del state_dict["margin_head.weight"]
        elif fitting and self.margin_head is not None and self.margin_head.distributed:
            # Resuming on several ranks: each keeps its rows of the saved matrix (MarginSoftmaxHead's
            # loader), and moments saved for another sharding would not fit them, so they restart.
            params = self.trainable_parameters()
            position = next(i for i, param in enumerate(params) if param is self.margin_head.weight)
            for state in checkpoint.get("optimizer_states", []):
                state.get("state", {}).pop(position, None)
        # Evaluating on other people links another identity count into num_classes; the classifier
        # only serves training, so take its shape from the checkpoint.
        weight = state_dict.get("classifier.weight")
        if weight is not None and (self.classifier is None or self.classifier.weight.shape != weight.shape):
            scale = self.classifier.scale if self.classifier is not None else self.hparams.classifier_scale
            self.classifier = CosineClassifier(weight.shape[1], weight.shape[0], scale).to(self.device)

    @property
    def cam_layer(self) -> str:
        """Grad-CAM layer name, relative to the task (``model.backbone.layer4``)."""
        return f"model.{self.model.cam_layer}"

    def explain_target(self, spec: Optional[str] = None) -> gradcam.NextSampleSimilarity:
        """``None`` or ``next``: each image's similarity to the next image of the batch.

        That is what the Grad-CAM callback shows. ``tools/explain.py --reference IMG`` explains the
        similarity to one reference face instead.
        """
        if spec in (None, "", "predicted", "next"):
            return gradcam.NextSampleSimilarity()
        raise ValueError(
            f"--target for an embedding must be 'next' (similarity to the next image); got {spec!r}. "
            "Pass --reference IMG to explain the similarity of each image to that reference face"
        )

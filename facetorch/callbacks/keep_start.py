"""Fine-tuning that never ends worse than it started: the starting network is the best checkpoint to beat.

Add it to a fine-tuning config's trainer callbacks (it replaces the default ``best.ckpt`` /
``last.ckpt`` callback)::

    trainer:
      callbacks:
        - class_path: facetorch.callbacks.KeepStartCheckpoint
          init_args: {monitor: val_pair_acc, noise: val_pair_acc_std}

Before the first training epoch the network is validated as it is (epoch 0, logged at step 0 like
any epoch) and saved as ``best.ckpt``. A later epoch replaces it only when it beats the start by
more than the validation noise: ``noise_factor`` times the metric named by ``noise`` at the start
(for embeddings, ``val_pair_acc_std``: the spread of the pair accuracy over the 10 folds of the
validation pairs), and at least ``min_delta``. Among the epochs that do, the best is kept as usual.
So a run in which training only made things worse, or better by less than the noise, leaves the
starting weights in ``best.ckpt``, and testing or evaluating it gives the starting network's numbers.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.seed import isolate_rng

from facetorch.callbacks.checkpoint import BestAndLastCheckpoint


class KeepStartCheckpoint(BestAndLastCheckpoint):
    """``best.ckpt`` / ``last.ckpt`` where the best starts as the network before training.

    Args:
        monitor: The validation metric that decides (default ``val_pair_acc``).
        mode: ``max`` (higher is better) or ``min``.
        noise: A metric logged with ``monitor`` whose value at the start is the validation noise
            (e.g. ``val_pair_acc_std``); ``None``: no noise margin.
        noise_factor: How many times the noise an epoch must beat the start by.
        min_delta: The smallest margin, whatever the noise.
        validate_at_start: Validate the network before the first training epoch; without it the
            callback acts as :class:`BestAndLastCheckpoint`, plus the margin over the first validation.
    """

    def __init__(self, monitor: str = "val_pair_acc", mode: Literal["min", "max"] = "max",
                 noise: Optional[str] = "val_pair_acc_std", noise_factor: float = 1.0, min_delta: float = 0.0,
                 validate_at_start: bool = True) -> None:
        if noise_factor < 0 or min_delta < 0:
            raise ValueError(f"KeepStartCheckpoint: noise_factor and min_delta must be >= 0, got {noise_factor} and {min_delta}")
        super().__init__(monitor=monitor, mode=mode, filename="best", save_last=True, auto_insert_metric_name=False)
        self.noise = noise
        self.noise_factor = noise_factor
        self.min_delta = min_delta
        self.validate_at_start = validate_at_start
        self.start_score: Optional[float] = None
        self.start_noise: Optional[float] = None
        self.best_is_start = False
        self.best_trained_score: Optional[float] = None  # the best epoch of training, kept or not
        self._at_start = False

    @property
    def margin(self) -> float:
        """How much an epoch must beat the start by."""
        noise = self.start_noise if self.start_noise is not None and math.isfinite(self.start_noise) else 0.0
        return max(self.min_delta, self.noise_factor * noise)

    # ------------------------------------------------------------------ epoch 0
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if not self.validate_at_start or trainer.global_step > 0 or trainer.fast_dev_run or self.start_score is not None:
            return  # a resumed run keeps the start it recorded (state_dict)
        # What the training loop does before each validation (pytorch_lightning 2.x's
        # _TrainingEpochLoop._run_validation); the RNG is kept as it was, so the run's batches are
        # the same with or without this pass (as Lightning's sanity check does).
        connector = trainer._logger_connector
        first_loop_iter = connector._first_loop_iter
        trainer.validating = True
        self._at_start = True
        try:
            with isolate_rng():
                trainer.fit_loop.epoch_loop.val_loop.run()
        finally:
            self._at_start = False
            trainer.training = True
            connector._first_loop_iter = first_loop_iter

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._at_start:
            self._keep_start(trainer)
            return
        current = self._monitor_candidates(trainer).get(self.monitor)
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and current is not None and not torch.isnan(current):
            value = float(current)
            better = {"max": max, "min": min}[self.mode]
            self.best_trained_score = value if self.best_trained_score is None else better(self.best_trained_score, value)
        super().on_validation_end(trainer, pl_module)

    def _keep_start(self, trainer: pl.Trainer) -> None:
        candidates = self._monitor_candidates(trainer)
        current = candidates.get(self.monitor)
        if current is None or torch.isnan(current):
            rank_zero_info(f"KeepStartCheckpoint: the start gave no {self.monitor}; the best epoch is kept as usual")
            return
        self.start_score = float(current)
        noise = candidates.get(self.noise) if self.noise else None
        self.start_noise = float(noise) if noise is not None else None
        self._update_best_and_save(current, trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    # ------------------------------------------------------------------ the rule
    def check_monitor_top_k(self, trainer: pl.Trainer, current: Optional[torch.Tensor] = None) -> bool:
        if current is None or self._at_start or self.start_score is None:
            return super().check_monitor_top_k(trainer, current)
        value = float(current)
        beats = value > self.start_score + self.margin if self.mode == "max" else value < self.start_score - self.margin
        beats = trainer.strategy.reduce_boolean_decision(bool(beats))
        return beats and super().check_monitor_top_k(trainer, current)

    def _update_best_and_save(self, current: torch.Tensor, trainer: pl.Trainer, monitor_candidates: dict[str, Any]) -> None:
        self.best_is_start = self._at_start
        super()._update_best_and_save(current, trainer, monitor_candidates)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.start_score is None:
            return
        trained = f"{self.best_trained_score:.4f}" if self.best_trained_score is not None else "none"
        if self.best_is_start:
            rank_zero_info(
                f"best.ckpt is the network as it started ({self.monitor} {self.start_score:.4f}): no epoch beat it by more "
                f"than {self.margin:.4f} (the best trained epoch: {trained})"
            )
        else:
            rank_zero_info(f"best.ckpt is a trained epoch ({self.monitor} {float(self.best_model_score):.4f}), "
                           f"beating the start ({self.start_score:.4f}) by more than {self.margin:.4f}")  # fmt: skip

    # ------------------------------------------------------------------ what the run reports and keeps
    def summary(self) -> dict[str, float]:
        """Flat numbers for ``metrics.json``: the start, its noise, the margin, and whether best.ckpt is the start."""
        if self.start_score is None:
            return {}
        report = {f"start_{self.monitor}": self.start_score, "keep_start_margin": self.margin,
                  "best_is_start": float(self.best_is_start)}  # fmt: skip
        if self.start_noise is not None:
            report[f"start_{self.noise}"] = self.start_noise
        if self.best_trained_score is not None:
            report[f"best_trained_{self.monitor}"] = self.best_trained_score
        return report

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(start_score=self.start_score, start_noise=self.start_noise, best_is_start=self.best_is_start,
                     best_trained_score=self.best_trained_score)  # fmt: skip
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.start_score = state_dict.get("start_score")
        self.start_noise = state_dict.get("start_noise")
        self.best_is_start = bool(state_dict.get("best_is_start", False))
        self.best_trained_score = state_dict.get("best_trained_score")

"""best.ckpt follows the monitor; last.ckpt is the last epoch even when the monitor stops improving."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from facetorch.callbacks.checkpoint import AtomicCheckpointIO, best_checkpoint


class StalledModel(BoringModel):
    """Logs a validation score that is best at epoch 0 and never improves afterwards."""

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self.log("val_score", 1.0 if self.current_epoch == 0 else 0.5)


def test_last_checkpoint_is_the_last_epoch_and_best_the_best(tmp_path: Path) -> None:
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=1,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[best_checkpoint("val_score", "max")], plugins=[AtomicCheckpointIO()])  # fmt: skip
    trainer.fit(StalledModel())
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(folder / "best.ckpt", weights_only=False)["epoch"] == 0
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 2  # Lightning alone leaves it at 0

"""Command line: ``facetorch fit|validate|test|predict``, ``tools/train.py`` and ``tools/evaluate.py``.

All three share :class:`FaceCLI`, a ``LightningCLI`` over any :class:`~facetorch.tasks.FaceTask`
and the shared :class:`~facetorch.data.FaceDataModule`. Data facts reach the model through
argument links: ``data.num_classes``, ``data.class_names`` and ``data.channels``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from facetorch import io
from facetorch.checkpointing import AtomicCheckpointIO, best_checkpoint
from facetorch.data import FaceDataModule
from facetorch.tasks import FaceTask

DEFAULT_LOGGER = {
    "class_path": "pytorch_lightning.loggers.CSVLogger",
    "init_args": {"save_dir": "runs", "name": "facetorch"},
}


class FaceCLI(LightningCLI):
    """LightningCLI for facetorch tasks: links data facts into the model, checkpoints by the task's
    monitor, writes checkpoints atomically, and logs to ``runs/<name>/version_N`` by default."""

    def __init__(self, args: Optional[list[str]] = None, run: bool = True, **kwargs: Any) -> None:
        super().__init__(
            model_class=FaceTask,
            datamodule_class=FaceDataModule,
            subclass_mode_model=True,
            seed_everything_default=0,
            trainer_defaults={"logger": DEFAULT_LOGGER},
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.channels", "model.init_args.in_channels")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = list(trainer_config.get("callbacks") or [])
        wants_checkpoints = trainer_config.get("enable_checkpointing", True) is not False
        if wants_checkpoints and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            callbacks.append(best_checkpoint(self.model.monitor, self.model.monitor_mode))
        kwargs.setdefault("callbacks", callbacks)
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO":
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


class TrainCLI(FaceCLI):
    """``tools/train.py``: no subcommand; ``--ckpt_path`` resumes training."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="Checkpoint to resume training from.")


class EvaluateCLI(FaceCLI):
    """``tools/evaluate.py``: test a checkpoint on every image of ``--data.root``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str, required=True, help="Checkpoint to evaluate.")
        parser.add_argument("--output", type=Optional[str], default=None, help="Also write the metrics JSON here.")
        parser.add_argument("--overwrite", type=bool, default=False, help="Replace an existing non-empty --output.")
        parser.add_argument(
            "--pairs", type=Optional[str], default=None,
            help="Embedding tasks: verify the pairs of this LFW pairs.txt (images in images/ beside it, else --data.root).",
        )

    def before_instantiate_classes(self) -> None:
        # Always every image of --data.root, even with a run's saved config.yaml (eval_all: false).
        self.config["data"]["eval_all"] = True
        if self.config.get("pairs"):
            self.config["data"]["pairs_file"] = self.config["pairs"]


def main(args: Optional[list[str]] = None) -> None:
    """The ``facetorch`` console script: ``facetorch fit|validate|test|predict --config ...``."""
    FaceCLI(args=args)


def _best_or_last(trainer: Trainer) -> Optional[str]:
    """The checkpoint to test after fitting: best, else last, else the weights in memory (``None``)."""
    if trainer.fast_dev_run:
        return None
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    for path in (getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", "")):
        if path and Path(path).is_file():
            return path
    return None


def train(args: Optional[list[str]] = None) -> dict[str, Any]:
    """Fit, then test the best checkpoint (or validate it when there is no test split).

    Returns:
        The flat metrics that were written to ``metrics.json`` in the run folder.
    """
    cli = TrainCLI(args=args, run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data, ckpt_path=cli.config.ckpt_path)
    ckpt = _best_or_last(trainer)
    if data.has_split("test"):
        trainer.test(model, datamodule=data, ckpt_path=ckpt)
        return model.test_report
    results = trainer.validate(model, datamodule=data, ckpt_path=ckpt)
    report = {key: float(value) for key, value in (results[0] if results else {}).items()}
    report["num_samples"] = len(data.splits["val"])
    model.write_report(report)
    return report


def evaluate(args: Optional[list[str]] = None) -> dict[str, Any]:
    """Evaluate ``--ckpt_path`` on every image under ``--data.root``; print the JSON as the last line."""
    cli = EvaluateCLI(args=args, run=False)
    output = Path(cli.config.output) if cli.config.output else None
    if output is not None and output.is_file() and output.stat().st_size > 0 and not cli.config.overwrite:
        raise FileExistsError(f"--output {str(output)!r} exists and is not empty; pass --overwrite to replace it")
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    report = cli.model.test_report
    if output is not None and cli.trainer.is_global_zero:
        io.write_json(output, report)
    if cli.trainer.is_global_zero:
        sys.stdout.flush()
        print(json.dumps(report), flush=True)
    return report

"""``tools/explain.py``: Grad-CAM, Guided Backprop and Guided Grad-CAM maps of a trained checkpoint.

``python tools/explain.py --config CONFIG --ckpt_path CKPT --images DIR_OR_FILE
[--method gradcam|guided|guided_gradcam|all] [--target predicted|<class name>|<index>]
[--reference IMG] --output DIR [--overwrite]``

The task and data module are built from the config as for training (``data.root`` may be left
out for ``face_crops``); the data module only provides the evaluation transform. Nothing is
trained or tested and no run folder is created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from facetorch import io
from facetorch.cli import FaceCLI
from facetorch.explain import (
    FILE_SUFFIX,
    GRID_NAME,
    METHODS,
    check_output,
    load_images,
    write_explanations,
)
from facetorch.explain_detector import peak_in_box_report


class ExplainCLI(FaceCLI):
    """``tools/explain.py``: the task and data of ``--config`` plus the explanation arguments."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str, required=True, help="Checkpoint whose weights are explained.")
        parser.add_argument("--images", type=str, required=True, help="An image file, or a folder (searched recursively).")
        parser.add_argument(
            "--method", type=Literal["gradcam", "guided", "guided_gradcam", "all"], default="all",
            help="Explanation method; 'all' writes every one.",
        )  # fmt: skip
        parser.add_argument(
            "--target", type=Optional[str], default=None,
            help="Score to explain: 'predicted' (default), a class name or a class index.",
        )  # fmt: skip
        parser.add_argument(
            "--reference", type=Optional[str], default=None,
            help="Embedding tasks: explain the similarity to this image's embedding.",
        )  # fmt: skip
        parser.add_argument("--output", type=str, required=True, help="Folder for the PNGs (new or empty).")
        parser.add_argument("--overwrite", type=bool, default=False, help="Write into a non-empty --output.")
        parser.add_argument(
            "--peak_in_box", type=bool, default=False,
            help="Detector: also score the Grad-CAM maps of the test split (every image of data.root with "
            "--data.eval_all=true) against the annotated boxes; writes OUTPUT/peak_in_box.json.",
        )  # fmt: skip

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # The trainer only picks the device; without a logger it can never create runs/.
        kwargs["logger"] = False
        return super().instantiate_trainer(**kwargs)


def load_weights(task: nn.Module, ckpt_path: str | Path) -> None:
    """Load a Lightning checkpoint's ``state_dict`` into ``task`` (strict, on CPU first).

    The checkpoint's class names (if any) replace those linked from the data, so titles and
    ``--target`` names mean what they meant at training time.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt_path {str(path)!r} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        keys = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"Expected a Lightning checkpoint with a 'state_dict' in {str(path)!r}, got {keys}")
    try:
        task.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"Checkpoint {str(path)!r} does not fit the model built from --config: {error}") from error
    _restore_class_names(task, checkpoint.get("hyper_parameters") or {}, path)


def _restore_class_names(task: nn.Module, hparams: dict[str, Any], path: Path) -> None:
    saved = hparams.get("class_names")
    current = getattr(task, "class_names", None)
    if saved is None or current is None or list(saved) == list(current):
        return
    if len(saved) != len(current):  # unreachable after a strict load of the head; kept as a guard
        raise ValueError(f"Checkpoint {str(path)!r} has {len(saved)} classes, the data {len(current)}")
    rank_zero_warn(f"Using the class names of {str(path)!r} ({list(saved)[:10]}), not those of the data ({current[:10]})")
    task.class_names = list(saved)


def main(args: list[str] | None = None) -> list[Path]:
    """Run ``tools/explain.py``; prints the number of files per kind and the output folder.

    Returns:
        The written files.
    """
    cli = ExplainCLI(args=args, run=False)
    config, task, data = cli.config, cli.model, cli.datamodule
    check_output(config.output, config.overwrite)  # before any slow step
    load_weights(task, config.ckpt_path)
    task.to(cli.trainer.strategy.root_device).eval()
    methods = list(METHODS) if config.method == "all" else [config.method]
    images = load_images(Path(config.images), data.channels)
    written = write_explanations(
        task, data, images, methods, config.target, Path(config.output),
        batch_size=data.batch_size, reference=config.reference, overwrite=config.overwrite,
    )  # fmt: skip
    _print_summary(written, methods, Path(config.output))
    if config.peak_in_box:
        written.append(write_peak_in_box(task, data, config.target, Path(config.output)))
    return written


def write_peak_in_box(task: nn.Module, data: Any, target_spec: Optional[str], output: Path) -> Path:
    """Grad-CAM peak-in-box statistics of the data's test split, printed and written as JSON."""
    if data.layout != "labelme":
        raise ValueError(f"--peak_in_box needs a detector on data.layout labelme, got {data.layout!r}")
    data.setup("test")
    report = peak_in_box_report(task, data.test_dataloader(), task.cam_layer, task.explain_target(target_spec))
    path = output / "peak_in_box.json"
    io.write_json(path, report)
    print(json.dumps(report))
    return path


def _print_summary(written: list[Path], methods: list[str], output: Path) -> None:
    for method in methods:
        suffix = f"_{FILE_SUFFIX[method]}.png"
        print(f"{sum(p.name.endswith(suffix) for p in written)} *{suffix}")
    print(f"{sum(p.name == GRID_NAME for p in written)} {GRID_NAME}")
    print(f"Wrote {len(written)} files to {output.resolve()}")

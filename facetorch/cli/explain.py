"""``tools/explain.py``: Grad-CAM, Guided Backprop and Guided Grad-CAM maps of a trained checkpoint.

``python tools/explain.py --config CONFIG --ckpt_path CKPT --images DIR_OR_FILE
[--method gradcam|guided|guided_gradcam|all] [--target predicted|<class name>|<index>]
[--reference IMG] --output DIR [--overwrite] [--quiet]``

The task, its class names and its input (size, normalisation, crop) come from the checkpoint,
through :func:`facetorch.inference.load_task`; ``--config`` must name the same task, and gives
the data for ``--peak_in_box`` (the only time a data set is read), the batch size and the device
(``--trainer.accelerator``). Nothing is trained or tested and no run folder is created.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser
from torch import nn

from facetorch import io
from facetorch.cli.common import run_tool
from facetorch.cli.lightning import FaceCLI, run_inputs
from facetorch.explain.detector import peak_in_box_report
from facetorch.explain.render import FILE_SUFFIX, GRID_NAME, METHODS, load_images, write_explanations
from facetorch.inference.checkpoint import CheckpointError, load_task
from facetorch.tasks import FaceTask


class ExplainCLI(FaceCLI):
    """``tools/explain.py``: the task and data of ``--config`` plus the explanation arguments."""

    input_from_checkpoint = True

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
        parser.add_argument("--overwrite", action="store_true", help="Write into a non-empty --output (never an input).")
        parser.add_argument("--quiet", action="store_true", help="No progress bar.")
        parser.add_argument(
            "--peak_in_box", action="store_true",
            help="Detector: also score the Grad-CAM maps of the test split (every image of data.root with "
            "--data.eval_all=true) against the annotated boxes; writes OUTPUT/peak_in_box.json.",
        )  # fmt: skip

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        inputs = {**run_inputs(self.config), "--images": self.config.images, "--reference": self.config.reference}
        io.check_output_folder(self.config.output, self.config.overwrite, inputs=inputs)  # before any slow step

    def instantiate_classes(self) -> None:
        if self.config.get("peak_in_box"):  # the data's test split is scored against its boxes
            super().instantiate_classes()
        else:  # the checkpoint holds the task and its input: no data set is read, nothing is built
            self.model, self.datamodule, self.trainer = None, None, None  # type: ignore[assignment]

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # The trainer only picks the device; without a logger it can never create runs/.
        kwargs["logger"] = False
        kwargs["enable_checkpointing"] = False
        return super().instantiate_trainer(**kwargs)


def _device(accelerator: Any) -> torch.device:
    """The device ``--trainer.accelerator`` names, as Lightning would pick it (``auto``: a GPU when there is one)."""
    name = str(getattr(accelerator, "class_path", accelerator) or "auto").lower()
    if name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if name in ("cpu", "auto"):
        return torch.device("cpu")
    raise ValueError(f"--trainer.accelerator {name!r}: explain.py runs on cpu, gpu (cuda) or auto")


def explain(args: list[str] | None = None) -> list[Path]:
    """Run ``tools/explain.py``; prints the number of files per kind and the output folder.

    The weights, class names and input come from ``--ckpt_path`` (through the one checkpoint
    loader); ``--config`` gives the data (for ``--peak_in_box``) and the device.

    Returns:
        The written files.
    """
    cli = ExplainCLI(args=args, run=False)
    config, data = cli.config, cli.datamodule
    device = cli.trainer.strategy.root_device if cli.trainer is not None else _device(config.get("trainer.accelerator"))
    loaded = load_task(config.ckpt_path, FaceTask, device, tool="explain.py")
    wanted = str(config.get("model.class_path") or "").rpartition(".")[2]
    if wanted and wanted != loaded.class_name:
        raise CheckpointError(
            f"--ckpt_path {config.ckpt_path!r} is a {loaded.class_name} checkpoint, but --config builds a "
            f"{wanted}; give the config the checkpoint was trained with"
        )
    task = loaded.task
    methods = list(METHODS) if config.method == "all" else [config.method]
    images = load_images(Path(config.images), loaded.input.channels)
    written = write_explanations(
        task, loaded.input, images, methods, config.target, Path(config.output),
        batch_size=config.data.batch_size, reference=config.reference, overwrite=config.overwrite, progress=not config.quiet,
    )  # fmt: skip
    _print_summary(written, methods, Path(config.output))
    if config.peak_in_box:
        written.append(write_peak_in_box(task, data, config.target, Path(config.output)))
    return written


def main(args: list[str] | None = None) -> None:
    """``tools/explain.py``: :func:`explain`, with input errors as one line and exit code 2."""
    sys.exit(run_tool("explain.py", explain, args))


def write_peak_in_box(task: nn.Module, data: Any, target_spec: Optional[str], output: Path) -> Path:
    """Grad-CAM peak-in-box statistics of the data's test split, printed and written as JSON."""
    if data.layout != "labelme":
        raise ValueError(f"--peak_in_box needs a detector on data.layout labelme, got {data.layout!r}")
    data.setup("test")
    report = peak_in_box_report(task, data.test_dataloader(), task.cam_layer, task.explain_target(target_spec))
    path = output / "peak_in_box.json"
    io.write_json(path, report)
    print(io.json_line(report))
    return path


def _print_summary(written: list[Path], methods: list[str], output: Path) -> None:
    for method in methods:
        suffix = f"_{FILE_SUFFIX[method]}.png"
        print(f"{sum(p.name.endswith(suffix) for p in written)} *{suffix}")
    print(f"{sum(p.name == GRID_NAME for p in written)} {GRID_NAME}")
    print(f"Wrote {len(written)} files to {output.resolve()}")

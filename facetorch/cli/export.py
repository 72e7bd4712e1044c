"""``tools/export.py``: a trained task as an ONNX or TorchScript file that carries its preprocessing and threshold.

``python tools/export.py --config CONFIG [--ckpt_path CKPT] --format onnx|torchscript --output FILE
[--opset N] [--fixed_batch] [--tta_flip checkpoint|on|off] [--overwrite]``

With ``--ckpt_path`` the task, its weights and its input (size, channels, normalisation, crop,
alignment) come from the checkpoint, through :func:`facetorch.inference.load_task`; ``--config``
must name the same task and nothing of it is built (no data is needed). Without it, the task and
its input are built from ``--config`` (and any ``--section.key=value``), as training would build
them: a pretrained configuration exports its pretrained network as it is. No data set is read for
that either, except by a classifier, whose class names come from its data (``face_crops`` has
built-in data; an identity config needs ``--data.root``).

ONNX files take any batch size (``--fixed_batch``: batch 1, for runtimes that need static
shapes); TorchScript traces take any batch size anyway. The file's metadata key ``facetorch``
holds how to feed the model and decide (see :mod:`facetorch.inference.export`); the last line of
stdout is a JSON summary, with the largest difference between the file and the PyTorch model on a
random batch (``check_max_abs_diff``).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser

from facetorch import io, ranges
from facetorch.cli.common import TTA_FLIP_CHOICES, run_tool, tta_flip_choice
from facetorch.cli.lightning import FaceCLI, run_inputs
from facetorch.data.transforms import InputSpec
from facetorch.inference.checkpoint import CheckpointError, load_task
from facetorch.inference.export import DEFAULT_OPSET, FORMATS, check_export, export_graph, export_task
from facetorch.tasks import ClassificationTask, EmbeddingTask, FaceDetectorTask, FaceTask

PROG = "export.py"


class ExportCLI(FaceCLI):
    """``tools/export.py``: the task of ``--config`` (or of ``--ckpt_path``) plus the export arguments."""

    input_from_checkpoint = True

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path", type=Optional[str], default=None,
            help="Checkpoint to export (default: the task as --config builds it, e.g. a pretrained network).",
        )  # fmt: skip
        parser.add_argument("--format", type=str, required=True, help=f"Export format: {' or '.join(FORMATS)}.")
        parser.add_argument("--output", type=str, required=True, help="File to write (.onnx or .pt).")
        parser.add_argument("--overwrite", action="store_true", help="Replace an existing, non-empty --output (never an input).")
        parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset version ({MIN_OPSET} or later).")
        parser.add_argument(
            "--tta_flip", type=str, default="checkpoint",
            help="checkpoint|on|off: put the test-time flip (the image and its mirror image, averaged) in the graph "
                 "of an embedding or a detector (default: as the task's flip_test / tta_flip).",
        )  # fmt: skip
        parser.add_argument(
            "--fixed_batch", action="store_true",
            help="ONNX: a fixed batch of 1 (default: any batch size). TorchScript traces take any batch size anyway.",
        )  # fmt: skip

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        # Before anything is built or exported.
        if self.config.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.config.format!r}")
        OPSET.check(self.config.opset, "--opset")
        if self.config.tta_flip not in TTA_FLIP_CHOICES:
            raise ValueError(f"--tta_flip must be one of {', '.join(TTA_FLIP_CHOICES)}, got {self.config.tta_flip!r}")
        io.check_output_file(self.config.output, self.config.overwrite, inputs=run_inputs(self.config))

    def instantiate_classes(self) -> None:
        self.model, self.datamodule, self.trainer = None, None, None  # type: ignore[assignment]
        if self.config.get("ckpt_path"):
            # The checkpoint holds the task, its weights and its input; building the config's data
            # (which may need a data root) and model would be work thrown away.
            return
        if _needs_data(self.config):  # a classifier's class names come from its data
            super().instantiate_classes()
            self.input_spec = self.datamodule.input_spec
            return
        self.model, self.input_spec = task_without_data(self.config)

    def instantiate_trainer(self, **kwargs: Any) -> Optional[Trainer]:  # type: ignore[override]
        return None  # nothing is trained or run: no trainer, no run folder


def set_test_time_flip(task: FaceTask, choice: str) -> None:
    """Apply ``--tta_flip``: ``on`` / ``off`` set an embedding's ``flip_test`` or a detector's ``tta_flip``."""
    flip = tta_flip_choice(choice)
    if flip is None:
        return
    attribute = "flip_test" if isinstance(task, EmbeddingTask) else "tta_flip" if isinstance(task, FaceDetectorTask) else None
    if attribute is None:
        raise ValueError(f"--tta_flip {choice}: a {type(task).__name__} has no test-time flip; "
                         "leave --tta_flip out (only embeddings and the detector have one)")  # fmt: skip
    setattr(task, attribute, flip)


# torch.onnx's dynamo exporter writes opset 18 and converts down to about 7; below that nothing runs.
MIN_OPSET = 7
OPSET = ranges.Kind("an ONNX opset version", low=MIN_OPSET, integer=True)


def _model_class(config: Any) -> type:
    class_path = str(config.get("model.class_path") or "")
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, FaceTask)):
        raise ValueError(f"--config: model.class_path {class_path!r} is not a facetorch task "
                         "(e.g. facetorch.tasks.EmbeddingTask)")  # fmt: skip
    return cls


def _needs_data(config: Any) -> bool:
    return issubclass(_model_class(config), ClassificationTask)


def task_without_data(config: Any) -> tuple[FaceTask, InputSpec]:
    """The task of the config's model section and the input of its data section, without reading any data.

    Embeddings and the detector take nothing from the data but its channels (linked into the
    model already) and the input the data section describes.
    """
    cls = _model_class(config)
    init_args = config.get("model.init_args")
    args = init_args.as_dict() if init_args is not None else {}
    data = config.get("data")
    spec = InputSpec.from_hparams(data.as_dict() if data is not None else {})
    return cls(**args).cpu().eval(), spec


def _config_task_name(config: Any) -> str:
    model = config.get("model")
    class_path = str(model.get("class_path", "") if model is not None else "")
    return class_path.rpartition(".")[2]


def export(args: Optional[list[str]] = None) -> dict[str, Any]:
    """Run ``tools/export.py``; prints and returns a summary (the file, its metadata, the parity check)."""
    cli = ExportCLI(args=args, run=False)
    config = cli.config
    if config.ckpt_path:
        loaded = load_task(config.ckpt_path, FaceTask, "cpu", tool=PROG)
        wanted = _config_task_name(config)
        if wanted and wanted != loaded.class_name:
            raise CheckpointError(
                f"--ckpt_path {config.ckpt_path!r} is a{'n' if loaded.class_name[0] in 'AEIOU' else ''} "
                f"{loaded.class_name} checkpoint, but --config builds a "
                f"{wanted}; give the config the checkpoint was trained with"
            )
        task, spec, source = loaded.task, loaded.input, str(config.ckpt_path)
    else:
        task, spec, source = cli.model.cpu().eval(), cli.input_spec, "--config (no checkpoint)"
    set_test_time_flip(task, config.tta_flip)
    output = Path(config.output)
    dynamic = not config.fixed_batch or config.format == "torchscript"
    metadata = export_task(task, spec, output, config.format, config.opset, dynamic)
    batch = 2 if dynamic else 1
    graph = export_graph(task, spec)
    difference = check_export(graph, spec, output, config.format, batch)
    summary = {
        "output": str(output), "format": config.format, "source": source, "task": metadata["task"],
        "input_size": metadata["input_size"], "channels": metadata["channels"], "outputs": list(metadata["outputs"]),
        "threshold": metadata["threshold"], "fingerprint": metadata["fingerprint"],
        "opset": config.opset if config.format == "onnx" else None, "tta_flip": graph.flip_test,
        "dynamic_batch": dynamic, "check_max_abs_diff": difference,
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    return summary


def main(args: Optional[list[str]] = None) -> None:
    """``tools/export.py``: :func:`export`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, export, args))

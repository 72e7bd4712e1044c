"""``tools/export.py``: a trained task as an ONNX or TorchScript file that carries its preprocessing and threshold.

``python tools/export.py --config CONFIG [--ckpt_path CKPT] --format onnx|torchscript --output FILE
[--opset N] [--dynamic_batch] [--overwrite]``

With ``--ckpt_path`` the task, its weights and its input (size, channels, normalisation, crop,
alignment) come from the checkpoint, through :func:`facetorch.inference.load_task`; ``--config``
must name the same task and nothing of it is built (no data is needed). Without it, the task and
its input are built from ``--config`` (and any ``--section.key=value``), as training would build
them: a pretrained configuration exports its pretrained network as it is.

The file's metadata key ``facetorch`` holds how to feed the model and decide (see
:mod:`facetorch.inference.export`); the last line of stdout is a JSON summary, with the largest
difference between the file and the PyTorch model on a random batch (``check_max_abs_diff``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser

from facetorch import io
from facetorch.cli.common import rename_legacy_flags, run_tool
from facetorch.cli.lightning import FaceCLI
from facetorch.inference.checkpoint import CheckpointError, load_task
from facetorch.inference.export import DEFAULT_OPSET, FORMATS, check_export, export_graph, export_task
from facetorch.tasks import FaceTask

PROG = "export.py"
RENAMED = {"--dynamic-batch": "--dynamic_batch", "--ckpt": "--ckpt_path"}


class ExportCLI(FaceCLI):
    """``tools/export.py``: the task of ``--config`` (or of ``--ckpt_path``) plus the export arguments."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path", type=Optional[str], default=None,
            help="Checkpoint to export (default: the task as --config builds it, e.g. a pretrained network).",
        )  # fmt: skip
        parser.add_argument("--format", type=str, required=True, help=f"Export format: {' or '.join(FORMATS)}.")
        parser.add_argument("--output", type=str, required=True, help="File to write (.onnx or .pt).")
        parser.add_argument("--overwrite", action="store_true", help="Replace an existing, non-empty --output.")
        parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version.")
        parser.add_argument(
            "--dynamic_batch", action="store_true",
            help="ONNX: any batch size (default: batch 1). TorchScript traces take any batch size anyway.",
        )  # fmt: skip

    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        # Before anything is built or exported.
        if self.config.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.config.format!r}")
        io.check_output_file(self.config.output, self.config.overwrite)

    def instantiate_classes(self) -> None:
        if self.config.get("ckpt_path"):
            # The checkpoint holds the task, its weights and its input; building the config's data
            # (which may need a data root) and model would be work thrown away.
            self.model, self.datamodule, self.trainer = None, None, None  # type: ignore[assignment]
            return
        super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        kwargs["logger"] = False  # nothing is trained: no run folder
        return super().instantiate_trainer(**kwargs)


def _config_task_name(config: Any) -> str:
    model = config.get("model")
    class_path = str(model.get("class_path", "") if model is not None else "")
    return class_path.rpartition(".")[2]


def export(args: Optional[list[str]] = None) -> dict[str, Any]:
    """Run ``tools/export.py``; prints and returns a summary (the file, its metadata, the parity check)."""
    argv = rename_legacy_flags(sys.argv[1:] if args is None else args, RENAMED, PROG)
    cli = ExportCLI(args=argv, run=False)
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
        task, spec, source = cli.model.cpu().eval(), cli.datamodule.input_spec, "--config (no checkpoint)"
    output = Path(config.output)
    metadata = export_task(task, spec, output, config.format, config.opset, config.dynamic_batch)
    batch = 2 if (config.dynamic_batch or config.format == "torchscript") else 1
    difference = check_export(export_graph(task, spec), spec, output, config.format, batch)
    summary = {
        "output": str(output), "format": config.format, "source": source, "task": metadata["task"],
        "input_size": metadata["input_size"], "channels": metadata["channels"], "outputs": list(metadata["outputs"]),
        "threshold": metadata["threshold"], "fingerprint": metadata["fingerprint"],
        "opset": config.opset if config.format == "onnx" else None,
        "dynamic_batch": bool(config.dynamic_batch or config.format == "torchscript"), "check_max_abs_diff": difference,
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    return summary


def main(args: Optional[list[str]] = None) -> None:
    """``tools/export.py``: :func:`export`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, export, args))

"""``python tools/benchmark.py --task face_vgg [--output FILE]``: throughput as ratios measured in one process.

Prints one JSON object: Trainer vs plain PyTorch loop, bf16-mixed + channels_last vs fp32,
and DataLoader vs model throughput, all measured in this process. ``--task gradcam`` instead
times Grad-CAM and Guided Backprop on VGG16 / ResNet50 against plain autograd. ``--task losses``
times facetorch's triplet losses against pytorch-metric-learning's, with their peak memory, and
``--task scan --data_root DIR`` times indexing a folder of many files.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Any, Optional

from facetorch import io
from facetorch.bench.gradcam import run_gradcam
from facetorch.bench.losses import BATCH_SIZES, run_losses
from facetorch.bench.scan import run_scan
from facetorch.bench.training import SETUPS, run
from facetorch.cli.common import add_output, rename_legacy_flags, run_tool, tool_parser

PROG = "benchmark.py"
RENAMED = {"--batch-size": "--batch_size", "--data-root": "--data_root", "--image-size": "--image_size"}


def benchmark(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Parse ``argv``, measure, print the result as one JSON line."""
    parser = tool_parser(PROG, __doc__)
    parser.add_argument("--task", required=True, choices=sorted([*SETUPS, "gradcam", "losses", "scan"]))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement (incl. warm-up)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed training steps (default 2), or repetitions for gradcam (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions; medians are reported")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--data_root", default=None, help="data folder (default: the task's built-in/default data)")
    parser.add_argument("--image_size", type=int, default=224, help="square input size (--task gradcam only)")
    parser.add_argument("--batch_sizes", default=",".join(map(str, BATCH_SIZES)),
                        help="comma-separated batch sizes (--task losses only)")
    add_output(parser, "also write the JSON here", required=False)
    args = parser.parse_args(rename_legacy_flags(sys.argv[1:] if argv is None else argv, RENAMED, PROG))
    if args.output:
        io.check_output_file(args.output, args.overwrite)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.task == "scan":
        if args.data_root is None:
            raise ValueError("--task scan needs --data_root DIR (an identity_folders tree; tools/synthetic_faces.py --empty)")
        result = run_scan(args.data_root, args.repeats)
    elif args.task == "losses":
        sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
        result = run_losses(sizes, max(3, args.repeats), args.accelerator)
    elif args.task == "gradcam":  # an inference-time benchmark, not a training setup
        warmup = 1 if args.warmup is None else args.warmup
        result = run_gradcam(args.batch_size, args.image_size, args.repeats, warmup, args.accelerator)
    else:
        warmup = 2 if args.warmup is None else args.warmup
        result = run(args.task, args.batch_size, args.steps, warmup, args.repeats, args.accelerator, args.data_root)
    if args.output:
        io.write_json(args.output, result)
    print(json.dumps(result))
    return result


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/benchmark.py``: :func:`benchmark`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, benchmark, argv))

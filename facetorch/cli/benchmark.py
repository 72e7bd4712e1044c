"""``python tools/benchmark.py --task face_vgg [--output FILE]``: throughput as ratios measured in one process.

Prints one JSON object: Trainer vs plain PyTorch loop, bf16-mixed + channels_last vs fp32, and
DataLoader vs model throughput, all measured in this process (``--compile`` adds torch.compile,
``--inference`` the inference rows against a plain eval loop); for ``--task embedding`` also faces/s
of the embedding network (fp32, bf16 + channels-last, and dlib's own network on the same chips for
``--config configs/embedding_dlib.yaml`` when dlib is installed). ``--task gradcam`` times Grad-CAM
and Guided Backprop on VGG16 / ResNet50 against plain autograd and the peer libraries; ``--task export``
compares each task's exported ONNX graph in onnxruntime (CPU) with PyTorch eager fp32 and bf16 +
channels-last on the same batch; ``--task losses`` times facetorch's triplet losses against
pytorch-metric-learning's, with their peak memory, and ``--task scan --data_root DIR`` times indexing
a folder of many files. Every result
carries the machine's conditions (threads, load at start and end, CPU flags, torch version) and a
``warning`` when other work shared the machine.

``--all`` runs the CUDA test suite (``pytest -m cuda``) and every task's throughput, as one JSON:
the prepared command for a short slot on a GPU machine
(``python tools/benchmark.py --accelerator gpu --all --output gpu.json``).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, Optional

from facetorch import io
from facetorch.bench.conditions import finish_conditions, start_conditions
from facetorch.bench.gradcam import run_gradcam
from facetorch.bench.losses import BATCH_SIZES, run_losses
from facetorch.bench.scan import run_scan
from facetorch.bench.training import SETUPS, run
from facetorch.cli.common import add_output, rename_legacy_flags, run_tool, tool_parser

PROG = "benchmark.py"
RENAMED = {"--batch-size": "--batch_size", "--data-root": "--data_root", "--image-size": "--image_size"}


def _parser() -> Any:
    parser = tool_parser(PROG, __doc__)
    parser.add_argument("--task", choices=sorted([*SETUPS, "gradcam", "export", "losses", "scan"]),
                        help="what to measure (or --all)")
    parser.add_argument("--all", action="store_true", help="the CUDA tests and every task, as one JSON (for a GPU slot)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement (incl. warm-up)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed training steps (default 2), or repetitions for gradcam (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions; medians are reported")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--data_root", default=None, help="data folder (default: the task's built-in/default data)")
    parser.add_argument("--config", default=None,
                        help="the config whose model and data to train (default: the task's own, e.g. "
                             "configs/embedding_triplet.yaml); --task embedding --config configs/embedding_dlib.yaml "
                             "times dlib's network, and dlib itself")
    parser.add_argument("--image_size", type=int, default=224, help="square input size (--task gradcam only)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (training and inference)")
    parser.add_argument("--inference", action="store_true", help="also time inference against a plain eval loop")
    parser.add_argument("--inference_batch_sizes", default="1,64", help="batch sizes of --inference (default 1,64)")
    parser.add_argument("--no_peers", action="store_true", help="--task gradcam: leave out pytorch-grad-cam and captum")
    parser.add_argument("--batch_sizes", default=",".join(map(str, BATCH_SIZES)),
                        help="comma-separated batch sizes (--task losses only)")
    add_output(parser, "also write the JSON here", required=False)
    return parser


def measure(args: Any) -> dict[str, Any]:
    """One task's measurement, as the flags ask."""
    if args.task == "export":  # inference: the exported graph in onnxruntime against PyTorch eager
        return _export_benchmark(args)
    if args.task == "scan":
        if args.data_root is None:
            raise ValueError("--task scan needs --data_root DIR (an identity_folders tree; tools/synthetic_faces.py --empty)")
        return run_scan(args.data_root, args.repeats)
    if args.task == "losses":
        sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
        return run_losses(sizes, max(3, args.repeats), args.accelerator)
    if args.task == "gradcam":  # an inference-time benchmark, not a training setup
        warmup = 1 if args.warmup is None else args.warmup
        return run_gradcam(args.batch_size, args.image_size, args.repeats, warmup, args.accelerator, peers=not args.no_peers)
    warmup = 2 if args.warmup is None else args.warmup
    batches = tuple(int(size) for size in args.inference_batch_sizes.split(",")) if args.inference else ()
    return run(args.task, args.batch_size, args.steps, warmup, args.repeats, args.accelerator, args.data_root, args.config,
               compile=args.compile, inference_batch_sizes=batches)  # fmt: skip


def benchmark(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Parse ``argv``, measure, print the result as one JSON line."""
    parser = _parser()
    args = parser.parse_args(rename_legacy_flags(sys.argv[1:] if argv is None else argv, RENAMED, PROG))
    if not args.task and not args.all:
        parser.error("give --task NAME, or --all")
    if args.output:
        io.check_output_file(args.output, args.overwrite)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    conditions = start_conditions(args.accelerator)
    if args.all:
        from facetorch.bench.suite import run_all

        result = run_all(args.accelerator, args.repeats)
    else:
        result = measure(args)
    result["conditions"] = finish_conditions(conditions)
    if args.output:
        io.write_json(args.output, result)
    print(io.json_line(result))
    return result


def _export_benchmark(args: Any) -> dict[str, Any]:
    from facetorch.bench.export import run_export
    from facetorch.inference.export import graph_and_onnx

    warmup = 2 if args.warmup is None else args.warmup
    return run_export(graph_and_onnx, batch_size=args.batch_size, steps=args.steps, warmup=warmup, repeats=args.repeats)


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/benchmark.py``: :func:`benchmark`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, benchmark, argv))

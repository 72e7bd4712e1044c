"""Benchmark a task: ``python tools/benchmark.py --task face_vgg [--output FILE]``.

Prints one JSON object: Trainer vs plain PyTorch loop, bf16-mixed + channels_last vs fp32,
and DataLoader vs model throughput, all measured in this process. ``--task gradcam`` instead
times Grad-CAM and Guided Backprop on VGG16 / ResNet50 against plain autograd.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings

from facetorch import io
from facetorch.benchmark import SETUPS, run
from facetorch.gradcam_benchmark import run_gradcam


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted([*SETUPS, "gradcam"]))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement (incl. warm-up)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed training steps (default 2), or repetitions for gradcam (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions; medians are reported")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--data-root", default=None, help="data folder (default: the task's built-in/default data)")
    parser.add_argument("--image-size", type=int, default=224, help="square input size (--task gradcam only)")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.task == "gradcam":  # an inference-time benchmark, not a training setup
        warmup = 1 if args.warmup is None else args.warmup
        result = run_gradcam(args.batch_size, args.image_size, args.repeats, warmup, args.accelerator)
    else:
        warmup = 2 if args.warmup is None else args.warmup
        result = run(args.task, args.batch_size, args.steps, warmup, args.repeats, args.accelerator, args.data_root)
    if args.output:
        io.write_json(args.output, result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

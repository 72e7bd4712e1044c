"""Benchmark a task: ``python tools/benchmark.py --task face_vgg [--output FILE]``.

Prints one JSON object: Trainer vs plain PyTorch loop, bf16-mixed + channels_last vs fp32,
and DataLoader vs model throughput, all measured in this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings

from facetorch import io
from facetorch.benchmark import SETUPS, run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(SETUPS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement (incl. warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions; medians are reported")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--data-root", default=None, help="data folder (default: the task's built-in/default data)")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    result = run(args.task, args.batch_size, args.steps, args.warmup, args.repeats, args.accelerator, args.data_root)
    if args.output:
        io.write_json(args.output, result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

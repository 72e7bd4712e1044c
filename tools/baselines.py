"""Score classical baselines on the same split a config gives the deep model.

    python tools/baselines.py --config configs/face_vgg.yaml --data.root DIR [--method hog_svm] [--output FILE]

Fits on the train + val splits, scores on the test split (or on every image of --test_root, as
tools/evaluate.py does for a checkpoint), and prints one flat JSON object per method (the same
keys as the model's metrics.json).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from jsonargparse import ActionConfigFile, ArgumentParser

from facetorch import io
from facetorch.baseline_runs import METHODS_BY_LAYOUT, run_baseline
from facetorch.data.datamodule import FaceDataModule


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(FaceDataModule, "data")
    for ignored in ("trainer", "model"):  # the task's config also holds these; baselines ignore them
        parser.add_argument(f"--{ignored}", type=Optional[dict], default=None)
    parser.add_argument("--seed_everything", type=Optional[int], default=None)
    parser.add_argument("--method", type=Optional[str], default=None, help="default: every method for the layout")
    parser.add_argument("--test_root", type=Optional[str], default=None,
                        help="score on every image of this folder (same layout) instead of the test split")
    parser.add_argument("--output", type=Optional[str], default=None, help="also write the JSON list here")
    args = parser.instantiate_classes(parser.parse_args(argv))
    data: FaceDataModule = args.data
    methods = [args.method] if args.method else list(METHODS_BY_LAYOUT[data.layout])
    reports = []
    for method in methods:
        report = run_baseline(method, data, args.test_root)
        print(json.dumps(report), flush=True)
        reports.append(report)
    if args.output:
        io.write_json(args.output, {"baselines": reports})
    return reports


if __name__ == "__main__":
    main()

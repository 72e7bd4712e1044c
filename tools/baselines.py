"""Score classical baselines on the same split a config gives the deep model.

    python tools/baselines.py --config configs/face_vgg.yaml --data.root DIR [--method hog_svm] [--output FILE]
    python tools/baselines.py --config configs/embedding_triplet.yaml --data.root DIR --pairs PAIRS.txt

Fits on the train + val splits, scores on the test split (or on every image of --test_root, as
tools/evaluate.py does for a checkpoint), and prints one flat JSON object per method (the same
keys as the model's metrics.json). With ``--pairs`` (identity folders), the classical face
embeddings (eigenfaces fitted on the training people, LBP histograms) verify the pairs of an LFW
pairs.txt instead, with the keys of ``tools/evaluate.py --pairs``.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from jsonargparse import ActionConfigFile, ArgumentParser

from facetorch import io
from facetorch.baseline_runs import METHODS_BY_LAYOUT, VERIFICATION_METHODS, run_baseline, run_verification_baseline
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
    parser.add_argument("--pairs", type=Optional[str], default=None,
                        help="identity folders: verify the pairs of this LFW pairs.txt (eigenfaces, lbp)")
    parser.add_argument("--output", type=Optional[str], default=None, help="also write the JSON list here")
    args = parser.instantiate_classes(parser.parse_args(argv))
    data: FaceDataModule = args.data
    default_methods = VERIFICATION_METHODS if args.pairs else METHODS_BY_LAYOUT[data.layout]
    methods = [args.method] if args.method else list(default_methods)
    reports = []
    for method in methods:
        if args.pairs:
            report = run_verification_baseline(method, data, args.pairs)
        else:
            report = run_baseline(method, data, args.test_root)
        print(json.dumps(report), flush=True)
        reports.append(report)
    if args.output:
        io.write_json(args.output, {"baselines": reports})
    return reports


if __name__ == "__main__":
    main()

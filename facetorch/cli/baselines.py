"""``python tools/baselines.py``: score classical baselines on the same split a config gives the deep model.

    python tools/baselines.py --config configs/face_vgg.yaml --data.root DIR [--method hog_svm] [--output FILE]
    python tools/baselines.py --config configs/embedding_triplet.yaml --data.root DIR --pairs PAIRS.txt

Fits on the train + val splits, scores on the test split (or on every image of --test_root, as
tools/evaluate.py does for a checkpoint), and prints one flat JSON object per method (the same
keys as the model's metrics.json). With ``--pairs`` (identity folders), the classical face
embeddings (eigenfaces fitted on the training people, LBP histograms) verify the pairs of an LFW
pairs.txt instead, with the keys of ``tools/evaluate.py --pairs``.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from jsonargparse import ActionConfigFile, ArgumentParser

from facetorch import io
from facetorch.baselines.runs import METHODS_BY_LAYOUT, VERIFICATION_METHODS, run_baseline, run_verification_baseline
from facetorch.cli.common import FacetorchParsing, add_output, check_config_files, run_tool, shown_prog
from facetorch.data.datamodule import FaceDataModule


class BaselinesParser(FacetorchParsing, ArgumentParser):
    """jsonargparse as the other tools use it: flags only in full, plain help, a hint for a flag that is not there."""


def baselines(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Parse ``argv``, fit and score each baseline; print one JSON line per method."""
    parser = BaselinesParser(prog=shown_prog("baselines.py"), description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(FaceDataModule, "data")
    for ignored in ("trainer", "model"):  # the task's config also holds these; baselines ignore them
        parser.add_argument(f"--{ignored}", type=Optional[dict], default=None)
    # A run's saved config.yaml also names the checkpoint it resumed from: the baselines train their own.
    parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="ignored (a run's config.yaml holds it)")
    parser.add_argument("--seed_everything", type=Optional[int], default=None)
    parser.add_argument("--method", type=Optional[str], default=None, help="default: every method for the layout")
    parser.add_argument("--test_root", type=Optional[str], default=None,
                        help="score on every image of this folder (same layout) instead of the test split")
    parser.add_argument("--pairs", type=Optional[str], default=None,
                        help="identity folders: verify the pairs of this LFW pairs.txt (eigenfaces, lbp)")
    add_output(parser, "also write the JSON list here", required=False)
    check_config_files(sys.argv[1:] if argv is None else argv)
    config = parser.parse_args(argv)
    if config.output:  # before any slow step
        inputs = {"--config": [str(c) for c in config.get("config") or []], "--data.root": config.data.root,
                  "--data.shards": config.data.shards, "--test_root": config.test_root, "--pairs": config.pairs}  # fmt: skip
        io.check_output_file(config.output, config.overwrite, inputs=inputs)
    args = parser.instantiate(config)
    data: FaceDataModule = args.data
    default_methods = VERIFICATION_METHODS if args.pairs else METHODS_BY_LAYOUT[data.layout]
    methods = [args.method] if args.method else list(default_methods)
    reports = []
    for method in methods:
        if args.pairs:
            report = run_verification_baseline(method, data, args.pairs)
        else:
            report = run_baseline(method, data, args.test_root)
        print(io.json_line(report), flush=True)
        reports.append(report)
    if args.output:
        io.write_json(args.output, {"baselines": reports})
    return reports


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/baselines.py``: :func:`baselines`, with input errors as one line and exit code 2."""
    sys.exit(run_tool("baselines.py", baselines, argv))

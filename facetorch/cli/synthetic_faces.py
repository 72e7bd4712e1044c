"""``python tools/synthetic_faces.py``: a generated ``identity_folders`` data set for scale measurements.

Examples:
    python tools/synthetic_faces.py --output /tmp/faces50k --identities 5000 --per_identity 10 --size 64
    python tools/synthetic_faces.py --output /tmp/scan1m --identities 10000 --per_identity 100 --empty

The faces are synthetic patterns (an identity is a face-like drawing of its own shape and colour,
its images differ by shift, light and noise), not real people. ``--empty`` writes empty ``.jpg``
files instead: enough to time a folder scan (``tools/benchmark.py --task scan``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from facetorch import io
from facetorch.cli.common import add_output, add_quiet, image_side, nonnegative_int, positive_int, run_tool, tool_parser
from facetorch.data.synthetic import write_empty_tree, write_synthetic_faces

PROG = "synthetic_faces.py"


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    parser = tool_parser(PROG, __doc__)
    add_output(parser, "the data folder, new or empty")
    parser.add_argument("--identities", type=positive_int, default=5000, help="people (one folder each)")
    parser.add_argument("--per_identity", type=positive_int, default=10, help="images per person")
    parser.add_argument("--size", type=image_side, default=64, help="side of the square images, in pixels")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--empty", action="store_true", help="empty files (for scan timing), no images")
    add_quiet(parser)
    return parser


def synthetic_faces(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, write the data set, print (and return) a JSON summary."""
    args = build_parser().parse_args(argv)
    output = io.check_output_folder(args.output, args.overwrite)
    if args.empty:
        summary = write_empty_tree(output, args.identities, args.per_identity)
    else:
        summary = write_synthetic_faces(output, args.identities, args.per_identity, args.size, args.seed,
                                        show_progress=not args.quiet)  # fmt: skip
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    """``tools/synthetic_faces.py``: :func:`synthetic_faces`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, synthetic_faces, argv))

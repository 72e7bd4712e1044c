"""``python tools/prepare_crops.py``: face / non-face crops (``face_crops`` layout) or identity face crops.

Examples:
    python tools/prepare_crops.py --labelme data/boxes --output data/crops
    python tools/prepare_crops.py --voc data/boxes/voc --output data/crops --margin 0.1
    python tools/prepare_crops.py --haar data/lfw/images --output data/lfw_faces --identity_layout --size 112
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from facetorch import io
from facetorch.cli.common import (
    add_output,
    add_quiet,
    fraction,
    image_side,
    nonnegative_int,
    positive_int,
    run_tool,
    tool_parser,
)
from facetorch.data.annotations import scan_labelme_folder, scan_voc_folder
from facetorch.data.crops import (
    check_output_folder,
    check_split_shares,
    clear_previous_crops,
    haar_annotations,
    split_by_image,
    write_crops,
    write_identity_crops,
    write_no_face_list,
)
from facetorch.data.haar import HaarFaceDetector

PROG = "prepare_crops.py"


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    parser = tool_parser(PROG, __doc__)
    parser.add_argument("--labelme", type=Path, metavar="DIR", action="append", default=[],
                        help="images with LabelMe JSON beside them (repeatable)")
    parser.add_argument("--voc", type=Path, metavar="DIR", action="append", default=[],
                        help="Pascal VOC XML folder, images in it or its parent (repeatable)")
    parser.add_argument("--haar", type=Path, metavar="DIR", action="append", default=[],
                        help="root/<identity>/<image> or flat images; faces found by the Haar cascade (repeatable)")
    add_output(parser, "output folder, new or empty", overwrite_help="write into a non-empty --output (old crops are replaced)")
    parser.add_argument("--negatives_per_image", type=nonnegative_int, default=5, help="non-face crops cut from each image")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--margin", type=fraction, default=0.0, help="face box growth per side, fraction of its size")
    parser.add_argument("--split", default=None, metavar="TRAIN,VAL,TEST",
                        help="write train/, val/, test/ sub-folders, splitting by source image (e.g. 0.7,0.15,0.15)")
    parser.add_argument("--max_faces", type=positive_int, default=None, help="error on an image annotated with more faces")
    parser.add_argument(
        "--identity_layout", action="store_true", help="with --haar: write output/<identity>/<stem>.png"
    )
    parser.add_argument("--size", type=image_side, default=112, help="side of the square identity crops, in pixels")
    parser.add_argument("--cascade", default="haarcascade_frontalface_default.xml", help="OpenCV Haar cascade")
    add_quiet(parser)
    return parser


def prepare_crops(argv: list[str] | None = None) -> str:
    """Parse ``argv``, write the crops, print and return what was written."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.labelme or args.voc or args.haar):
        parser.error("give at least one source: --labelme DIR, --voc DIR or --haar DIR")
    if args.identity_layout and (args.labelme or args.voc or len(args.haar) != 1 or args.split):
        parser.error("--identity_layout takes exactly one --haar DIR and no other source or --split")
    args.output = Path(args.output)
    summary = _run(args)
    print(summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    """``tools/prepare_crops.py``: :func:`prepare_crops`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, prepare_crops, argv))


def _parse_split(text: str) -> list[float]:
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"expected --split TRAIN,VAL,TEST as three numbers, e.g. 0.7,0.15,0.15; got {text!r}") from None
    check_split_shares(shares)
    return shares


def _run(args: argparse.Namespace) -> str:
    inputs = {"--labelme": args.labelme, "--voc": args.voc, "--haar": args.haar}
    check_output_folder(args.output, args.overwrite, inputs=inputs)  # before any slow step
    if args.split is not None:
        _parse_split(args.split)
    if args.overwrite:  # one clean-up of every earlier run's crops (with --split they sit in sub-folders)
        clear_previous_crops(args.output)
    annotations = []
    for folder in args.labelme:
        annotations += scan_labelme_folder(folder, max_faces=args.max_faces)
    for folder in args.voc:
        annotations += scan_voc_folder(folder, max_faces=args.max_faces)
    lines, without_face = [], []
    for folder in args.haar:
        found, missed = haar_annotations(folder, HaarFaceDetector(args.cascade), progress=not args.quiet)
        annotations += found
        without_face += missed
        for path in missed:
            io.notice(f"no face found: {path}")
        lines.append(f"Haar found a face in {len(found)}/{len(found) + len(missed)} images of {folder}")
    written = _write(args, annotations)
    if not any(summary.faces or summary.negatives for _, summary in written):
        sources = ", ".join(f"{flag} {str(p)!r}" for flag, paths in inputs.items() for p in paths)
        raise ValueError(f"{sources}: no crop could be cut from {len(annotations)} image(s) ({len(without_face)} without a "
                         "face), so nothing was written; give photos with faces (and their boxes)")  # fmt: skip
    lines += [f"{name}: {summary}" if name else str(summary) for name, summary in written]
    if args.haar:  # written last: the crop writers want an empty output folder
        root = Path(os.path.commonpath([p.resolve() for p in args.haar]))
        no_face = write_no_face_list(args.output, [p.resolve() for p in without_face], root)
        lines.append(f"{len(without_face)} image(s) without a face listed in {no_face}")
    return "\n".join(lines)


def _write(args: argparse.Namespace, annotations: list) -> list[tuple[str, Any]]:
    """(split name or "", its crop summary) for each folder written."""
    options = dict(margin=args.margin, overwrite=args.overwrite, progress=not args.quiet)
    if args.identity_layout:
        return [("", write_identity_crops(annotations, args.output, root=args.haar[0], size=args.size, **options))]
    crop_options = dict(negatives_per_image=args.negatives_per_image, seed=args.seed, **options)
    if args.split is None:
        return [("", write_crops(annotations, args.output, **crop_options))]
    parts = split_by_image(annotations, _parse_split(args.split), args.seed)
    return [(name, write_crops(part, args.output / name, **crop_options)) for name, part in parts.items()]

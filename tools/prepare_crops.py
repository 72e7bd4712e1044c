"""Prepare face / non-face crops (``face_crops`` layout) or identity face crops.

Examples:
    python tools/prepare_crops.py --labelme data/boxes --output data/crops
    python tools/prepare_crops.py --voc data/boxes/voc --output data/crops --margin 0.1
    python tools/prepare_crops.py --haar data/lfw/images --output data/lfw_faces --identity-layout --size 112
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facetorch.crops import (
    check_output_folder,
    haar_annotations,
    split_by_image,
    write_crops,
    write_identity_crops,
    write_no_face_list,
)
from facetorch.data.annotations import AnnotationError, scan_labelme_folder, scan_voc_folder
from facetorch.haar import CascadeLoadError, HaarFaceDetector


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labelme", type=Path, metavar="DIR", action="append", default=[],
                        help="images with LabelMe JSON beside them (repeatable)")
    parser.add_argument("--voc", type=Path, metavar="DIR", action="append", default=[],
                        help="Pascal VOC XML folder, images in it or its parent (repeatable)")
    parser.add_argument("--haar", type=Path, metavar="DIR", action="append", default=[],
                        help="root/<identity>/<image> or flat images; faces found by the Haar cascade (repeatable)")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR")
    parser.add_argument("--negatives-per-image", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=0.0, help="face box growth per side, fraction of its size")
    parser.add_argument("--split", default=None, metavar="TRAIN,VAL,TEST",
                        help="write train/, val/, test/ sub-folders, splitting by source image (e.g. 0.7,0.15,0.15)")
    parser.add_argument("--max-faces", type=int, default=None, help="error on an image annotated with more faces")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output (old crops deleted)")
    parser.add_argument(
        "--identity-layout", action="store_true", help="with --haar: write output/<identity>/<stem>.png"
    )
    parser.add_argument("--size", type=int, default=112, help="side of the square identity crops")
    parser.add_argument("--cascade", default="haarcascade_frontalface_default.xml", help="OpenCV Haar cascade")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.labelme or args.voc or args.haar):
        parser.error("give at least one source: --labelme DIR, --voc DIR or --haar DIR")
    if args.identity_layout and (args.labelme or args.voc or len(args.haar) != 1 or args.split):
        parser.error("--identity-layout takes exactly one --haar DIR and no other source or --split")
    try:
        print(_run(args))
    except (AnnotationError, OSError, ValueError, CascadeLoadError) as exc:
        print(f"prepare_crops: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parse_split(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"expected --split TRAIN,VAL,TEST as three numbers, e.g. 0.7,0.15,0.15; got {text!r}") from None


def _run(args: argparse.Namespace) -> str:
    sources = [*args.labelme, *args.voc, *args.haar]
    for source in sources:  # before any slow step
        check_output_folder(args.output, args.overwrite, source=source)
    annotations = []
    for folder in args.labelme:
        annotations += scan_labelme_folder(folder, max_faces=args.max_faces)
    for folder in args.voc:
        annotations += scan_voc_folder(folder, max_faces=args.max_faces)
    lines, without_face = [], []
    for folder in args.haar:
        found, missed = haar_annotations(folder, HaarFaceDetector(args.cascade))
        annotations += found
        without_face += missed
        for path in missed:
            print(f"no face found: {path}", file=sys.stderr)
        lines.append(f"Haar found a face in {len(found)}/{len(found) + len(missed)} images of {folder}")
    lines += _write(args, annotations)
    if args.haar:  # written last: the crop writers want an empty output folder
        root = Path(os.path.commonpath([p.resolve() for p in args.haar]))
        no_face = write_no_face_list(args.output, [p.resolve() for p in without_face], root)
        lines.append(f"{len(without_face)} image(s) without a face listed in {no_face}")
    return "\n".join(lines)


def _write(args: argparse.Namespace, annotations: list) -> list[str]:
    options = dict(margin=args.margin, overwrite=args.overwrite)
    if args.identity_layout:
        return [str(write_identity_crops(annotations, args.output, root=args.haar[0], size=args.size, **options))]
    crop_options = dict(negatives_per_image=args.negatives_per_image, seed=args.seed, **options)
    if args.split is None:
        return [str(write_crops(annotations, args.output, **crop_options))]
    parts = split_by_image(annotations, _parse_split(args.split), args.seed)
    return [f"{name}: {write_crops(part, args.output / name, **crop_options)}" for name, part in parts.items()]


if __name__ == "__main__":
    sys.exit(main())

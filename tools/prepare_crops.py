"""Prepare face / non-face crops (``face_crops`` layout) or identity face crops.

Examples:
    python tools/prepare_crops.py --labelme data/boxes --output data/crops
    python tools/prepare_crops.py --voc data/boxes/voc --output data/crops --margin 0.1
    python tools/prepare_crops.py --haar data/lfw/images --output data/lfw_faces --identity-layout --size 112
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetorch.crops import (
    check_output_folder,
    haar_annotations,
    write_crops,
    write_identity_crops,
    write_no_face_list,
)
from facetorch.data.annotations import AnnotationError, scan_labelme_folder, scan_voc_folder
from facetorch.haar import CascadeLoadError, HaarFaceDetector


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labelme", type=Path, metavar="DIR", help="images with LabelMe JSON beside them")
    source.add_argument("--voc", type=Path, metavar="DIR", help="Pascal VOC XML folder (images in it or its parent)")
    source.add_argument(
        "--haar", type=Path, metavar="DIR", help="root/<identity>/<image> or flat images; faces by Haar cascade"
    )
    parser.add_argument("--output", type=Path, required=True, metavar="DIR")
    parser.add_argument("--negatives-per-image", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=0.0, help="face box growth per side, fraction of its size")
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
    if args.identity_layout and args.haar is None:
        parser.error("--identity-layout needs --haar")
    try:
        print(_run(args))
    except (AnnotationError, OSError, ValueError, CascadeLoadError) as exc:
        print(f"prepare_crops: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> str:
    crop_options = dict(margin=args.margin, overwrite=args.overwrite)
    if args.haar is None:
        source = args.labelme if args.labelme is not None else args.voc
        check_output_folder(args.output, args.overwrite, source=source)
        if args.labelme is not None:
            annotations = scan_labelme_folder(args.labelme, max_faces=args.max_faces)
        else:
            annotations = scan_voc_folder(args.voc, max_faces=args.max_faces)
        summary = write_crops(
            annotations, args.output, negatives_per_image=args.negatives_per_image, seed=args.seed, **crop_options
        )
        return str(summary)

    check_output_folder(args.output, args.overwrite, source=args.haar)  # before the slow part
    annotations, without_face = haar_annotations(args.haar, HaarFaceDetector(args.cascade))
    if args.identity_layout:
        summary = write_identity_crops(annotations, args.output, root=args.haar, size=args.size, **crop_options)
    else:
        summary = write_crops(
            annotations, args.output, negatives_per_image=args.negatives_per_image, seed=args.seed, **crop_options
        )
    no_face = write_no_face_list(args.output, without_face, args.haar)
    for path in without_face:
        print(f"no face found: {path}", file=sys.stderr)
    total = len(annotations) + len(without_face)
    return (
        f"Haar found a face in {len(annotations)}/{total} images ({len(without_face)} listed in {no_face}); {summary}"
    )


if __name__ == "__main__":
    sys.exit(main())

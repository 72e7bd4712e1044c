"""``python tools/prepare_crops.py``: face / non-face crops (``face_crops`` layout) or identity face crops.

Examples:
    python tools/prepare_crops.py --labelme data/boxes --output data/crops
    python tools/prepare_crops.py --voc data/boxes/voc --output data/crops --margin 0.1
    python tools/prepare_crops.py --haar data/lfw/images --output data/lfw_faces --identity_layout --size 112
    python tools/prepare_crops.py --labelme data/boxes --haar data/lfw/images --haar_box hand --output data/crops2 \
        --hard_negatives_from runs/face_vgg/version_0/checkpoints/best.ckpt
    python tools/prepare_crops.py --labelme data/boxes --haar data/lfw/images --output data/fold0 \
        --split 0.85,0.15,0 --test_fold 0/3
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
    probability,
    run_tool,
    tool_parser,
)
from facetorch.data.annotations import scan_labelme_folder, scan_voc_folder
from facetorch.data.crops import (
    check_output_folder,
    check_split_shares,
    clear_previous_crops,
    fold_by_image,
    haar_annotations,
    split_by_image,
    write_crops,
    write_identity_crops,
    write_no_face_list,
)
from facetorch.data.face_variants import FaceExtras
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
    parser.add_argument("--haar_box", choices=("haar", "hand"), default="haar",
                        help="--haar faces: the cascade's square box, or reshaped to a hand-drawn face box (taller, narrower)")
    parser.add_argument("--face_copies", type=nonnegative_int, default=0,
                        help="extra crops of each --labelme or --voc face, its box scaled 0.9-1.15x and shifted up to 6%%")
    parser.add_argument("--synthetic_masks", type=probability, default=0.0,
                        help="share of the --haar faces that also get a copy with a drawn face mask")
    parser.add_argument("--test_fold", default=None, metavar="I/K",
                        help="cross-validation by photo: the --labelme or --voc photos of fold I of K (seeded by --seed) "
                             "go to test/, the rest and every --haar photo to train/ and val/ by --split TRAIN,VAL,0")
    parser.add_argument("--hard_negatives_from", default=None, metavar="CKPT",
                        help="a face / non-face checkpoint: add the windows away from the faces that it calls faces "
                             "as extra non-face crops (<stem>_hard<j>.png; train/ only with --split)")
    parser.add_argument("--hard_negatives_per_image", type=positive_int, default=5,
                        help="most hard negatives kept per photo (the highest face scores)")
    parser.add_argument("--hard_negative_windows", type=positive_int, default=50,
                        help="random windows scored per photo when mining hard negatives")
    parser.add_argument("--hard_negatives_on", choices=("annotated", "all"), default="annotated",
                        help="mine the --labelme or --voc photos (real scenes; about 1 s a photo on 2 CPU cores) or every photo")
    parser.add_argument("--hard_negative_threshold", type=probability, default=0.5,
                        help="face probability from which a window counts as a false face")
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
    if args.identity_layout and (args.hard_negatives_from or args.test_fold or args.face_copies or args.synthetic_masks):
        parser.error("--identity_layout writes one crop per photo: drop --hard_negatives_from, --test_fold, "
                     "--face_copies and --synthetic_masks")
    if args.hard_negatives_from and args.hard_negatives_on == "annotated" and not (args.labelme or args.voc):
        parser.error("--hard_negatives_from mines the --labelme or --voc photos: give one, or --hard_negatives_on all")
    if args.test_fold and not (args.labelme or args.voc):
        parser.error("--test_fold holds out --labelme or --voc photos: give at least one of them")
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


def _parse_fold(text: str, split: str | None) -> tuple[int, int]:
    """``--test_fold I/K`` as ``(I, K)``, checked together with ``--split``."""
    fold, _, folds = text.partition("/")
    if not (fold.strip().isdigit() and folds.strip().isdigit() and int(folds) >= 2 and int(fold) < int(folds)):
        raise ValueError(f"expected --test_fold I/K with K >= 2 folds and 0 <= I < K, e.g. 0/3; got {text!r}")
    if split is None or _parse_split(split)[2] != 0:
        raise ValueError(f"--test_fold {text} makes the test split itself: give --split TRAIN,VAL,0 for the other "
                         f"photos (e.g. 0.85,0.15,0), got --split {split}")  # fmt: skip
    return int(fold), int(folds)


def _run(args: argparse.Namespace) -> str:
    inputs = {"--labelme": args.labelme, "--voc": args.voc, "--haar": args.haar}
    check_output_folder(args.output, args.overwrite, inputs=inputs)  # before any slow step
    if args.split is not None:
        _parse_split(args.split)
    if args.test_fold is not None:
        _parse_fold(args.test_fold, args.split)
    args.miner = _miner(args)  # a wrong checkpoint fails here, before the Haar pass
    if args.overwrite:  # one clean-up of every earlier run's crops (with --split they sit in sub-folders)
        clear_previous_crops(args.output)
    annotations = []
    for folder in args.labelme:
        annotations += scan_labelme_folder(folder, max_faces=args.max_faces)
    for folder in args.voc:
        annotations += scan_voc_folder(folder, max_faces=args.max_faces)
    annotated = len(annotations)  # the hand-annotated photos come first; --test_fold holds out some of them
    lines, without_face = [], []
    for folder in args.haar:
        found, missed = haar_annotations(folder, HaarFaceDetector(args.cascade), progress=not args.quiet,
                                         box_shape=args.haar_box)
        annotations += found
        without_face += missed
        for path in missed:
            io.notice(f"no face found: {path}")
        lines.append(f"Haar found a face in {len(found)}/{len(found) + len(missed)} images of {folder}")
    written = _write(args, annotations, annotated)
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


def _miner(args: argparse.Namespace) -> Any:
    if args.hard_negatives_from is None:
        return None
    from facetorch.inference.hard_negatives import HardNegativeMiner  # torch and the model: only when mining

    # A more eager cascade than the crop finder's: a window near anything face-like is not kept.
    finder = HaarFaceDetector(args.cascade, min_neighbors=3)
    return HardNegativeMiner(args.hard_negatives_from, per_image=args.hard_negatives_per_image,
                             windows=args.hard_negative_windows, threshold=args.hard_negative_threshold,
                             face_finder=finder, photos=None if args.hard_negatives_on == "all" else set())  # fmt: skip


def _write(args: argparse.Namespace, annotations: list, annotated: int) -> list[tuple[str, Any]]:
    """(split name or "", its crop summary) for each folder written."""
    options = dict(margin=args.margin, overwrite=args.overwrite, progress=not args.quiet)
    if args.identity_layout:
        return [("", write_identity_crops(annotations, args.output, root=args.haar[0], size=args.size, **options))]
    hand_boxed = {a.image_path for a in annotations[:annotated]}
    extras = FaceExtras(hand_boxed, args.face_copies, args.synthetic_masks)
    if args.miner is not None and args.miner.photos is not None:
        args.miner.photos = hand_boxed
    crop_options = dict(negatives_per_image=args.negatives_per_image, seed=args.seed, **options)
    if args.split is None:
        return [("", write_crops(annotations, args.output, miner=args.miner, extra_faces=extras, **crop_options))]
    if args.test_fold is None:
        parts = split_by_image(annotations, _parse_split(args.split), args.seed)
    else:
        fold, folds = _parse_fold(args.test_fold, args.split)
        rest, held_out = fold_by_image(annotations[:annotated], folds, fold, args.seed)
        parts = split_by_image(rest + annotations[annotated:], _parse_split(args.split), args.seed)
        parts["test"] = held_out
    # Hard negatives and extra faces only where the model learns: val and test stay as a user's photos give them.
    train = {"miner": args.miner, "extra_faces": extras}
    return [(name, write_crops(part, args.output / name, **(train if name == "train" else {}), **crop_options))
            for name, part in parts.items()]  # fmt: skip

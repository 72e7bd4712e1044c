"""``python tools/prepare_boxes.py``: pseudo-labelled face boxes (``labelme`` layout) from a teacher detector.

dlib's CNN detector (``dlib_cnn``) runs over folders of photos (searched recursively); a photo where
it finds exactly one face (of at least ``--min_face`` of the photo's shorter side) is copied into
``--output`` with a LabelMe JSON beside it. The inputs are never modified. With ``--fit_on`` (a
hand-labelled ``labelme`` folder), the teacher's box is first mapped to the hand-drawn convention:
a linear map of centre and size fitted on the **train split only** of that folder (the split that
``tools/train.py`` makes with the same ``--val_fraction``, ``--test_fraction`` and ``--split_seed``);
its IoU gain on the validation split is reported. The teacher never runs on the test photos.

Examples:
    python tools/prepare_boxes.py --images data/lfw/images --fit_on data/face_boxes --output runs/pseudo_lfw
    python tools/prepare_boxes.py --images data/orl_faces --upsample 1 --fit_on data/face_boxes --output runs/pseudo_orl
    python tools/prepare_boxes.py --images photos --output runs/pseudo_raw --max_per_folder 200 --upsample 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from facetorch import io
from facetorch.boxes import largest_box, paired_iou
from facetorch.cli.common import (
    add_output,
    add_quiet,
    fraction,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    run_tool,
    tool_parser,
    upsample,
)
from facetorch.data.files import is_image_file
from facetorch.data.images import read_image
from facetorch.data.pseudo_boxes import BoxMapping, fit_box_mapping, write_labelme
from facetorch.recognition.detectors import DlibCNNFaces

PROG = "prepare_boxes.py"


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    parser = tool_parser(PROG, __doc__)
    parser.add_argument("--images", type=Path, metavar="DIR", action="append", default=[], required=True,
                        help="a folder of photos, searched recursively (repeatable)")  # fmt: skip
    add_output(parser, "labelme folder to write, new or empty", overwrite_help="write into a non-empty --output "
               "(files of the same names are replaced; never an input)")  # fmt: skip
    parser.add_argument("--fit_on", type=Path, metavar="DIR", default=None,
                        help="hand-labelled labelme folder: map the teacher's boxes to its convention (train split only)")
    parser.add_argument("--val_fraction", type=fraction, default=0.15, help="--fit_on split, as data.val_fraction")
    parser.add_argument("--test_fraction", type=fraction, default=0.2, help="--fit_on split, as data.test_fraction")
    parser.add_argument("--split_seed", type=nonnegative_int, default=0, help="--fit_on split, as data.seed")
    parser.add_argument("--upsample", type=upsample, default=0,
                        help="double the photos this many times before detecting (faces under 80 pixels; ORL needs 1)")
    parser.add_argument("--min_score", type=nonnegative_float, default=0.0,
                        help="teacher detections scored below this are ignored")
    parser.add_argument("--min_face", type=fraction, default=0.2, help="smallest face side, as a share of the shorter photo side")
    parser.add_argument("--max_per_folder", type=positive_int, default=None,
                        help="at most this many photos of each --images folder (a seeded random choice)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="seed of --max_per_folder's choice")
    parser.add_argument("--summary", type=Path, default=None, metavar="FILE", help="also write the JSON summary here")
    add_quiet(parser)
    return parser


def photos_under(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth), sorted.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no image.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {str(folder)!r} is not a folder")
    photos = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not photos:
        raise ValueError(f"--images {str(folder)!r} holds no image (expected .jpg, .png, .pgm, ... files in it or its "
                         "sub-folders); give a folder of photos")  # fmt: skip
    return photos


def fit_mapping(teacher: DlibCNNFaces, args: argparse.Namespace) -> tuple[BoxMapping, dict[str, Any]]:
    """The mapping fitted on ``--fit_on``'s train split, and its IoU on the validation split before and after."""
    from facetorch.data.datamodule import FaceDataModule

    data = FaceDataModule(str(args.fit_on), layout="labelme", val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, seed=args.split_seed, cache_images=False)  # fmt: skip
    found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    counts: dict[str, int] = {}
    for split in ("train", "val"):  # never the test split
        index = data.splits[split]
        pairs = []
        for i in io.progress(range(len(index)), f"teacher on {split}", enabled=not args.quiet):
            if index.boxes[i] is None:
                continue
            boxes = teacher.detect(read_image(index.sources[i], 3))[0]
            box = boxes[largest_box(boxes)] if len(boxes) else None
            pairs.append((box, np.asarray(index.boxes[i], dtype=np.float64)))
        found[split] = [(b, t) for b, t in pairs if b is not None]
        counts[split] = len(pairs)
    if len(found["train"]) < 2:
        raise ValueError(f"--fit_on {str(args.fit_on)!r}: the teacher found a face in {len(found['train'])} train photos; "
                         "fitting the box mapping needs at least 2")  # fmt: skip
    mapping = fit_box_mapping(np.stack([b for b, _ in found["train"]]), np.stack([t for _, t in found["train"]]))
    report: dict[str, Any] = {"mapping": mapping.to_dict(), "fit_photos": len(found["train"]),
                              "fit_train_faces": counts["train"], "val_faces": counts["val"],
                              "val_found": len(found["val"])}  # fmt: skip
    if found["val"]:
        raw, truth = np.stack([b for b, _ in found["val"]]), np.stack([t for _, t in found["val"]])
        before, after = paired_iou(raw, truth), paired_iou(mapping.apply(raw), truth)
        # Over the faces found, and over every validation face (a face the teacher missed counts 0).
        report.update({"val_iou_raw": float(before.mean()), "val_iou_mapped": float(after.mean()),
                       "val_iou_raw_all": float(before.sum() / counts["val"]),
                       "val_iou_mapped_all": float(after.sum() / counts["val"])})  # fmt: skip
    return mapping, report


def label_folder(teacher: DlibCNNFaces, folder: Path, tag: str, mapping: BoxMapping, args: argparse.Namespace) -> dict[str, int]:
    """Write the photos of ``folder`` with exactly one clear face; returns what happened to the photos."""
    photos = photos_under(folder)
    if args.max_per_folder is not None and len(photos) > args.max_per_folder:
        chosen = np.random.default_rng(args.seed).choice(len(photos), args.max_per_folder, replace=False)
        photos = [photos[i] for i in sorted(chosen)]
    counts = {"photos": len(photos), "written": 0, "no_face": 0, "several_faces": 0, "small_face": 0}
    for photo in io.progress(photos, f"teacher on {folder.name}", enabled=not args.quiet):
        image = read_image(photo, 3)
        height, width = image.shape[:2]
        boxes, scores = teacher.detect(image)
        boxes = boxes[scores >= args.min_score]
        if len(boxes) != 1:
            counts["no_face" if len(boxes) == 0 else "several_faces"] += 1
            continue
        box = mapping.apply(boxes, width, height)[0]
        if min(box[2] - box[0], box[3] - box[1]) < args.min_face * min(width, height):
            counts["small_face"] += 1
            continue
        stem = "__".join((tag, *photo.relative_to(folder).with_suffix("").parts))
        write_labelme(photo, args.output, stem, box, (width, height))
        counts["written"] += 1
    return counts


def prepare_boxes(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Parse ``argv``, write the pseudo-labelled photos, print the JSON summary as the last line and return it."""
    args = build_parser().parse_args(argv)
    args.output = Path(args.output)
    io.check_output_folder(args.output, args.overwrite, inputs={"--images": args.images, "--fit_on": args.fit_on})
    folders = {f"s{i}": folder for i, folder in enumerate(args.images)}
    for folder in folders.values():
        photos_under(folder)  # a folder without photos fails before the slow teacher
    if args.summary is not None:
        io.check_output_file(args.summary, args.overwrite, flag="--summary", inputs={"--images": args.images})
    teacher = DlibCNNFaces(upsample=args.upsample)
    summary: dict[str, Any] = {"teacher": "dlib_cnn", "upsample": args.upsample, "mapping": BoxMapping().to_dict()}
    mapping = BoxMapping()
    if args.fit_on is not None:
        mapping, fitted = fit_mapping(teacher, args)
        summary.update(fitted)
    args.output.mkdir(parents=True, exist_ok=True)
    summary["folders"] = {str(folder): label_folder(teacher, folder, tag, mapping, args) for tag, folder in folders.items()}
    summary["written"] = sum(c["written"] for c in summary["folders"].values())
    if summary["written"] == 0:
        raise ValueError(f"no photo of {', '.join(map(str, args.images))} had exactly one face the teacher found "
                         f"(of at least --min_face {args.min_face}); nothing was written")  # fmt: skip
    if args.summary is not None:
        io.write_json(args.summary, summary)
    print(io.json_line(summary))
    return summary


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/prepare_boxes.py``: :func:`prepare_boxes`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, prepare_boxes, argv))

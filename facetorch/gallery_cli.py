"""``python tools/gallery.py enroll|identify|verify|evaluate``: the face gallery from the command line.

Examples::

    python tools/gallery.py enroll   --ckpt CKPT --images PEOPLE_DIR --gallery people.npz
    python tools/gallery.py identify --ckpt CKPT --gallery people.npz --images DIR_OR_FILE --output ids.csv
    python tools/gallery.py verify   --ckpt CKPT IMG1 IMG2
    python tools/gallery.py evaluate --ckpt CKPT --gallery people.npz --known DIR --unknown DIR
    python tools/gallery.py split    --images PEOPLE_DIR --people 30 --per-person 5 --output DIR

``verify`` uses the pair threshold calibrated at validation and stored in the checkpoint;
``identify`` and ``evaluate`` use the gallery's open-set threshold, calibrated on the enrolled
people at each enrolment (see :mod:`facetorch.gallery`). ``--threshold`` overrides either.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from facetorch import io
from facetorch.gallery import Embedder, Gallery, enroll, evaluate_open_set, identify, split_open_set, verify


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gallery.py", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ckpt", required=True, help="EmbeddingTask checkpoint")
    common.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    common.add_argument(
        "--faces", choices=("whole", "haar"), default="whole",
        help="whole: images are face crops; haar: crop the largest face found by OpenCV's Haar cascade",
    )
    common.add_argument("--margin", type=float, default=0.2, help="margin around a Haar face, as a fraction of its size")
    commands = parser.add_subparsers(dest="command", required=True)

    enrol = commands.add_parser("enroll", parents=[common], help="add people (a folder per person) to a gallery")
    enrol.add_argument("--images", required=True, help="folder of <person>/<images>")
    enrol.add_argument("--gallery", required=True, help="gallery file (.npz); created if missing, else extended")
    enrol.add_argument("--open-set-fpir", type=float, default=None,
                       help="share of strangers identify may accept, calibrated on the enrolled people (default 0.05)")

    ident = commands.add_parser("identify", parents=[common], help="name each face, or 'unknown'")
    ident.add_argument("--gallery", required=True)
    ident.add_argument("--images", required=True, help="an image, or a folder of images (searched recursively)")
    ident.add_argument("--threshold", type=float, default=None, help="cosine similarity to accept a match")
    ident.add_argument("--output", default=None, help="CSV to write (refuses to overwrite); default: stdout")

    ver = commands.add_parser("verify", parents=[common], help="are two images the same person?")
    ver.add_argument("image1")
    ver.add_argument("image2")
    ver.add_argument("--threshold", type=float, default=None)

    ev = commands.add_parser("evaluate", parents=[common], help="open-set identification metrics")
    ev.add_argument("--gallery", required=True)
    ev.add_argument("--known", required=True, help="<person>/<images> probes of enrolled people")
    ev.add_argument("--unknown", required=True, help="<person>/<images> probes of people never enrolled")
    ev.add_argument("--threshold", type=float, default=None)
    ev.add_argument("--output", default=None, help="also write the metrics JSON here (refuses to overwrite)")

    split = commands.add_parser("split", help="copy people into enrol/, known/ and unknown/ for evaluate")
    split.add_argument("--images", required=True, help="folder of <person>/<images>")
    split.add_argument("--people", type=int, required=True, help="people to enrol (the first, in natural order)")
    split.add_argument("--per-person", type=int, required=True, help="images enrolled per person (the rest probe)")
    split.add_argument("--output", required=True, help="new or empty folder")
    return parser


def _refuse_existing(path: Optional[str]) -> None:
    if path is not None and Path(path).exists():
        raise SystemExit(f"error: {path} exists; choose another --output (facetorch never overwrites results)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "split":
        print(json.dumps(split_open_set(args.images, args.output, args.people, args.per_person)))
        return
    if getattr(args, "output", None):
        _refuse_existing(args.output)
    embedder = Embedder(args.ckpt, device=args.device, faces=args.faces, margin=args.margin)
    if args.command == "enroll":
        result = enroll(embedder, args.gallery, args.images, args.open_set_fpir)
        for path, reason in result["skipped"].items():
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(json.dumps({k: v for k, v in result.items() if k != "skipped"} | {"skipped": len(result["skipped"])}))
        return
    if args.command == "verify":
        print(json.dumps(verify(embedder, args.image1, args.image2, args.threshold)))
        return
    gallery = Gallery.load(args.gallery)
    gallery.check_model(embedder, args.gallery)
    if args.command == "identify":
        rows = identify(embedder, gallery, args.images, args.threshold)
        fields = ["file", "name", "similarity", "error"]
        if args.output:
            with io.atomic_open(Path(args.output), "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        else:
            writer = csv.DictWriter(sys.stdout, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        return
    report = evaluate_open_set(embedder, gallery, args.known, args.unknown, args.threshold)
    if args.output:
        io.write_json(Path(args.output), report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

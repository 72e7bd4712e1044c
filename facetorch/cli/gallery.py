"""``python tools/gallery.py enroll|identify|verify|evaluate|split``: the face gallery from the command line.

Examples::

    python tools/gallery.py enroll   --ckpt_path CKPT --images PEOPLE_DIR --gallery people.npz
    python tools/gallery.py identify --ckpt_path CKPT --gallery people.npz --images DIR_OR_FILE --output ids.csv
    python tools/gallery.py verify   --ckpt_path CKPT IMG1 IMG2
    python tools/gallery.py evaluate --ckpt_path CKPT --gallery people.npz --known DIR --unknown DIR
    python tools/gallery.py split    --images PEOPLE_DIR --people 30 --per_person 5 --output DIR
    python tools/gallery.py identify --model model.onnx --gallery people.npz --images DIR_OR_FILE

``--model FILE.onnx`` (an ``EmbeddingTask`` exported by ``tools/export.py``) runs instead of a
checkpoint, with onnxruntime: the same embeddings, the same fingerprint (a gallery enrolled from
the checkpoint works with its export and the other way round), the same pair threshold.

``verify`` uses the pair threshold calibrated at validation and stored in the checkpoint;
``identify`` and ``evaluate`` use the gallery's open-set threshold, calibrated on the enrolled
people at each enrolment (see :mod:`facetorch.inference.gallery`). ``--threshold`` overrides either.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any, Optional

from facetorch import io
from facetorch.cli.common import add_ckpt_path, add_output, add_quiet, rename_legacy_flags, run_tool, tool_parser
from facetorch.inference.gallery import (
    Embedder,
    FaceEmbedder,
    Gallery,
    enroll,
    evaluate_open_set,
    haar_face_finder,
    identify,
    split_open_set,
    verify,
)

PROG = "gallery.py"
RENAMED = {"--ckpt": "--ckpt_path", "--open-set-fpir": "--open_set_fpir", "--per-person": "--per_person"}
IDENTIFY_FIELDS = ["file", "name", "similarity", "error"]


def _parser() -> Any:
    parser = tool_parser(PROG, __doc__)
    common = argparse.ArgumentParser(add_help=False)  # options every model-using command shares
    add_ckpt_path(common, "EmbeddingTask checkpoint (runs/.../checkpoints/best.ckpt)", required=False)
    common.add_argument("--model", default=None, metavar="FILE.onnx",
                        help="an EmbeddingTask exported by tools/export.py --format onnx, instead of --ckpt_path")
    common.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    common.add_argument(
        "--faces", choices=("whole", "haar"), default="whole",
        help="whole: images are face crops; haar: crop the largest face found by OpenCV's Haar cascade",
    )  # fmt: skip
    common.add_argument("--margin", type=float, default=0.2, help="margin around a Haar face, as a fraction of its size")
    add_quiet(common)
    commands = parser.add_subparsers(dest="command", required=True)

    enrol = commands.add_parser("enroll", parents=[common], help="add people (a folder per person) to a gallery")
    enrol.add_argument("--images", required=True, help="folder of <person>/<images>")
    enrol.add_argument("--gallery", required=True, help="gallery file (.npz); created if missing, else extended")
    enrol.add_argument("--open_set_fpir", type=float, default=None,
                       help="share of strangers identify may accept, calibrated on the enrolled people (default 0.05)")

    ident = commands.add_parser("identify", parents=[common], help="name each face, or 'unknown'")
    ident.add_argument("--gallery", required=True)
    ident.add_argument("--images", required=True, help="an image, or a folder of images (searched recursively)")
    ident.add_argument("--threshold", type=float, default=None, help="cosine similarity to accept a match")
    add_output(ident, "CSV to write (default: stdout)", required=False)

    ver = commands.add_parser("verify", parents=[common], help="are two images the same person?")
    ver.add_argument("image1")
    ver.add_argument("image2")
    ver.add_argument("--threshold", type=float, default=None)

    ev = commands.add_parser("evaluate", parents=[common], help="open-set identification metrics")
    ev.add_argument("--gallery", required=True)
    ev.add_argument("--known", required=True, help="<person>/<images> probes of enrolled people")
    ev.add_argument("--unknown", required=True, help="<person>/<images> probes of people never enrolled")
    ev.add_argument("--threshold", type=float, default=None)
    add_output(ev, "also write the metrics JSON here", required=False)

    split = commands.add_parser("split", help="copy people into enrol/, known/ and unknown/ for evaluate")
    split.add_argument("--images", required=True, help="folder of <person>/<images>")
    split.add_argument("--people", type=int, required=True, help="people to enrol (the first, in natural order)")
    split.add_argument("--per_person", type=int, required=True, help="images enrolled per person (the rest probe)")
    add_output(split, "new or empty folder")
    return parser


def gallery(argv: Optional[list[str]] = None) -> Any:
    """Parse ``argv`` and run one gallery command; its result is printed as JSON (CSV for ``identify``)."""
    args = _parser().parse_args(rename_legacy_flags(sys.argv[1:] if argv is None else argv, RENAMED, PROG))
    if args.command == "split":
        result = split_open_set(args.images, args.output, args.people, args.per_person, args.overwrite)
        print(io.json_line(result))
        return result
    if getattr(args, "output", None):  # before the model is loaded and any image is embedded
        io.check_output_file(args.output, args.overwrite)
    embedder = _embedder(args)
    if args.command == "enroll":
        result = enroll(embedder, args.gallery, args.images, args.open_set_fpir)
        for path, reason in result["skipped"].items():
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(io.json_line({k: v for k, v in result.items() if k != "skipped"} | {"skipped": len(result["skipped"])}))
        return result
    if args.command == "verify":
        result = verify(embedder, args.image1, args.image2, args.threshold)
        print(io.json_line(result))
        return result
    people = Gallery.load(args.gallery)
    people.check_model(embedder, args.gallery)
    if args.command == "identify":
        rows = identify(embedder, people, args.images, args.threshold)
        if args.output:
            io.write_csv(args.output, IDENTIFY_FIELDS, rows)
        else:
            writer = csv.DictWriter(sys.stdout, fieldnames=IDENTIFY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        return rows
    report = evaluate_open_set(embedder, people, args.known, args.unknown, args.threshold)
    if args.output:
        io.write_json(args.output, report)
    print(io.json_line(report))
    return report


def _embedder(args: argparse.Namespace) -> FaceEmbedder:
    """The checkpoint's :class:`Embedder`, or an exported model's :class:`OnnxEmbedder` (``--model``)."""
    if (args.ckpt_path is None) == (args.model is None):
        raise ValueError("give the embedding model as --ckpt_path CKPT or as --model FILE.onnx (one of the two)")
    if args.model is None:
        return Embedder(args.ckpt_path, device=args.device, faces=args.faces, margin=args.margin, progress=not args.quiet)
    from facetorch.inference.onnx_model import OnnxEmbedder

    face_of = haar_face_finder(args.margin) if args.faces == "haar" else None
    return OnnxEmbedder(args.model, face_of=face_of, progress=not args.quiet)


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/gallery.py``: :func:`gallery`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, gallery, argv))

"""``python tools/gallery.py <command>``: enroll, recognize, identify, verify, list, remove, cluster, name, ...

Examples::

    python tools/gallery.py enroll    --config configs/embedding_dlib.yaml --images PEOPLE_DIR --gallery people.db
    python tools/gallery.py enroll    --ckpt_path CKPT --source 0 --name NAME --count 5 --gallery people.db
    python tools/gallery.py recognize --gallery people.db --source PATH_OR_INDEX --output DIR [--detector haar|dlib_cnn|CKPT]
    python tools/gallery.py identify  --ckpt_path CKPT --gallery people.db --images DIR_OR_FILE --output ids.csv
    python tools/gallery.py verify    --ckpt_path CKPT IMG1 IMG2
    python tools/gallery.py evaluate  --ckpt_path CKPT --gallery people.db --known DIR --unknown DIR
    python tools/gallery.py list      --gallery people.db [--output people.csv]
    python tools/gallery.py remove    --gallery people.db --name NAME   (or --file FILE: one image)
    python tools/gallery.py rename    --gallery people.db --name OLD --to NEW
    python tools/gallery.py migrate   --gallery old.npz --to people.db
    python tools/gallery.py split     --images PEOPLE_DIR --people 30 --per_person 5 --output DIR
    python tools/gallery.py compose   --lfw LFW_PEOPLE_DIR [--orl ORL_DIR] --output DIR
    python tools/gallery.py compose   --video --lfw LFW_PEOPLE_DIR --seed 1 --output DIR   (moving faces, video_truth.csv)
    python tools/gallery.py score     --truth DIR/truth.csv --recognitions OUT/recognitions.csv
    python tools/gallery.py identify  --model model.onnx --gallery people.db --images DIR_OR_FILE
    python tools/gallery.py cluster   --config configs/embedding_dlib.yaml --images PHOTOS --output OUT
    python tools/gallery.py name      --clusters OUT --cluster 7 --name "Ann" --gallery people.db

``--gallery`` is an SQLite file (``people.db`` or ``sqlite:///PATH``, the default for new
galleries), a PostgreSQL database (``postgresql://user@host/dbname``, shared by several processes
or machines), or a ``.npz`` gallery of facetorch 0.1, read-only from 0.2.0 (``migrate`` converts
one). See :mod:`facetorch.recognition.database`.

``--model FILE.onnx`` (an ``EmbeddingTask`` exported by ``tools/export.py``) runs instead of a
checkpoint, with onnxruntime: the same embeddings, the same fingerprint (a gallery enrolled from
the checkpoint works with its export and the other way round), the same pair threshold. It embeds
crops or the largest Haar face (``--faces``); ``recognize`` and detector enrolment need
``--config`` or ``--ckpt_path``, which align the faces.

``enroll --images`` finds the person's face in each ordinary photo (``--detector``, default
dlib_cnn) and aligns it (in a photo with several faces, the one that matches the person's other
photos, else ``--pick``'s: central, largest, or ask = skip); ``--faces whole`` enrols face crops as they are, ``--faces haar`` the
largest Haar face. ``recognize`` finds every face of each image or frame with the gallery's
detector (or ``--detector``), and names it or answers ``unknown``; it writes annotated images or
an annotated video and recognitions.csv (source,frame,x1,y1,x2,y2,name,score), and prints a
JSON summary with frames/s and faces/s as the last line. A video or a camera is tracked (unless
``--no_track``): the detector runs every ``--detect_every`` frames, each track is named from all
its faces so far, and the CSV adds ``track`` and ``quality`` (docs/video.md). Without ``--config`` / ``--ckpt_path``
it uses the model the gallery records. ``verify`` uses the pair threshold calibrated at
validation and stored in the checkpoint; ``identify``, ``evaluate`` and ``recognize`` use the
gallery's open-set threshold, calibrated on the enrolled people at each enrolment (see
:mod:`facetorch.recognition.gallery`). ``--threshold`` overrides either.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from facetorch import io, ranges
from facetorch.cli import cluster as cluster_cli
from facetorch.cli.common import (
    add_ckpt_path,
    add_output,
    add_quiet,
    cosine,
    fraction,
    nonnegative_int,
    number_type,
    open_fraction,
    positive_fraction,
    positive_int,
    run_tool,
    tool_parser,
)
from facetorch.inference.embedder import Embedder, FaceEmbedder, haar_face_finder
from facetorch.recognition.database import FaceGallery, migrate_gallery, open_gallery
from facetorch.recognition.enrollment import enroll, split_open_set
from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.probes import evaluate_open_set, identify, verify
from facetorch.recognition.tracked import TrackOptions

TRACK_DEFAULTS = TrackOptions()

PROG = "gallery.py"
# dlib_cnn's doublings of an image: each one quadruples the pixels (4: 256 times the memory).
upsample = number_type(ranges.Kind("times an image is doubled", low=0, high=4, integer=True), "upsample")
IDENTIFY_FIELDS = ["file", "name", "similarity", "error"]
LIST_FIELDS = ["name", "images"]
GALLERY_HELP = "people.db (SQLite), sqlite:///PATH, postgresql://... or an old .npz (read-only)"
DEFAULT_DETECTOR = "dlib_cnn"
# What each command reads: an output (or the gallery enroll writes) may never be one of these.
INPUT_FLAGS = {"--images": "images", "--source": "source", "--config": "config", "--ckpt_path": "ckpt_path",
               "--model": "model", "--detector": "detector", "--gallery": "gallery", "--known": "known",
               "--unknown": "unknown", "--lfw": "lfw", "--orl": "orl", "--truth": "truth",
               "--recognitions": "recognitions", "image1": "image1", "image2": "image2"}  # fmt: skip


def _parser() -> Any:
    parser = tool_parser(PROG, __doc__)
    common = argparse.ArgumentParser(add_help=False)  # options every model-using command shares
    add_ckpt_path(common, "EmbeddingTask checkpoint (runs/.../checkpoints/best.ckpt)", required=False)
    common.add_argument("--config", default=None, metavar="CFG",
                        help="an EmbeddingTask config whose pretrained network to use instead of a checkpoint "
                             "(e.g. configs/embedding_dlib.yaml)")  # fmt: skip
    common.add_argument("--model", default=None, metavar="FILE.onnx",
                        help="an EmbeddingTask exported by tools/export.py --format onnx, instead of --ckpt_path")
    common.add_argument("--device", default=None, help="torch device (cpu, cuda; default: cuda when available)")
    common.add_argument(
        "--faces", choices=("whole", "haar"), default=None,
        help="whole: images are face crops (the default, except for enroll); haar: crop the largest face found by "
             "OpenCV's Haar cascade",
    )  # fmt: skip
    common.add_argument("--margin", type=fraction, default=0.2,
                        help="margin around a Haar face (or a detector's box, for a model without alignment), "
                             "as a fraction of its size")  # fmt: skip
    add_quiet(common)
    detection = argparse.ArgumentParser(add_help=False)  # how enroll and recognize find faces
    detection.add_argument("--detector", default=None, metavar="haar|dlib_cnn|CKPT",
                           help="face detector: haar (OpenCV), dlib_cnn (dlib's CNN, in PyTorch) or a FaceDetectorTask "
                                "checkpoint (one face per frame); default: the gallery's, else dlib_cnn")  # fmt: skip
    detection.add_argument("--upsample", type=upsample, default=0,
                           help="dlib_cnn: double each image this many times first, for faces under 80 pixels")
    detection.add_argument("--every", type=positive_int, default=1, help="a camera or video: use every N-th frame")
    detection.add_argument("--max_frames", type=positive_int, default=None, help="a camera or video: stop after N frames")
    commands = parser.add_subparsers(dest="command", required=True)

    enrol = commands.add_parser("enroll", parents=[common, detection],
                                help="add people to a gallery: photos (a folder per person), or a camera")
    enrol.add_argument("--images", default=None, help="folder of <person>/<photos> (ordinary photos, or crops with --faces)")
    enrol.add_argument("--source", default=None, help="a camera index (0) or a video file to enrol --name from")
    enrol.add_argument("--name", default=None, help="with --source: the person's name")
    enrol.add_argument("--count", type=positive_int, default=5, help="with --source: frames to enrol (each with one clear face)")
    enrol.add_argument("--gallery", required=True, help=f"{GALLERY_HELP}; created if missing, else extended")
    enrol.add_argument("--open_set_fpir", type=open_fraction, default=None,
                       help="share of strangers identify may accept, calibrated on the enrolled people (default 0.05)")
    enrol.add_argument("--pick", choices=("central", "largest", "ask"), default="central",
                       help="a photo with several faces, none clearly the largest and none matching the person's other "
                            "photos: the large face nearest the middle (central, for portraits), the largest, or skip it "
                            "(ask)")  # fmt: skip

    rec = commands.add_parser("recognize", parents=[common, detection],
                              help="find, align and name every face of images, a folder, a video or a camera")
    rec.add_argument("--gallery", required=True, help=GALLERY_HELP)
    rec.add_argument("--source", required=True, help="image, folder of images, video file, or camera index (0)")
    add_output(rec, "output folder, new or empty: annotated images or video, and recognitions.csv")
    rec.add_argument("--threshold", type=cosine, default=None,
                     help="open_set: cosine similarity to accept a match (default: the gallery's); svm: least probability "
                          "(default 0: closed set, as the original)")
    rec.add_argument("--matcher", choices=("open_set", "svm"), default="open_set",
                     help="open_set: the gallery's open-set threshold; svm: the original's linear SVM and its probability")
    rec.add_argument("--show", action="store_true", help="also show the annotated frames in a window (q stops)")
    rec.add_argument("--batch_size", type=positive_int, default=1, help="frames of a stream detected at once (for a GPU)")
    rec.add_argument("--fourcc", default="mp4v", choices=["mp4v", "MJPG"],
                     help="annotated video codec: mp4v (.mp4) or MJPG (.avi)")
    tracking = rec.add_argument_group("face tracks (videos and cameras; see docs/video.md)")
    tracking.add_argument("--no_track", action="store_true",
                          help="decide each frame alone (no tracks; the CSV has the eight columns only)")
    tracking.add_argument("--detect_every", type=int, default=None,
                          help=f"run the detector every N frames, moving the boxes by optical flow in between "
                               f"(default {TRACK_DEFAULTS.detect_every})")  # fmt: skip
    tracking.add_argument("--embed_every", type=int, default=TRACK_DEFAULTS.embed_every,
                          help="embed a named track's face again after N frames (also when new, resized or undecided)")
    tracking.add_argument("--max_gap", type=int, default=TRACK_DEFAULTS.max_gap,
                          help="frames a track may go undetected before it ends")

    ident = commands.add_parser("identify", parents=[common], help="name each face, or 'unknown'")
    ident.add_argument("--gallery", required=True, help=GALLERY_HELP)
    ident.add_argument("--images", required=True, help="an image, or a folder of images (searched recursively)")
    ident.add_argument("--threshold", type=cosine, default=None, help="cosine similarity to accept a match, in [0, 1]")
    add_output(ident, "CSV to write (default: stdout)", required=False)

    ver = commands.add_parser("verify", parents=[common], help="are two images the same person?")
    ver.add_argument("image1")
    ver.add_argument("image2")
    ver.add_argument("--threshold", type=cosine, default=None, help="cosine similarity to call a pair the same, in [0, 1]")

    ev = commands.add_parser("evaluate", parents=[common], help="open-set identification metrics")
    ev.add_argument("--gallery", required=True, help=GALLERY_HELP)
    ev.add_argument("--known", required=True, help="<person>/<images> probes of enrolled people")
    ev.add_argument("--unknown", required=True, help="<person>/<images> probes of people never enrolled")
    ev.add_argument("--threshold", type=cosine, default=None, help="cosine similarity to accept a match, in [0, 1]")
    add_output(ev, "also write the metrics JSON here", required=False)

    listing = commands.add_parser("list", help="the enrolled people and their image counts, as CSV")
    listing.add_argument("--gallery", required=True, help=GALLERY_HELP)
    add_output(listing, "CSV to write (default: stdout)", required=False)
    remove = commands.add_parser("remove", help="remove a person (--name) or one enrolled image (--file)")
    remove.add_argument("--gallery", required=True, help=GALLERY_HELP)
    remove.add_argument("--name", default=None, help="the person to remove, with all their images")
    remove.add_argument("--file", default=None, help="one enrolled image to remove (its path, or a camera frame's label)")
    rename = commands.add_parser("rename", help="rename a person")
    rename.add_argument("--gallery", required=True, help=GALLERY_HELP)
    rename.add_argument("--name", required=True, help="the person's name now")
    rename.add_argument("--to", required=True, help="the new name")
    migrate = commands.add_parser("migrate", help="copy a gallery (an old .npz) into a new SQLite or PostgreSQL one")
    migrate.add_argument("--gallery", required=True, help="the gallery to copy (e.g. people.npz)")
    migrate.add_argument("--to", required=True, help="the new gallery: people.db, sqlite:///PATH or postgresql://...")

    split = commands.add_parser("split", help="copy people into enrol/, known/ and unknown/ for evaluate")
    split.add_argument("--images", required=True, help="folder of <person>/<images>")
    split.add_argument("--people", type=positive_int, required=True, help="people to enrol (the first, in natural order)")
    split.add_argument("--per_person", type=positive_int, required=True, help="images enrolled per person (the rest probe)")
    add_output(split, "new or empty folder")

    comp = commands.add_parser("compose", help="a multi-face test set: enrolment photos, group pictures, a video, the truth")
    comp.add_argument("--lfw", default=None, help="folder of <person>/<photos> (e.g. lfw_devtrain/images); needed "
                      "except for --video --orl")
    comp.add_argument("--orl", default=None, help="ORL's folder of s1..s40 (its faces are doubled)")
    comp.add_argument("--people", type=positive_int, default=40, help="LFW people enrolled (the others are strangers)")
    comp.add_argument("--per_person", type=positive_int, default=3, help="photos enrolled per LFW person (the others probe)")
    comp.add_argument("--orl_people", type=nonnegative_int, default=10, help="ORL people enrolled (5 photos each)")
    comp.add_argument("--scenes", type=positive_int, default=40, help="group pictures")
    comp.add_argument("--seed", type=nonnegative_int, default=0)
    comp.add_argument("--video", action="store_true",
                      help="instead: a video of moving faces (enrol/, video.avi, video_truth.csv with a track column); "
                           "with --orl and no --lfw: ORL's photo sequences played one subject after another")
    comp.add_argument("--tracks", type=positive_int, default=12, help="with --video: faces crossing the frame")
    comp.add_argument("--frames", type=positive_int, default=160, help="with --video: frames of the video")
    add_output(comp, "new or empty folder")

    score = commands.add_parser("score", help="score recognitions.csv against a composed set's truth.csv")
    score.add_argument("--truth", required=True, help="truth.csv or video_truth.csv of gallery.py compose")
    score.add_argument("--recognitions", required=True, help="recognitions.csv of gallery.py recognize")
    score.add_argument("--iou", type=positive_fraction, default=0.4, help="least IoU between a detection and a true face")
    add_output(score, "also write the metrics JSON here", required=False)
    cluster_cli.add_commands(commands, common)  # cluster, name, cluster-set
    return parser


def _device(name: Optional[str]) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _embedder(args: Any, gallery: Optional[FaceGallery] = None, faces: str = "whole", aligned: bool = False) -> FaceEmbedder:
    """The model of ``--config``, ``--ckpt_path`` or ``--model FILE.onnx``, else the one the gallery records.

    ``aligned``: the caller embeds detector boxes (recognize, enrolment with a detector), which
    the ONNX path cannot do (it does not align).
    """
    given = [flag for flag, value in (("--config", args.config), ("--ckpt_path", args.ckpt_path), ("--model", args.model))
             if value is not None]  # fmt: skip
    if len(given) > 1:
        raise ValueError(f"give the embedding model once: {' and '.join(given)} were both given")
    config, ckpt = args.config, args.ckpt_path
    if args.model is not None:
        if aligned:
            raise ValueError(f"--model {args.model!r}: the ONNX path embeds crops or the largest Haar face (--faces) and "
                             f"does not align detector boxes; {args.command} needs --config CFG or --ckpt_path CKPT")  # fmt: skip
        from facetorch.inference.onnx_model import OnnxEmbedder

        face_of = haar_face_finder(args.margin) if faces == "haar" else None
        return OnnxEmbedder(args.model, face_of=face_of, progress=not args.quiet)
    if not given:
        kind, _, path = gallery.meta.model.partition(":") if gallery is not None else ("", "", "")
        if kind in ("config", "ckpt") and Path(path).is_file():
            config, ckpt = (path, None) if kind == "config" else (None, path)
        elif gallery is not None:
            recorded = f"records {gallery.meta.model!r}, which is not there" if gallery.meta.model else "records no model"
            raise ValueError(f"--gallery {args.gallery!r} {recorded}: pass --config CFG or --ckpt_path CKPT")
        else:
            raise ValueError("give the embedding model as --config CFG (e.g. configs/embedding_dlib.yaml), "
                             "as --ckpt_path CKPT or as --model FILE.onnx (one of them)")  # fmt: skip
    return Embedder(ckpt, device=_device(args.device), faces=faces, margin=args.margin, progress=not args.quiet,  # type: ignore[arg-type]
                    config=config)  # fmt: skip


def _detector(args: Any, recorded: Optional[str]) -> Any:
    """``--detector``, else the gallery's (when it can be rebuilt from its name), else dlib_cnn."""
    from facetorch.recognition.detectors import DETECTOR_NAMES, build_face_detector

    name = args.detector
    if name is None:
        if recorded is not None and recorded.startswith("ckpt:"):
            raise ValueError(f"--gallery {args.gallery!r} was enrolled with a detector checkpoint ({recorded}): "
                             "pass --detector CKPT")  # fmt: skip
        name = recorded if recorded in DETECTOR_NAMES else DEFAULT_DETECTOR
    return build_face_detector(name, device=_device(args.device), upsample=args.upsample)


def _load_gallery(path: str) -> FaceGallery:
    gallery = open_gallery(path)
    if len(gallery) == 0:
        gallery.close()
        raise GalleryError(f"--gallery {path!r} is empty: enrol people first (gallery.py enroll)")
    return gallery


def _recorded_detector(target: str) -> Optional[str]:
    """The detector an existing gallery records (None: no gallery there yet). A new .npz is refused here."""
    from facetorch.recognition.stores import store_kind
    from facetorch.recognition.stores.base import NoGalleryError
    from facetorch.recognition.stores.npz import read_only_message

    if store_kind(target) == "npz":
        if Path(target).exists():
            raise GalleryError(read_only_message(f"--gallery {target!r}"))
        raise GalleryError(f"--gallery {target!r}: new galleries are SQLite files from facetorch 0.2.0 (.npz is read-only): "
                           f"enrol into {str(Path(target).with_suffix('.db'))!r}, or convert an old .npz with "
                           "`gallery.py migrate`")  # fmt: skip
    try:
        with open_gallery(target) as gallery:
            return gallery.meta.detector
    except (FileNotFoundError, NoGalleryError):
        return None


def _enroll(args: Any) -> dict[str, Any]:
    from facetorch.recognition.enrollment import enroll_photos, enroll_stream

    if (args.images is None) == (args.source is None):
        raise ValueError("enroll needs --images PEOPLE_DIR (photos) or --source CAMERA_OR_VIDEO --name NAME, not both")
    if args.faces is not None and (args.detector is not None or args.source is not None):
        raise ValueError("--faces (crops, or the largest Haar face of each image) and --detector / --source exclude each other")
    if args.source is not None and not args.name:
        raise ValueError("--source needs --name NAME: the person in front of the camera")
    recorded = _recorded_detector(args.gallery)  # before any model loads: a bad or read-only gallery fails at once
    if args.faces is not None:  # the original way: face crops, or the largest Haar face
        embedder = _embedder(args, faces=args.faces)
        return enroll(embedder, args.gallery, args.images, args.open_set_fpir, faces=args.faces)
    if args.images is not None and not Path(args.images).is_dir():
        raise FileNotFoundError(f"--images {args.images!r} is not a folder of person folders")
    embedder = _embedder(args, aligned=True)
    detector = _detector(args, recorded)
    if args.source is not None:
        return enroll_stream(embedder, detector, args.gallery, args.source, args.name, args.count, args.every,
                             args.max_frames, args.open_set_fpir, progress=not args.quiet)  # fmt: skip
    return enroll_photos(embedder, detector, args.gallery, args.images, args.open_set_fpir, progress=not args.quiet,
                         pick=args.pick)  # fmt: skip


def _recognize(args: Any) -> Any:
    from facetorch.recognition.enrollment import check_gallery_setup
    from facetorch.recognition.pipeline import Recognizer, build_matcher
    from facetorch.recognition.runs import check_show, recognize_source
    from facetorch.recognition.streams import open_source

    io.check_output_folder(args.output, args.overwrite)  # before anything is loaded
    if args.faces is not None:
        raise ValueError("recognize finds every face with --detector; --faces is for enroll, identify and verify")
    if args.show:
        check_show()
    track = _track_options(args)
    gallery = _load_gallery(args.gallery)
    try:
        source = open_source(args.source)  # a missing file or camera fails here, before the models load
        try:
            embedder = _embedder(args, gallery, aligned=True)
            detector = _detector(args, gallery.meta.detector)
            for note in check_gallery_setup(gallery, embedder, detector.name, args.gallery):
                print(f"{PROG}: note: {note}", file=sys.stderr)
            matcher = build_matcher(args.matcher, gallery, args.threshold)
        except BaseException:
            source.release()
            raise
        run = recognize_source(Recognizer(embedder, detector, matcher), source, args.output, overwrite=args.overwrite,
                               every=args.every, max_frames=args.max_frames, batch_size=args.batch_size, show=args.show,
                               fourcc=args.fourcc, progress=not args.quiet, track=track)  # fmt: skip
    finally:
        gallery.close()
    if run.frames == 0 and not run.stopped_early:
        raise ValueError(f"--source {args.source!r}: no image or frame could be read ({len(run.unreadable)} unreadable, "
                         f"{run.frames_read} read), so nothing was recognised; give a readable image, folder, video or "
                         "camera")  # fmt: skip
    print(io.json_line(asdict(run)), flush=True)
    return run


def _admin(args: Any) -> Any:
    """list, remove, rename, migrate: the gallery alone, no model."""
    if args.command == "migrate":
        return migrate_gallery(args.gallery, args.to)
    if args.command == "list" and args.output:
        io.check_output_file(args.output, args.overwrite)
    with open_gallery(args.gallery) as gallery:
        if args.command == "list":
            rows = [{"name": name, "images": count} for name, count in gallery.counts()]
            if args.output:
                io.write_csv(args.output, LIST_FIELDS, rows)
            else:
                writer = csv.DictWriter(sys.stdout, fieldnames=LIST_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
            return rows
        if args.command == "rename":
            gallery.rename(args.name, args.to)
            return {"renamed": args.name, "to": args.to, "people": gallery.num_people}
        if (args.name is None) == (args.file is None):
            raise ValueError("remove needs --name NAME (a person) or --file FILE (one image), one of them")
        if args.name is not None:
            result = {"removed": args.name, "images": gallery.remove(args.name)}
        else:
            result = {"removed_file": args.file, "of": gallery.remove_file(args.file)}
        import warnings

        with warnings.catch_warnings():  # a gallery left with fewer than 3 people says so in the summary instead
            warnings.simplefilter("ignore")
            threshold = gallery.calibrate_open_set()
        return {**result, "people": gallery.num_people, "rows": len(gallery),
                "open_set_threshold": threshold if math.isfinite(threshold) else None}  # fmt: skip


def _track_options(args: Any) -> Optional[TrackOptions]:
    """The tracking options of recognize (None with --no_track), checked before anything loads."""
    if args.no_track:
        if args.detect_every is not None:
            raise ValueError("--detect_every moves boxes along face tracks; it cannot go with --no_track (use --every)")
        return None
    if args.batch_size != 1:
        raise ValueError(f"--batch_size {args.batch_size} batches frames of per-frame recognition; tracking goes frame by "
                         "frame: add --no_track, or leave --batch_size out")  # fmt: skip
    detect_every = TRACK_DEFAULTS.detect_every if args.detect_every is None else args.detect_every
    options = TrackOptions(detect_every=detect_every, embed_every=args.embed_every, max_gap=args.max_gap)
    options.check()
    return options


def _score(args: Any) -> dict[str, Any]:
    from facetorch.recognition.results import score_recognitions

    if args.output:
        io.check_output_file(args.output, args.overwrite)
    report = score_recognitions(args.truth, args.recognitions, iou=args.iou)
    if args.output:
        io.write_json(args.output, report)
    print(io.json_line(report))
    return report


def _check_outputs_are_not_inputs(args: Any) -> None:
    """Refuse an ``--output`` (for enroll: the ``--gallery`` it writes) that is an input of the command, or holds one."""
    inputs = {flag: getattr(args, name, None) for flag, name in INPUT_FLAGS.items()}
    if inputs["--detector"] is not None and not Path(inputs["--detector"]).is_file():
        inputs["--detector"] = None  # a detector's name (haar, dlib_cnn), not a file
    if args.command == "enroll":
        io.check_not_an_input(args.gallery, {k: v for k, v in inputs.items() if k != "--gallery"}, "--gallery")
    elif getattr(args, "output", None):
        io.check_not_an_input(args.output, inputs)


def gallery(argv: Optional[list[str]] = None) -> Any:
    """Parse ``argv`` and run one gallery command; its result is printed as JSON (CSV for ``identify``)."""
    args = _parser().parse_args(argv)
    _check_outputs_are_not_inputs(args)
    if args.command == "split":
        result = split_open_set(args.images, args.output, args.people, args.per_person, args.overwrite)
        print(io.json_line(result))
        return result
    if args.command == "compose" and args.lfw is None and not (args.video and args.orl):
        raise ValueError("compose needs --lfw LFW_PEOPLE_DIR (or --video --orl ORL_DIR for ORL's photo sequences)")
    if args.command == "compose" and args.video and args.lfw is None:
        from facetorch.data.moving import compose_photo_sequence_video

        result = compose_photo_sequence_video(args.orl, args.output, people=args.people, enrol_per_person=args.per_person,
                                              subjects=args.tracks, seed=args.seed, overwrite=args.overwrite)
        print(io.json_line(result))
        return result
    if args.command == "compose" and args.video:
        from facetorch.data.moving import compose_moving_video

        result = compose_moving_video(args.lfw, args.output, people=args.people, enrol_per_person=args.per_person,
                                      tracks=args.tracks, frames=args.frames, seed=args.seed, overwrite=args.overwrite)
        print(io.json_line(result))
        return result
    if args.command == "compose":
        from facetorch.data.scenes import compose_recognition_set

        result = compose_recognition_set(args.lfw, args.output, orl=args.orl, people=args.people,
                                         enrol_per_person=args.per_person, orl_people=args.orl_people,
                                         scenes=args.scenes, seed=args.seed, overwrite=args.overwrite)  # fmt: skip
        print(io.json_line(result))
        return result
    if args.command == "score":
        return _score(args)
    if args.command in ("list", "remove", "rename", "migrate"):
        result = _admin(args)
        if args.command != "list":
            print(io.json_line(result))
        return result
    if args.command in cluster_cli.COMMANDS:
        return cluster_cli.run(args, _embedder, _detector)
    if args.command == "recognize":
        return _recognize(args)
    if args.command == "enroll":
        result = _enroll(args)
        for path, reason in result["skipped"].items():
            io.notice(f"skipped {path}: {reason}")
        for path, note in result.get("picked", {}).items():
            io.notice(f"picked {path}: {note}")
        if result["skipped"]:
            io.notice(f"enrolled {result['added']} image(s); skipped {len(result['skipped'])} (each named above)")
        print(io.json_line({k: v for k, v in result.items() if k not in ("skipped", "picked")}
                           | {"skipped": len(result["skipped"]), "picked": len(result.get("picked", {}))}))  # fmt: skip
        return result
    if getattr(args, "output", None):  # before the model is loaded and any image is embedded
        io.check_output_file(args.output, args.overwrite)
    embedder = _embedder(args, faces=args.faces or "whole")
    if args.command == "verify":
        result = verify(embedder, args.image1, args.image2, args.threshold)
        print(io.json_line(result))
        return result
    with open_gallery(args.gallery) as people:
        people.check_model(embedder, args.gallery)
        if args.command == "identify":
            rows = identify(embedder, people, args.images, args.threshold)
            failed = [row["file"] for row in rows if row["error"]]
            if len(failed) == len(rows):
                raise ValueError(f"--images {args.images!r}: none of the {len(rows)} image(s) could be embedded, so nothing "
                                 f"was identified ({rows[0]['error']}); give readable face images")  # fmt: skip
            if failed:
                io.notice(f"skipped {len(failed)} of {len(rows)} image(s) that could not be embedded (the error column "
                          f"says why): {io.first_few(failed)}")  # fmt: skip
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


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/gallery.py``: :func:`gallery`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, gallery, argv))

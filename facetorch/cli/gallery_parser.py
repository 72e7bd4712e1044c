"""The command line of ``gallery.py`` (``facetorch gallery``): every subcommand and its flags, checked by kind."""

from __future__ import annotations

import argparse
from typing import Optional

from facetorch.cli import cluster as cluster_cli
from facetorch.cli.common import (
    add_ckpt_path,
    add_output,
    add_quiet,
    cosine,
    fraction,
    nonnegative_int,
    open_fraction,
    positive_fraction,
    positive_int,
    tool_parser,
    upsample,
)
from facetorch.recognition.decision_delay import CAMERA_DELAY, FILE_DELAY
from facetorch.recognition.tracked import TrackOptions

__all__ = ["DEFAULT_DETECTOR", "GALLERY_HELP", "PROG", "TRACK_DEFAULTS", "build_parser"]

PROG = "gallery.py"
TRACK_DEFAULTS = TrackOptions()
GALLERY_HELP = "people.db (SQLite), sqlite:///PATH, postgresql://... or an old .npz (read-only)"
DEFAULT_DETECTOR = "dlib_cnn"


def build_parser(doc: Optional[str]) -> argparse.ArgumentParser:
    """The parser of ``gallery.py`` and its subcommands; ``doc`` is the tool's help text (its examples)."""
    parser = tool_parser(PROG, doc)
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
    tracking.add_argument("--detect_every", type=positive_int, default=None,
                          help=f"run the detector every N frames, moving the boxes by optical flow in between "
                               f"(default {TRACK_DEFAULTS.detect_every})")  # fmt: skip
    tracking.add_argument("--embed_every", type=positive_int, default=TRACK_DEFAULTS.embed_every,
                          help="embed a named track's face again after N frames (also when new, resized or undecided)")
    tracking.add_argument("--max_gap", type=nonnegative_int, default=TRACK_DEFAULTS.max_gap,
                          help="frames a track may go undetected before it ends")
    tracking.add_argument("--decision_delay", type=nonnegative_int, default=None, metavar="FRAMES",
                          help=f"frames the CSV rows and the annotated video wait for their tracks' names to settle "
                               f"(default {FILE_DELAY} for a video file, {CAMERA_DELAY} for a camera)")  # fmt: skip

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

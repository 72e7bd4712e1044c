"""``python tools/detect.py``: detect the face in images, a video or a camera with a trained detector.

    python tools/detect.py --ckpt_path CKPT --source IMAGE|FOLDER|VIDEO|CAMERA_INDEX [--output DIR]
        [--threshold 0.5] [--max_frames N] [--fourcc mp4v|MJPG] [--device cpu|cuda] [--overwrite] [--quiet]

Writes annotated PNGs (images) or an annotated video (video, camera) and detections.csv
(source, frame, score, face, x1, y1, x2, y2) to --output, and prints a JSON summary with frames/s
as the last line of stdout.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Optional

from facetorch import io
from facetorch.cli.common import (
    TTA_FLIP_CHOICES,
    ToolParser,
    add_ckpt_path,
    add_output,
    add_quiet,
    positive_int,
    probability,
    run_tool,
    tool_parser,
    tta_flip_choice,
)
from facetorch.inference.detection import Detector
from facetorch.recognition.detect import DetectionRun, detect_source
from facetorch.recognition.streams import is_camera

PROG = "detect.py"


def build_parser() -> ToolParser:
    """The tool's arguments."""
    parser = tool_parser(PROG, __doc__)
    add_ckpt_path(parser, "detector checkpoint (runs/.../checkpoints/best.ckpt)")
    parser.add_argument("--source", required=True, help="image file, folder of images, video file, or camera index (0)")
    add_output(parser, "output folder, new or empty (default: detections)", required=False, default="detections",
               overwrite_help="write into a non-empty --output folder (files of the same name are replaced)")
    parser.add_argument("--threshold", type=probability, default=0.5, help="face score threshold in [0, 1] (default 0.5)")
    parser.add_argument("--max_frames", type=positive_int, default=None, help="stop a video or camera after this many frames")
    parser.add_argument("--fourcc", default="mp4v", choices=["mp4v", "MJPG"],
                        help="annotated video codec: mp4v (.mp4) or MJPG (.avi)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--tta_flip", default="checkpoint", choices=TTA_FLIP_CHOICES,
                        help="average each frame with its mirror image (default: as the checkpoint's model.tta_flip)")
    add_quiet(parser)
    return parser


def detect(argv: Optional[list[str]] = None) -> DetectionRun:
    """Parse ``argv``, run the detector over the source, print the summary as one JSON line."""
    args = build_parser().parse_args(argv)
    source = None if is_camera(args.source) else args.source
    inputs = {"--ckpt_path": args.ckpt_path, "--source": source}
    io.check_output_folder(args.output, args.overwrite, inputs=inputs)  # before loading the model
    detector = Detector(args.ckpt_path, args.threshold, args.device, tta_flip=tta_flip_choice(args.tta_flip))
    run = detect_source(detector, args.source, args.output, overwrite=args.overwrite, max_frames=args.max_frames,
                        fourcc=args.fourcc, progress=not args.quiet)  # fmt: skip
    if run.unreadable:
        io.notice(f"skipped {len(run.unreadable)} unreadable image(s) (named in {run.csv}): {io.first_few(run.unreadable)}")
    if run.frames == 0 and not run.stopped_early:
        raise ValueError(f"--source {args.source!r}: no image or frame could be read, so nothing was detected "
                         f"({len(run.unreadable)} unreadable); give a readable image, folder, video or camera")  # fmt: skip
    print(io.json_line(asdict(run)), flush=True)
    return run


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/detect.py``: :func:`detect`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, detect, argv))

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
from facetorch.cli.common import add_ckpt_path, add_output, add_quiet, rename_legacy_flags, run_tool, tool_parser
from facetorch.inference.detection import Detector
from facetorch.recognition.detect import DetectionRun, detect_source

PROG = "detect.py"
RENAMED = {"--ckpt": "--ckpt_path", "--max-frames": "--max_frames"}


def detect(argv: Optional[list[str]] = None) -> DetectionRun:
    """Parse ``argv``, run the detector over the source, print the summary as one JSON line."""
    parser = tool_parser(PROG, __doc__)
    add_ckpt_path(parser, "detector checkpoint (runs/.../checkpoints/best.ckpt)")
    parser.add_argument("--source", required=True, help="image file, folder of images, video file, or camera index (0)")
    add_output(parser, "output folder, new or empty (default: detections)", required=False, default="detections",
               overwrite_help="write into a non-empty --output folder (files of the same name are replaced)")
    parser.add_argument("--threshold", type=float, default=0.5, help="face score threshold (default 0.5)")
    parser.add_argument("--max_frames", type=int, default=None, help="stop a video or camera after this many frames")
    parser.add_argument("--fourcc", default="mp4v", choices=["mp4v", "MJPG"],
                        help="annotated video codec: mp4v (.mp4) or MJPG (.avi)")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when available")
    add_quiet(parser)
    args = parser.parse_args(rename_legacy_flags(sys.argv[1:] if argv is None else argv, RENAMED, PROG))
    io.check_output_folder(args.output, args.overwrite)  # before loading the model
    detector = Detector(args.ckpt_path, args.threshold, args.device)
    run = detect_source(detector, args.source, args.output, overwrite=args.overwrite, max_frames=args.max_frames,
                        fourcc=args.fourcc, progress=not args.quiet)  # fmt: skip
    print(io.json_line(asdict(run)), flush=True)
    return run


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/detect.py``: :func:`detect`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, detect, argv))

"""Detect the face in images, a video or a camera with a trained detector checkpoint.

    python tools/detect.py --ckpt CKPT --source IMAGE|FOLDER|VIDEO|CAMERA_INDEX [--output DIR]
        [--threshold 0.5] [--max-frames N] [--fourcc mp4v|MJPG] [--overwrite]

Writes annotated PNGs (images) or an annotated video (video, camera) and detections.csv
(source, frame, score, face, x1, y1, x2, y2) to --output, and prints a JSON summary with frames/s.
"""

from facetorch.detect import main

if __name__ == "__main__":
    main()

"""``python tools/benchmark.py --task face_vgg [--output FILE]``: throughput as ratios measured in one process.

Prints one JSON object: Trainer vs plain PyTorch loop, bf16-mixed + channels_last vs fp32, and
DataLoader vs model throughput, all measured in this process (``--compile`` adds torch.compile,
``--inference`` the inference rows against a plain eval loop); for ``--task embedding`` also faces/s
of the embedding network (fp32, bf16 + channels-last, and dlib's own network on the same chips for
``--config configs/embedding_dlib.yaml`` when dlib is installed). ``--task gradcam`` times Grad-CAM
and Guided Backprop on VGG16 / ResNet50 against plain autograd and the peer libraries; ``--task export``
compares each task's exported ONNX graph in onnxruntime (CPU) with PyTorch eager fp32 and bf16 +
channels-last on the same batch; ``--task losses`` times facetorch's triplet losses against
pytorch-metric-learning's, with their peak memory, and ``--task scan --data_root DIR`` times indexing
a folder of many files. ``--task recognition --data_root SET`` (a set of ``gallery.py
compose``) times the whole recognition (dlib_cnn, 5-point alignment, dlib's ResNet, open-set
match) against the ``face_recognition`` library on the same video frames; ``--task face_boxes
--data_root ../shared/data/face_boxes_dev`` scores the largest box of haar and dlib_cnn against the
hand-drawn one (mean IoU, IoU >= 0.5); ``--task gallery [--people 10000,100000,1000000]`` measures the
face database (SQLite, FAISS) on synthetic face-like embeddings against exact search, a bare FAISS
flat index and the ``.npz`` gallery (:mod:`facetorch.cli.gallery_bench`). ``--task clustering --data_root SET``
(a set of ``gallery.py cluster-set``) scores ``gallery.py cluster`` and the other clustering candidates against dlib's
own pipeline (BCubed, pairwise), on the set and on ``--resamples`` sub-collections;
``--task clustering_scale --sizes 10000,100000`` times the clustering of synthetic faces, with
its peak memory. ``--task serve --data_root SET`` runs K concurrent clients
(``--clients``, ``--seconds``) against ``facetorch serve`` on 127.0.0.1 and the same group pictures
in-process (:mod:`facetorch.serve.loadtest`). Every result
carries the machine's conditions (threads, load at start and end, CPU flags, torch version) and a
``warning`` when other work shared the machine.

``--all`` runs the CUDA test suite (``pytest -m cuda``) and every task's throughput, as one JSON:
the prepared command for a short slot on a GPU machine
(``python tools/benchmark.py --accelerator gpu --all --output gpu.json``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

from facetorch import io
from facetorch.bench.conditions import finish_conditions, start_conditions
from facetorch.bench.gradcam import run_gradcam
from facetorch.bench.losses import BATCH_SIZES, run_losses
from facetorch.bench.scan import run_scan
from facetorch.bench.training import SETUPS, config_path, run
from facetorch.cli.common import (
    add_output,
    image_side,
    nonnegative_int,
    positive_float,
    positive_int,
    positive_int_list,
    run_tool,
    tool_parser,
)

PROG = "benchmark.py"


def _parser() -> Any:
    parser = tool_parser(PROG, __doc__)
    parser.add_argument("--task", choices=sorted([*SETUPS, "gradcam", "export", "losses", "scan", "recognition",
                                                  "face_boxes", "gallery", "video", "clustering", "clustering_scale",
                                                  "serve"]),
                        help="what to measure (or --all)")
    parser.add_argument("--all", action="store_true", help="the CUDA tests and every task, as one JSON (for a GPU slot)")
    parser.add_argument("--batch_size", type=positive_int, default=32)
    parser.add_argument("--steps", type=positive_int, default=12, help="training steps per measurement (incl. warm-up)")
    parser.add_argument("--warmup", type=nonnegative_int, default=None,
                        help="untimed training steps (default 2), or repetitions for gradcam (default 1)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="alternating repetitions; medians are reported")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--data_root", default=None, help="data folder (default: the task's built-in/default data)")
    parser.add_argument("--config", default=None,
                        help="the config whose model and data to train (default: the task's own, e.g. "
                             "configs/embedding_triplet.yaml); --task embedding --config configs/embedding_dlib.yaml "
                             "times dlib's network, and dlib itself")
    parser.add_argument("--image_size", type=image_side, default=224, help="square input size (--task gradcam only)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (training and inference)")
    parser.add_argument("--inference", action="store_true", help="also time inference against a plain eval loop")
    parser.add_argument("--inference_batch_sizes", type=positive_int_list, default="1,64",
                        help="batch sizes of --inference (default 1,64)")
    parser.add_argument("--no_peers", action="store_true",
                        help="--task gradcam: leave out pytorch-grad-cam and captum; --task clustering: leave out dlib")
    parser.add_argument("--resamples", type=positive_int, default=8,
                        help="--task clustering: sub-collections scored besides the whole (each person cut to 1..7 photos)")
    parser.add_argument("--sizes", type=positive_int_list, default="10000,100000",
                        help="--task clustering_scale: numbers of synthetic faces")
    parser.add_argument("--frames", type=positive_int, default=6, help="--task recognition: video frames timed (one per scene)")
    parser.add_argument("--gallery", default=None,
                        help="--task recognition: a gallery enrolled with dlib_cnn from DATA_ROOT/enrol (default: enrol now)")
    parser.add_argument("--detector", default="dlib_cnn", help="--task video and serve: face detector (haar, dlib_cnn)")
    parser.add_argument("--detect_every", type=positive_int, default=None, help="--task video: the tracked run's --detect_every")
    parser.add_argument("--decision_delay", type=nonnegative_int, default=None,
                        help="--task video: the tracked run's --decision_delay (default: a video file's)")
    parser.add_argument("--clients", type=positive_int, default=4, help="--task serve: concurrent clients")
    parser.add_argument("--seconds", type=positive_float, default=30.0, help="--task serve: length of each load phase")
    parser.add_argument("--bad_every", type=nonnegative_int, default=0,
                        help="--task serve: every N-th request of a client is a bad upload (0: none)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="--task serve: torch threads of the model, in the server and in-process (default: torch's)")
    parser.add_argument("--batch_sizes", type=positive_int_list, default=",".join(map(str, BATCH_SIZES)),
                        help="comma-separated batch sizes (--task losses only)")
    parser.add_argument("--people", type=positive_int_list, default="10000,100000",
                        help="--task gallery: comma-separated gallery sizes in people (2 images each), e.g. 10000,100000,1000000")
    parser.add_argument("--no_legacy", action="store_true", help="--task gallery: leave out the .npz gallery of facetorch 0.1")
    parser.add_argument("--ef_search", type=positive_int_list, default=None,
                        help="--task gallery: HNSW candidate counts at which identify is also timed and its recall@1 "
                             "taken (e.g. 384,512,640,768), beside the default for the size")  # fmt: skip
    add_output(parser, "also write the JSON here", required=False)
    return parser


def measure(args: Any) -> dict[str, Any]:
    """One task's measurement, as the flags ask."""
    if args.task == "export":  # inference: the exported graph in onnxruntime against PyTorch eager
        return _export_benchmark(args)
    if args.task == "recognition":
        return _recognition_benchmark(args)
    if args.task == "gallery":
        from facetorch.cli.gallery_bench import run_gallery_benchmark

        if min(args.people) < 10:
            raise ValueError(f"--people must be gallery sizes of 10 people or more, e.g. 10000,100000; got {args.people}")
        return run_gallery_benchmark(args.people, legacy=not args.no_legacy, ef_values=tuple(args.ef_search or ()))
    if args.task == "face_boxes":
        return _face_boxes_benchmark(args)
    if args.task == "video":
        return _video_benchmark(args)
    if args.task in ("clustering", "clustering_scale"):
        from facetorch.cli.cluster_bench import measure_clustering, measure_scale

        return measure_clustering(args) if args.task == "clustering" else measure_scale(args)
    if args.task == "serve":
        return _serve_benchmark(args)
    if args.task == "scan":
        if args.data_root is None:
            raise ValueError("--task scan needs --data_root DIR (an identity_folders tree; tools/synthetic_faces.py --empty)")
        return run_scan(args.data_root, args.repeats)
    if args.task == "losses":
        return run_losses(args.batch_sizes, max(3, args.repeats), args.accelerator)
    if args.task == "gradcam":  # an inference-time benchmark, not a training setup
        warmup = 1 if args.warmup is None else args.warmup
        return run_gradcam(args.batch_size, args.image_size, args.repeats, warmup, args.accelerator, peers=not args.no_peers)
    warmup = 2 if args.warmup is None else args.warmup
    batches = tuple(args.inference_batch_sizes) if args.inference else ()
    return run(args.task, args.batch_size, args.steps, warmup, args.repeats, args.accelerator, args.data_root, args.config,
               compile=args.compile, inference_batch_sizes=batches)  # fmt: skip


def benchmark(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Parse ``argv``, measure, print the result as one JSON line."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.task and not args.all:
        parser.error("give --task NAME, or --all")
    if args.output:
        inputs = {"--data_root": args.data_root, "--config": args.config, "--gallery": args.gallery}
        io.check_output_file(args.output, args.overwrite, inputs=inputs)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    conditions = start_conditions(args.accelerator)
    if args.all:
        from facetorch.bench.suite import run_all

        result = run_all(args.accelerator, args.repeats)
    else:
        result = measure(args)
    result["conditions"] = finish_conditions(conditions)
    if args.output:
        io.write_json(args.output, result)
    print(io.json_line(result))
    return result


def _export_benchmark(args: Any) -> dict[str, Any]:
    from facetorch.bench.export import run_export
    from facetorch.inference.export import graph_and_onnx

    warmup = 2 if args.warmup is None else args.warmup
    return run_export(graph_and_onnx, batch_size=args.batch_size, steps=args.steps, warmup=warmup, repeats=args.repeats)


def _recognition_benchmark(args: Any) -> dict[str, Any]:
    """Facetorch's recognition against face_recognition's on the same frames of DATA_ROOT/video.avi (one per scene)."""
    import tempfile

    import cv2
    import torch

    from facetorch.bench.recognition import face_recognition_recognizer, run_recognition_speed
    from facetorch.data.images import read_image
    from facetorch.inference.embedder import Embedder
    from facetorch.recognition.database import open_gallery
    from facetorch.recognition.detectors import DlibCNNFaces
    from facetorch.recognition.enrollment import person_folders
    from facetorch.recognition.pipeline import OpenSetMatcher, Recognizer
    from facetorch.recognition.streams import open_source, read_frames

    if args.data_root is None or not (Path(args.data_root) / "video.avi").is_file():
        raise ValueError(f"--task recognition needs --data_root SET, a folder written by gallery.py compose (with video.avi and "
                         f"enrol/), got {args.data_root!r}")  # fmt: skip
    root = Path(args.data_root)
    source = open_source(str(root / "video.avi"))
    try:
        frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in read_frames(source.capture, None)]
    finally:
        source.release()
    hold = max(1, len(frames) // max(1, _scenes(root)))
    frames = frames[::hold][: args.frames]
    config = str(config_path(args.config or "embedding_dlib.yaml"))  # a path, or a name in the repository's configs/
    embedder = Embedder(config=config, progress=False)
    detector = DlibCNNFaces(device="cpu")
    with tempfile.TemporaryDirectory() as work:
        path = _benchmark_gallery(args, root, embedder, detector, work)
        with open_gallery(path) as people:
            ours = Recognizer(embedder, detector, OpenSetMatcher(people))
            known = {name: [read_image(f, 3) for f in files] for name, files in person_folders(root / "enrol").items()}
            try:
                theirs = face_recognition_recognizer(known)
            except ModuleNotFoundError as error:  # the peer is optional: say what to install, in one line
                hint = "its own dlib dependency builds from source: pip install --no-deps face-recognition beside dlib-bin"
                raise ValueError(f"--task recognition compares with the face_recognition library: {error} ({hint})") from error
            result = run_recognition_speed({"facetorch": lambda frame: len(ours([frame])[0]),
                                            "face_recognition": lambda frame: len(theirs(frame))},
                                           frames, repeats=args.repeats, warmup=1)  # fmt: skip
    result.update(config=config, detector="dlib_cnn (upsample 0, both)", frame_size=list(frames[0].shape[:2]),
                  torch_threads=torch.get_num_threads(), enrolled_photos=int(sum(len(v) for v in known.values())))  # fmt: skip
    return result


def _benchmark_gallery(args: Any, root: Path, embedder: Any, detector: Any, work: str) -> Path:
    """``--gallery``, or a new gallery in ``work`` enrolled from ROOT/enrol (a `gallery.py compose` set) with these models."""
    if args.gallery:
        return Path(args.gallery)
    from facetorch.recognition.enrollment import enroll_photos

    path = Path(work) / "gallery.db"
    enroll_photos(embedder, detector, path, root / "enrol", progress=False)
    return path


def _video_benchmark(args: Any) -> dict[str, Any]:
    """Tracked against per-frame recognition of DATA_ROOT/video.avi (gallery.py compose --video), scored and timed."""
    import tempfile

    from facetorch.inference.embedder import Embedder
    from facetorch.recognition.compare import compare_tracking
    from facetorch.recognition.database import open_gallery
    from facetorch.recognition.detectors import build_face_detector
    from facetorch.recognition.pipeline import OpenSetMatcher, Recognizer
    from facetorch.recognition.tracked import TrackOptions

    root = Path(args.data_root or "")
    if args.data_root is None or not (root / "video.avi").is_file() or not (root / "video_truth.csv").is_file():
        raise ValueError(f"--task video needs --data_root SET, a folder of `gallery.py compose --video` (video.avi, "
                         f"video_truth.csv, enrol/), got {args.data_root!r}")  # fmt: skip
    defaults = TrackOptions()
    options = TrackOptions(detect_every=args.detect_every or defaults.detect_every, decision_delay=args.decision_delay)
    options.check()
    config = str(config_path(args.config or "embedding_dlib.yaml"))
    embedder = Embedder(config=config, progress=False)
    detector = build_face_detector(args.detector, device="cpu")
    with tempfile.TemporaryDirectory() as work:
        path = _benchmark_gallery(args, root, embedder, detector, work)
        recognizer = Recognizer(embedder, detector, OpenSetMatcher(open_gallery(path)))
        runs = Path(args.output).with_suffix("") if args.output else Path(work) / "runs"  # beside the JSON, to look at
        result = compare_tracking(recognizer, root / "video.avi", root / "video_truth.csv", runs, options)
    result["config"] = config
    return result


def _serve_benchmark(args: Any) -> dict[str, Any]:
    """K clients against ``facetorch serve`` on loopback, and the same group pictures (DATA_ROOT/scenes) in-process."""
    import tempfile

    import torch

    from facetorch.data.files import list_images
    from facetorch.inference.embedder import Embedder
    from facetorch.recognition.database import open_gallery
    from facetorch.recognition.detectors import build_face_detector
    from facetorch.recognition.pipeline import OpenSetMatcher, Recognizer
    from facetorch.serve.loadtest import run_serve_load

    root = Path(args.data_root or "")
    if args.data_root is None or not (root / "scenes").is_dir() or not (root / "enrol").is_dir():
        raise ValueError(f"--task serve needs --data_root SET, a folder of `gallery.py compose` (with scenes/ and enrol/), "
                         f"got {args.data_root!r}")  # fmt: skip
    config = str(config_path(args.config or "embedding_dlib.yaml"))
    embedder = Embedder(config=config, progress=False)
    detector = build_face_detector(args.detector, device="cpu")
    files = list_images(root / "scenes")
    with tempfile.TemporaryDirectory() as work:
        gallery = _benchmark_gallery(args, root, embedder, detector, work)
        with open_gallery(gallery) as people:
            recognizer = Recognizer(embedder, detector, OpenSetMatcher(people))
            server = ["--gallery", str(gallery), "--config", config, "--detector", args.detector, "--device", "cpu"]
            result = run_serve_load(recognizer, files, server, clients=args.clients, seconds=args.seconds,
                                    rounds=args.repeats, bad_every=args.bad_every, threads=args.threads)  # fmt: skip
            result.update(people=len(people.people), gallery=str(gallery) if args.gallery else "SET/enrol, enrolled now")
    result.update(config=config, detector=args.detector, data_root=str(root), torch_threads=torch.get_num_threads())
    return result


def _scenes(root: Path) -> int:
    summary = root / "summary.json"
    if summary.is_file():
        import json

        return int(json.loads(summary.read_text(encoding="utf-8")).get("scenes", 1))
    return 1


def _face_boxes_benchmark(args: Any) -> dict[str, Any]:
    """Haar's and dlib_cnn's largest box on each LabelMe photo of DATA_ROOT against its hand-drawn face box."""
    from facetorch.bench.recognition import run_box_accuracy
    from facetorch.data.annotations import scan_labelme_folder
    from facetorch.data.images import read_image
    from facetorch.recognition.detectors import build_face_detector

    if args.data_root is None:
        raise ValueError("--task face_boxes needs --data_root LABELME_DIR (e.g. ../shared/data/face_boxes_dev)")
    annotations = [a for a in scan_labelme_folder(Path(args.data_root)) if len(a.boxes)]
    if not annotations:
        raise ValueError(f"--data_root {args.data_root!r} holds no LabelMe photo with a face box")
    images = [read_image(a.image_path, 3) for a in annotations]
    truth = [max(a.boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) for a in annotations]
    detectors = {name: build_face_detector(name, device="cpu") for name in ("haar", "dlib_cnn")}
    result = run_box_accuracy({name: (lambda image, d=d: d.detect(image)[0]) for name, d in detectors.items()}, images, truth)
    result["data_root"] = str(args.data_root)
    return result


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/benchmark.py``: :func:`benchmark`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, benchmark, argv))

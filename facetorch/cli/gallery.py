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
its faces so far, a video file's rows wait ``--decision_delay`` frames for their tracks' names, and
the CSV adds ``track`` and ``quality`` (docs/video.md). Without ``--config`` / ``--ckpt_path``
it uses the model the gallery records. ``verify`` uses the pair threshold calibrated at
validation and stored in the checkpoint; ``identify``, ``evaluate`` and ``recognize`` use the
gallery's open-set threshold, calibrated on the enrolled people at each enrolment (see
:mod:`facetorch.recognition.gallery`). ``--threshold`` overrides either.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from facetorch import io
from facetorch.cli import cluster as cluster_cli
from facetorch.cli.common import (
    run_tool,
)
from facetorch.cli.gallery_parser import DEFAULT_DETECTOR, TRACK_DEFAULTS, build_parser
from facetorch.inference.embedder import Embedder, FaceEmbedder, haar_face_finder
from facetorch.recognition.database import FaceGallery, migrate_gallery, open_enrolled_gallery, open_gallery
from facetorch.recognition.enrollment import enroll, split_open_set
from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.probes import evaluate_open_set, identify, verify
from facetorch.recognition.tracked import TrackOptions

PROG = "gallery.py"
IDENTIFY_FIELDS = ["file", "name", "similarity", "error"]
LIST_FIELDS = ["name", "images"]
# What each command reads: an output (or the gallery enroll writes) may never be one of these.
INPUT_FLAGS = {"--images": "images", "--source": "source", "--config": "config", "--ckpt_path": "ckpt_path",
               "--model": "model", "--detector": "detector", "--gallery": "gallery", "--known": "known",
               "--unknown": "unknown", "--lfw": "lfw", "--orl": "orl", "--truth": "truth",
               "--recognitions": "recognitions", "--clusters": "clusters", "image1": "image1", "image2": "image2"}  # fmt: skip


def _write_rows(output: Optional[str], fields: list[str], rows: list[dict[str, Any]]) -> None:
    """The rows as CSV into ``output`` (atomically), or to stdout without one."""
    if output:
        io.write_csv(output, fields, rows)
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


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
    gallery = open_enrolled_gallery(args.gallery)
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
            _write_rows(args.output, LIST_FIELDS, rows)
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
        if args.decision_delay is not None:
            raise ValueError("--decision_delay waits for the names of face tracks; it cannot go with --no_track")
        return None
    if args.batch_size != 1:
        raise ValueError(f"--batch_size {args.batch_size} batches frames of per-frame recognition; tracking goes frame by "
                         "frame: add --no_track, or leave --batch_size out")  # fmt: skip
    detect_every = TRACK_DEFAULTS.detect_every if args.detect_every is None else args.detect_every
    options = TrackOptions(detect_every=detect_every, embed_every=args.embed_every, max_gap=args.max_gap,
                           decision_delay=args.decision_delay)  # fmt: skip
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
    if args.command in ("enroll", "name"):  # they write --gallery
        io.check_not_an_input(args.gallery, {k: v for k, v in inputs.items() if k != "--gallery"}, "--gallery")
    elif args.command == "migrate":
        io.check_not_an_input(args.to, inputs, "--to")
    elif getattr(args, "output", None):
        io.check_not_an_input(args.output, inputs)


def gallery(argv: Optional[list[str]] = None) -> Any:
    """Parse ``argv`` and run one gallery command; its result is printed as JSON (CSV for ``identify``)."""
    args = build_parser(__doc__).parse_args(argv)
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
            _write_rows(args.output, IDENTIFY_FIELDS, rows)
            return rows
        report = evaluate_open_set(embedder, people, args.known, args.unknown, args.threshold)
    if args.output:
        io.write_json(args.output, report)
    print(io.json_line(report))
    return report


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/gallery.py``: :func:`gallery`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, gallery, argv))

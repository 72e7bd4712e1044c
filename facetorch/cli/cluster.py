"""``gallery.py cluster | name | cluster-set``: group the faces of a photo collection by person, then name the groups.

Examples::

    python tools/gallery.py cluster --config configs/embedding_dlib.yaml --images PHOTOS --output OUT
    python tools/gallery.py name    --clusters OUT --cluster 7 --name "Ann" --gallery people.db
    python tools/gallery.py cluster --config configs/embedding_dlib.yaml --images PHOTOS --output OUT2 --gallery people.db
    python tools/gallery.py cluster --images NEW_PHOTOS --output OUT --update
    python tools/gallery.py cluster-set --images lfw_devtrain/images lfw_pairs_dev/images --output SET [--max_per_person 7]

``cluster`` finds every face of every photo under ``--images`` (recursively; ``--detector``,
default dlib_cnn), aligns and embeds it (each face and its mirror image, averaged; ``--no_flip``
for one pass), leaves out faces below ``--min_quality`` (size, sharpness, pose; listed in
``left_out.csv``), names the faces of people already in ``--gallery``, and groups the others by
person with average-linkage clustering on a FAISS neighbour graph, cut at ``--threshold``
(default: the model's calibrated pair threshold plus a measured offset). It writes into
``--output``: ``clusters.csv`` (``source,x1,y1,x2,y2,cluster,score,name,quality``; ``cluster`` -1
for a face that joined no group; ``score`` the similarity to the group's centre, or for a face
alone to its nearest face), ``faces.npz`` (the embeddings, so naming never embeds again), a
contact sheet per group under ``sheets/`` (largest first), ``index.html`` showing them all,
``skipped.csv`` (photos unreadable or without a face) and ``left_out.csv``; the JSON summary
(faces, clusters, singletons, seconds per stage) is the last line of stdout.

``--update`` adds the photos under ``--images`` that ``--output`` does not hold yet to its groups:
a new face joins an existing group or forms new ones with other new or lone faces; the existing
groups keep their numbers and never merge with each other. ``name`` enrols one group's faces
under a name into a gallery (created if missing; or added to that person's images there), and
writes the name into the output folder.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np

from facetorch import io
from facetorch.cli.common import add_output, add_quiet, cosine, fraction, nonnegative_int, open_fraction, positive_int, upsample
from facetorch.recognition import clustering as C

COMMANDS = ("cluster", "name", "cluster-set")
PROG = "gallery.py"


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``cluster``, ``name`` and ``cluster-set`` to gallery.py's subcommands (``common``: the model flags)."""
    clu = commands.add_parser("cluster", parents=[common], help="group the faces of a photo collection by person")
    clu.add_argument("--images", required=True, help="a folder of photos (searched recursively), or one photo")
    add_output(clu, "output folder, new or empty (with --update: an earlier cluster run's)")
    clu.add_argument("--detector", default=None, metavar="haar|dlib_cnn|CKPT",
                     help="face detector (default: the gallery's or the earlier run's, else dlib_cnn)")  # fmt: skip
    clu.add_argument("--upsample", type=upsample, default=0, help="dlib_cnn: double each photo this many times, for small faces")
    clu.add_argument("--threshold", type=cosine, default=None,
                     help="least average cosine similarity of two groups that merge (default: the model's calibrated pair "
                          f"threshold {C.THRESHOLD_OFFSET:+g})")  # fmt: skip
    clu.add_argument("--method", choices=C.METHODS, default="average",
                     help="average: average linkage on the neighbour graph (measured best); chinese_whispers: dlib's way")
    clu.add_argument("--k", type=positive_int, default=30, help="neighbours per face in the graph")
    clu.add_argument("--min_quality", type=fraction, default=0.0,
                     help="leave out faces of lower quality, in [0, 1] (size x sharpness x pose; listed in left_out.csv)")
    clu.add_argument("--gallery", default=None, help="name the faces of people enrolled here first; cluster only the others")
    clu.add_argument("--name_threshold", type=cosine, default=None,
                     help="with --gallery: least cosine similarity to name a face (default: the gallery's open-set threshold)")
    clu.add_argument("--update", action="store_true", help="add the new photos under --images to the groups of --output")
    clu.add_argument("--no_flip", action="store_true", help="embed each face once (not also its mirror image): faster")
    clu.add_argument("--sheet_faces", type=positive_int, default=100, help="faces shown on a contact sheet at most")
    clu.add_argument("--seed", type=nonnegative_int, default=0, help="--method chinese_whispers: the random order")

    nam = commands.add_parser("name", help="enrol the faces of one cluster under a name into a gallery")
    nam.add_argument("--clusters", required=True, help="the --output folder of gallery.py cluster")
    nam.add_argument("--cluster", type=nonnegative_int, required=True, help="the cluster's number (clusters.csv, index.html)")
    nam.add_argument("--name", required=True, help="the person's name (an enrolled name adds to that person)")
    nam.add_argument("--gallery", required=True, help="the face database (people.db, sqlite:///PATH, postgresql://...)")
    nam.add_argument("--open_set_fpir", type=open_fraction, default=None,
                     help="share of strangers identify may accept, calibrated on the enrolled people (default 0.05)")
    add_quiet(nam)

    cset = commands.add_parser("cluster-set", help="a collection to cluster and its truth: people's photos, shuffled names")
    cset.add_argument("--images", required=True, nargs="+", help="folders of <person>/<photos> (one person: one name)")
    cset.add_argument("--max_per_person", type=positive_int, default=None,
                      help="keep a random 1..N of each person's photos (default: all)")
    cset.add_argument("--seed", type=nonnegative_int, default=0)
    add_output(cset, "new or empty folder: photos/, truth.csv, summary.json")


def run(args: Any, make_embedder: Callable[..., Any], make_detector: Callable[..., Any]) -> dict[str, Any]:
    """Run ``args.command`` (one of :data:`COMMANDS`) and print its JSON summary as the last line."""
    if args.command == "cluster-set":
        result = C.make_cluster_set(args.images, args.output, seed=args.seed, max_per_person=args.max_per_person,
                                    overwrite=args.overwrite)  # fmt: skip
    elif args.command == "name":
        result = name_cluster(args.clusters, args.cluster, args.name, args.gallery, args.open_set_fpir)
    else:
        result = cluster_photos(args, make_embedder, make_detector)
    print(io.json_line(result), flush=True)
    return result


# ----------------------------------------------------------------------------------------------
# cluster
# ----------------------------------------------------------------------------------------------


def _check_flags(args: Any) -> None:
    if args.faces is not None:
        raise ValueError("cluster finds every face with --detector; --faces is for enroll, identify and verify")
    if args.k < 1:
        raise ValueError(f"--k must be 1 or more, got {args.k}")
    if not 0.0 <= args.min_quality <= 1.0:
        raise ValueError(f"--min_quality must be between 0 and 1, got {args.min_quality}")
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold is a cosine similarity, between -1 and 1; got {args.threshold}")
    if args.sheet_faces < 1:
        raise ValueError(f"--sheet_faces must be 1 or more, got {args.sheet_faces}")
    if args.upsample < 0:
        raise ValueError(f"--upsample must be 0 or more, got {args.upsample}")
    if args.update and args.method != "average":
        raise ValueError("--update keeps the earlier groups, which only --method average can do")


def _model_of_run(args: Any, previous: C.ClusterRun) -> None:
    """``--update`` without a model flag: the model the earlier run records, when it is still there."""
    if args.config is not None or args.ckpt_path is not None or args.model is not None:
        return
    kind, _, path = str(previous.meta.get("model", "")).partition(":")
    if kind not in ("config", "ckpt") or not Path(path).is_file():
        return  # the model flags are checked when the model is built
    if kind == "config":
        args.config = path
    else:
        args.ckpt_path = path


def cluster_photos(args: Any, make_embedder: Callable[..., Any], make_detector: Callable[..., Any]) -> dict[str, Any]:
    """``gallery.py cluster``: find, embed and group the faces under ``--images``; write ``--output``; the summary."""
    from facetorch.inference.embedder import alignment_of
    from facetorch.recognition.database import open_enrolled_gallery
    from facetorch.recognition.gallery import UNKNOWN

    began = time.perf_counter()
    _check_flags(args)
    output = Path(args.output)
    previous = C.load_run(output, flag="--output") if args.update else None
    if previous is None:
        io.check_output_folder(output, args.overwrite)
    files = C.collection_files(args.images)
    if previous is not None:
        done = set(previous.meta.get("photos_done", []))
        files = [f for f in files if str(f.resolve()) not in done]
        if not files:
            raise ValueError(f"--update: every photo under --images {args.images!r} is in {str(output)!r} already; "
                             "nothing new to cluster")  # fmt: skip
    gallery = open_enrolled_gallery(args.gallery, "gallery.py enroll or gallery.py name") if args.gallery else None
    if previous is not None:
        _model_of_run(args, previous)
    embedder = make_embedder(args, gallery, "whole", True)
    fingerprint = str(getattr(embedder, "fingerprint", ""))
    if previous is not None and previous.meta.get("fingerprint") != fingerprint:
        raise ValueError(f"--update: {str(output)!r} was clustered with another model (fingerprint "
                         f"{previous.meta.get('fingerprint')}); this model's is {fingerprint}: embeddings of two models "
                         "cannot be compared; cluster into a new --output")  # fmt: skip
    flip = (not args.no_flip) if previous is None else bool(previous.meta.get("flip", False))
    if flip and hasattr(getattr(embedder, "task", None), "flip_test"):
        embedder.task.flip_test = True  # each face and its mirror image, averaged (as checkpoints trained here embed)
    recorded = getattr(getattr(gallery, "meta", None), "detector", None)  # the gallery's detector, else the earlier run's
    recorded = previous.meta.get("detector") if previous is not None else recorded
    detector = make_detector(args, recorded)
    if previous is not None and detector.name != previous.meta.get("detector"):
        raise ValueError(f"--update: {str(output)!r} holds faces found by {previous.meta.get('detector')!r}; pass "
                         f"--detector {previous.meta.get('detector')} (or cluster into a new --output)")  # fmt: skip
    alignment = alignment_of(getattr(embedder, "input", None))
    if gallery is not None:
        gallery.check_model(embedder, args.gallery)
        for note in gallery.check_setup(detector.name, alignment, args.gallery, enrolling=False):
            print(f"{PROG}: note: {note}", file=sys.stderr)
    if args.threshold is not None:
        threshold = float(args.threshold)
    elif previous is not None:
        threshold = float(previous.meta["threshold"])
    else:
        threshold = C.cluster_threshold(float(getattr(embedder, "threshold", float("nan"))), fingerprint, flip=flip)
    found = C.find_faces(files, embedder, detector, progress=not args.quiet,
                         on_skip=lambda path, reason: print(f"{PROG}: skipped {path}: {reason}", file=sys.stderr))  # fmt: skip
    unreadable = sum(reason.startswith("unreadable") for reason in found.skipped.values())
    if len(found.faces) == 0:
        raise ValueError(f"--images {args.images!r}: no face found in any of its {len(files)} photos ({unreadable} unreadable, "
                         f"{len(found.skipped) - unreadable} without a face): nothing to cluster")  # fmt: skip
    new = found.faces
    new_left = new.quality < args.min_quality
    new_names = [""] * len(new)
    new_scores = np.full(len(new), np.nan)
    if gallery is not None and (~new_left).any():
        usable = np.flatnonzero(~new_left)
        answers = gallery.identify(new.embeddings[usable], args.name_threshold)
        for row, (name, score) in zip(usable.tolist(), answers):
            if name != UNKNOWN:
                new_names[row], new_scores[row] = name, score
    clustering = time.perf_counter()
    run = _group(previous, new, new_left, new_names, new_scores, threshold, args)
    clustered = time.perf_counter()
    run.meta.update(model=getattr(embedder, "source", ""), fingerprint=fingerprint,
                    pair_threshold=float(getattr(embedder, "threshold", float("nan"))), dim=int(new.embeddings.shape[1]),
                    detector=detector.name, alignment=alignment, threshold=threshold, flip=flip, method=args.method,
                    k=args.k, min_quality=args.min_quality,
                    photos_done=sorted(set(previous.meta.get("photos_done", []) if previous is not None else [])
                                       | {str(Path(f).resolve()) for f in files}))  # fmt: skip
    skipped = dict(_previous_skipped(output) if previous is not None else {}, **found.skipped)
    paths = C.save_run(output, run, skipped, sheet_faces=args.sheet_faces, progress=not args.quiet)
    seconds = dict(found.seconds, cluster=round(clustered - clustering, 3), write=round(time.perf_counter() - clustered, 3),
                   total=round(time.perf_counter() - began, 3))  # fmt: skip
    return _summary(run, previous, len(files), len(new), found.skipped, unreadable, seconds, paths)


def _group(previous: Optional[C.ClusterRun], new: C.FaceTable, new_left: np.ndarray, new_names: list[str],
           new_scores: np.ndarray, threshold: float, args: Any) -> C.ClusterRun:  # fmt: skip
    """Name, group and number the faces (an earlier run's and the new ones); the run to write."""
    if previous is None:
        faces, old_labels = new, np.full(len(new), C.NO_CLUSTER, dtype=np.int64)
        left, names, scores = new_left, list(new_names), new_scores.copy()
        meta: dict[str, Any] = {}
    else:
        faces = C.FaceTable.concat([previous.faces, new])
        old_labels = np.concatenate([previous.labels, np.full(len(new), C.NO_CLUSTER, dtype=np.int64)])
        left = np.concatenate([previous.left_out, new_left])
        names = list(previous.names) + list(new_names)
        scores = np.concatenate([previous.scores, new_scores])
        meta = dict(previous.meta)
    n_old = len(faces) - len(new)
    is_new = np.arange(len(faces)) >= n_old
    named_now = is_new & np.array([bool(name) for name in names])  # named by the gallery in this run
    # The groups of names: an earlier group carrying that name, else a new one.
    group_of_name = {names[i]: int(old_labels[i]) for i in range(n_old) if names[i] and old_labels[i] >= 0}
    free = np.flatnonzero(~left & ~named_now)
    raw = np.full(len(faces), -1, dtype=np.int64)
    nearest = np.full(len(faces), np.nan)
    if len(free):
        initial = old_labels[free]
        frozen = initial >= 0
        labels, near = C.group_faces(faces.embeddings[free], threshold, method=args.method, k=args.k,
                                     initial=initial if previous is not None else None,
                                     frozen=frozen if previous is not None else None, seed=args.seed)  # fmt: skip
        raw[free] = labels
        nearest[free] = near
    offset = raw.max(initial=-1) + 1
    name_ids: dict[str, int] = {}
    for i in np.flatnonzero(named_now).tolist():
        name = names[i]
        if name in group_of_name:  # join the earlier group of that name (the raw label of its faces)
            raw[i] = raw[np.flatnonzero(old_labels == group_of_name[name])[0]]
        else:
            raw[i] = name_ids.setdefault(name, offset + len(name_ids))
    # A group's name reaches its new faces.
    for label in np.unique(raw[raw >= 0]).tolist():
        rows = np.flatnonzero(raw == label)
        carried = sorted({names[i] for i in rows.tolist() if names[i]})
        if len(carried) == 1:
            for i in rows.tolist():
                names[i] = carried[0]
    labels = _numbers(raw, old_labels, np.array([bool(name) for name in names]))
    centre = C.centre_scores(faces.embeddings, labels)
    scores = np.where(named_now, scores, centre)  # gallery-named faces keep the gallery's score
    scores = np.where((labels < 0) & ~left, nearest, scores)
    scores = np.where(left, np.nan, scores)
    return C.ClusterRun(faces, labels, scores, names, left, meta)


def _numbers(raw: np.ndarray, old: np.ndarray, named: np.ndarray) -> np.ndarray:
    """Final cluster numbers: earlier groups keep theirs; new groups (2 or more faces, or named) get the next, largest first."""
    out = np.full(len(raw), C.NO_CLUSTER, dtype=np.int64)
    taken = set(old[old >= 0].tolist())
    fresh = []
    for label in np.unique(raw[raw >= 0]).tolist():
        rows = np.flatnonzero(raw == label)
        earlier = old[rows][old[rows] >= 0]
        if len(earlier):
            out[rows] = int(earlier[0])  # frozen groups never merge: one earlier number at most
        elif len(rows) >= 2 or named[rows].any():
            fresh.append((len(rows), int(rows[0]), rows))
    next_id = max(taken, default=-1) + 1
    for _, _, rows in sorted(fresh, key=lambda item: (-item[0], item[1])):
        out[rows] = next_id
        next_id += 1
    return out


def _previous_skipped(output: Path) -> dict[str, str]:
    import csv

    path = output / C.SKIPPED_NAME
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["source"]: row["reason"] for row in csv.DictReader(handle)}


def _summary(run: C.ClusterRun, previous: Optional[C.ClusterRun], photos: int, new_faces: int, skipped: dict[str, str],
             unreadable: int, seconds: dict[str, float], paths: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    groups = run.groups()
    alone = int(((run.labels < 0) & ~run.left_out).sum())
    return {
        "photos": photos, "faces": len(run.faces), "new_faces": new_faces if previous is not None else len(run.faces),
        "clusters": len(groups), "faces_in_clusters": int((run.labels >= 0).sum()), "singletons": alone,
        "largest_cluster": int(len(groups[0][1])) if groups else 0,
        "named_faces": int(sum(bool(name) for name in run.names)), "people_named": len({n for n in run.names if n}),
        "left_out": int(run.left_out.sum()), "unreadable": unreadable, "without_face": len(skipped) - unreadable,
        "threshold": round(float(run.meta["threshold"]), 4), "method": run.meta["method"], "k": run.meta["k"],
        "flip": run.meta["flip"], "detector": run.meta["detector"], "update": previous is not None,
        "seconds": seconds, "output": str(Path(paths["csv"]).parent), **paths,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# name
# ----------------------------------------------------------------------------------------------


def _gallery_for(path: str, run: C.ClusterRun) -> Any:
    """The face database to enroll a cluster into: the store's (same model, detector, alignment), else a new one."""
    from facetorch.recognition.enrollment import gallery_for

    meta = run.meta
    align = None if meta.get("alignment") in (None, "none") else meta["alignment"]
    pair = meta.get("pair_threshold")
    record = SimpleNamespace(fingerprint=meta["fingerprint"], embedding_dim=int(meta["dim"]), source=meta.get("model", ""),
                             threshold=float("nan") if pair is None else float(pair),
                             input=SimpleNamespace(align=align))  # fmt: skip
    return gallery_for(record, path, meta["detector"])


def name_cluster(clusters: str, cluster: int, name: str, gallery_path: str,
                 open_set_fpir: Optional[float] = None) -> dict[str, Any]:  # fmt: skip
    """``gallery.py name``: enrol the faces of cluster ``cluster`` of the run in ``clusters`` under ``name``.

    The faces' embeddings come from the run's ``faces.npz`` (nothing is embedded again); each is
    enrolled under its photo and box (``PHOTO#x1,y1,x2,y2``), so naming a cluster twice adds
    nothing. The name is written into the run (``clusters.csv``, the sheet, ``index.html``).

    Raises:
        ValueError: no such cluster, a bad name, a cluster named otherwise already, or a gallery of
            another model, detector or alignment (GalleryError).
    """
    name = name.strip()
    if not name or "/" in name or name == "unknown":
        raise ValueError(f"--name must be a person's name without '/' (and not 'unknown'), got {name!r}")
    run = C.load_run(clusters)
    rows = np.flatnonzero(run.labels == cluster)
    if cluster < 0 or not len(rows):
        numbers = sorted(set(run.labels[run.labels >= 0].tolist()))
        have = f"its clusters are {numbers[0]}..{numbers[-1]}" if numbers else "it has no cluster"
        raise ValueError(f"--cluster {cluster}: {clusters!r} has no cluster {cluster} ({have}; -1 marks faces that joined none)")
    earlier = sorted({run.names[i] for i in rows.tolist() if run.names[i]})
    if earlier and earlier != [name]:
        raise ValueError(f"--cluster {cluster} is named {', '.join(map(repr, earlier))} already; rename that person in the "
                         f"gallery (gallery.py rename) rather than enrolling the same faces under {name!r}")  # fmt: skip
    gallery = _gallery_for(gallery_path, run)
    keys = [f"{Path(run.faces.sources[i]).resolve()}#{','.join(f'{v:.0f}' for v in run.faces.boxes[i])}" for i in rows.tolist()]
    try:
        added = gallery.add(name, run.faces.embeddings[rows], keys)
        if open_set_fpir is not None:
            gallery.configure(open_set_fpir=float(open_set_fpir))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            threshold = gallery.calibrate_open_set()
        for warning in caught:
            print(f"{PROG}: note: {' '.join(str(warning.message).split())}", file=sys.stderr)
        people, total = len(gallery.people), len(gallery)
    finally:
        gallery.close()
    for i in rows.tolist():
        run.names[i] = name
    C.rename_in_run(Path(clusters), run, cluster)
    return {"cluster": cluster, "name": name, "faces": int(len(rows)), "added": int(added), "gallery": gallery_path,
            "people": people, "total": total,
            "open_set_threshold": threshold if math.isfinite(threshold) else None}  # fmt: skip

"""Face / non-face crop preparation from face boxes (annotations or the Haar cascade).

Writes the ``face_crops`` layout (``output/face/*``, ``output/non_face/*``) or, for identity
photos, the ``identity_folders`` layout (``output/<identity>/<stem>.png``) of square face crops.
Negatives are random boxes of a face-like shape that barely overlap any face (IoU <= 0.1).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from facetorch import io
from facetorch.boxes import Box, box_iou, crop_box, expand_box
from facetorch.data.annotations import FaceAnnotation
from facetorch.data.files import list_images
from facetorch.data.haar import haar_to_hand_box
from facetorch.data.images import read_image
from facetorch.data.splits import stratified_split

__all__ = [
    "CropSummary",
    "NegativeMiner",
    "check_output_folder",
    "check_split_shares",
    "clear_previous_crops",
    "crop_box",
    "expand_box",
    "fold_by_image",
    "haar_annotations",
    "list_layout_images",
    "sample_negative_boxes",
    "write_crops",
    "write_identity_crops",
    "write_no_face_list",
]

FACE_DIR = "face"
NON_FACE_DIR = "non_face"
NO_FACE_FILE = "no_face.txt"
MANIFEST = ".facetorch_written"  # hidden (scanners skip it): the files this module wrote into a folder
NEGATIVE_ASPECT = 1.5  # height / width of a negative box, about that of a face box


class _Detector(Protocol):
    def largest(self, image: np.ndarray) -> tuple[float, float, float, float] | None: ...


class NegativeMiner(Protocol):
    """Hard negatives of one photo: ``(image, its annotation, rng) -> boxes`` away from the faces.

    ``image`` is uint8 grey or BGR, as :func:`write_crops` reads it; see
    :class:`facetorch.inference.hard_negatives.HardNegativeMiner`.
    """

    def __call__(self, image: np.ndarray, annotation: FaceAnnotation, rng: np.random.Generator) -> list[Box]: ...


@dataclass(frozen=True)
class CropSummary:
    """Counts of one crop run.

    Attributes:
        output: The output folder.
        images: Images read.
        faces: Face crops written.
        negatives: Non-face crops written.
        missing_negatives: Negatives asked for but not placeable away from the faces.
        hard_negatives: Of ``negatives``, those a miner chose (``<stem>_hard<j>.png``).
    """

    output: Path
    images: int
    faces: int
    negatives: int = 0
    missing_negatives: int = 0
    hard_negatives: int = 0

    def __str__(self) -> str:
        text = f"{self.images} images -> {self.faces} face crops"
        if self.negatives or self.missing_negatives:
            text += f", {self.negatives} non-face crops"
        if self.hard_negatives:
            text += f" ({self.hard_negatives} of them hard negatives)"
        if self.missing_negatives:
            text += f" ({self.missing_negatives} negatives could not be placed away from faces)"
        return f"{text} in {self.output}"


# ----------------------------------------------------------------------------------------------
# Boxes


def sample_negative_boxes(
    width: int,
    height: int,
    faces: Sequence[Sequence[float]],
    count: int,
    rng: np.random.Generator,
    max_iou: float = 0.1,
    max_tries: int = 1000,
) -> list[Box]:
    """Random non-face boxes away from the faces.

    A box's height is uniform in ``[height / 5, height / 2]``, its width ``box height / 1.5``, its
    position uniform inside the image; it is kept only if its IoU with every face is ``<= max_iou``.

    Args:
        width: Image width.
        height: Image height.
        faces: Face boxes ``(x1, y1, x2, y2)``.
        count: Boxes wanted.
        rng: Random generator (the only source of randomness).
        max_iou: Largest IoU allowed with any face.
        max_tries: Draws allowed per box before giving up.

    Returns:
        Up to ``count`` boxes; fewer when one cannot be placed in ``max_tries`` draws (then the
        rest would not fit either, so the search stops rather than burn ``count * max_tries``).
    """
    boxes: list[Box] = []
    for _ in range(count):
        box = _draw_negative(width, height, faces, rng, max_iou, max_tries)
        if box is None:
            break
        boxes.append(box)
    return boxes


def _draw_negative(
    width: int, height: int, faces: Sequence[Sequence[float]], rng: np.random.Generator, max_iou: float, tries: int
) -> Box | None:
    for _ in range(tries):
        h = rng.uniform(height / 5, height / 2)
        w = h / NEGATIVE_ASPECT
        if w > width:  # a very narrow image cannot hold this box anywhere
            continue
        x1 = rng.uniform(0, width - w)
        y1 = rng.uniform(0, height - h)
        box = (x1, y1, x1 + w, y1 + h)
        if len(faces) == 0 or box_iou([box], faces).max() <= max_iou:
            return box
    return None


# ----------------------------------------------------------------------------------------------
# Output folder and files


def check_output_folder(output: Path, overwrite: bool, *, inputs: Mapping[str, Any] | None = None) -> None:
    """:func:`facetorch.io.check_output_folder`, and refuse ``overwrite`` on a folder of files prepare_crops did not write.

    :func:`facetorch.io.check_output_folder` also refuses an output that is an input or holds one.

    Args:
        output: The output folder.
        overwrite: Allow a non-empty folder.
        inputs: The input folders, flag -> path: ``output`` may not be one of them or a folder above
            one, since ``overwrite`` replaces crops and a rerun would read the crops back.

    Raises:
        FileExistsError: If ``output`` is a file, or a non-empty folder and ``overwrite`` is false.
        ValueError: If ``output`` is an input or holds one.
    """
    output = Path(output)
    io.check_output_folder(output, overwrite, inputs=inputs)
    if overwrite and output.is_dir():
        strangers = sorted(_files_under(output) - _written_files(output))
        if strangers:
            shown = ", ".join(str(p.relative_to(output)) for p in strangers[:3])
            raise FileExistsError(
                f"--output {str(output)!r} holds {len(strangers)} file(s) that prepare_crops did not write ({shown}"
                f"{', ...' if len(strangers) > 3 else ''}); --overwrite only replaces the crops of an earlier run: "
                "choose a new or empty folder"
            )


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _written_files(folder: Path) -> set[Path]:
    """Every file the manifests under ``folder`` list (the crops of earlier runs), and the manifests."""
    written: set[Path] = set()
    for manifest in folder.rglob(MANIFEST):
        written.add(manifest)
        for line in manifest.read_text(encoding="utf-8").splitlines():
            if line.strip():
                written.add(manifest.parent / line.strip())
    return written


def _record(root: Path, path: Path) -> None:
    """Add ``path`` to ``root``'s manifest before the file is written, so a crash cannot orphan it."""
    with open(root / MANIFEST, "a", encoding="utf-8") as handle:
        handle.write(f"{path.relative_to(root).as_posix()}\n")


def clear_previous_crops(output: Path) -> None:
    """Delete what earlier runs wrote into ``output`` (as their manifests list), and nothing else.

    Stale crops (say, from a run with more negatives per image) would otherwise mix into the new
    data set. :func:`check_output_folder` has refused a folder holding any other file.
    """
    if not output.is_dir():
        return
    for path in sorted(_written_files(output), key=lambda p: p.name == MANIFEST):  # manifests last
        path.unlink(missing_ok=True)


def _prepare_output(output: Path, overwrite: bool) -> None:
    check_output_folder(output, overwrite)
    if overwrite:
        clear_previous_crops(output)
    output.mkdir(parents=True, exist_ok=True)


def _write_png(root: Path, path: Path, image: np.ndarray) -> None:
    _record(root, path)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode a PNG for {path} (image shape {image.shape}, dtype {image.dtype})")
    with io.atomic_open(path, "wb") as handle:  # hidden temp name: scanners skip it
        handle.write(encoded.tobytes())


def _read_image(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as uint8 grey or BGR (for OpenCV's PNG writer), checking its size when given.

    Through :func:`facetorch.data.images.read_image`: upright (EXIF), any bit depth, alpha dropped.
    """
    image = read_image(path, channels=None)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if expected_size is not None and (image.shape[1], image.shape[0]) != expected_size:
        raise ValueError(
            f"{path}: expected image size {expected_size[0]}x{expected_size[1]} (from its annotation), "
            f"got {image.shape[1]}x{image.shape[0]} (after applying the photo's EXIF orientation, as every "
            "facetorch reader does)"
        )
    return image


def _crop_names(paths: Sequence[Path]) -> list[str]:
    """A unique output name per image: its stem, or ``<folder>_<stem>`` where stems repeat."""
    repeated = {s for s, n in Counter(p.stem for p in paths).items() if n > 1}
    names = [f"{p.parent.name}_{p.stem}" if p.stem in repeated else p.stem for p in paths]
    clashes = sorted(s for s, n in Counter(names).items() if n > 1)
    if clashes:
        raise ValueError(f"expected unique image names, got repeated names {clashes[:5]} (same folder and stem)")
    return names


def _image_rng(seed: int, name: str) -> np.random.Generator:
    # One stream per image, keyed by its name: an image's negatives do not depend on which other
    # images are in the run or their order. crc32 is stable across runs (hash() is salted).
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


# ----------------------------------------------------------------------------------------------
# Writers


def write_crops(
    annotations: Iterable[FaceAnnotation],
    output: Path,
    *,
    negatives_per_image: int = 5,
    seed: int = 0,
    margin: float = 0.0,
    overwrite: bool = False,
    progress: bool = True,
    miner: NegativeMiner | None = None,
    extra_faces: Callable[[np.ndarray, FaceAnnotation, Box, np.random.Generator], list[np.ndarray]] | None = None,
) -> CropSummary:
    """Write the ``face_crops`` layout from face boxes.

    Files: ``output/face/<stem>_face<i>.png`` per face (grown by ``margin``) and
    ``output/non_face/<stem>_neg<j>.png`` per negative (see :func:`sample_negative_boxes`). Images
    without a face give negatives only. Each file is written atomically.

    Args:
        annotations: Face boxes per image.
        output: Output folder; must be new or empty unless ``overwrite``.
        negatives_per_image: Negatives wanted per image.
        seed: Seed of the negatives; the same seed gives the same files.
        margin: Face box growth per side, as a fraction of the box size.
        overwrite: Write into a non-empty folder, deleting earlier PNG crops first.
        progress: Show a progress bar (on a terminal).
        miner: Adds hard negatives, ``output/non_face/<stem>_hard<j>.png``, beside the random ones
            (drawn from their own random stream, so the random negatives stay the same).
        extra_faces: More crops of a face, ``output/face/<stem>_face<i>_x<k>.png`` (e.g.
            :class:`~facetorch.data.face_variants.FaceExtras`), from a stream of their own too.

    Raises:
        FileExistsError: If ``output`` is not empty and ``overwrite`` is false.
    """
    if negatives_per_image < 0:
        raise ValueError(f"expected negatives_per_image >= 0, got {negatives_per_image}")
    annotations = list(annotations)
    output = Path(output)
    _prepare_output(output, overwrite)
    for sub in (FACE_DIR, NON_FACE_DIR):
        (output / sub).mkdir(exist_ok=True)
    faces = negatives = missing = hard = 0
    names = _crop_names([a.image_path for a in annotations])
    for annotation, name in io.progress(zip(annotations, names, strict=True), "crops", len(annotations), progress):
        image = _read_image(annotation.image_path, (annotation.width, annotation.height))
        for i, box in enumerate(annotation.boxes):
            box = expand_box(box, margin, annotation.width, annotation.height)
            _write_png(output, output / FACE_DIR / f"{name}_face{i}.png", crop_box(image, box))
            faces += 1
            extras = extra_faces(image, annotation, box, _image_rng(seed, f"{name}/face{i}")) if extra_faces else []
            for k, crop in enumerate(extras):
                _write_png(output, output / FACE_DIR / f"{name}_face{i}_x{k}.png", crop)
            faces += len(extras)
        boxes = sample_negative_boxes(
            annotation.width, annotation.height, annotation.boxes, negatives_per_image, _image_rng(seed, name)
        )
        for j, box in enumerate(boxes):
            _write_png(output, output / NON_FACE_DIR / f"{name}_neg{j}.png", crop_box(image, box))
        negatives += len(boxes)
        missing += negatives_per_image - len(boxes)
        if miner is not None:
            mined = miner(image, annotation, _image_rng(seed, f"{name}/hard"))
            for j, box in enumerate(mined):
                _write_png(output, output / NON_FACE_DIR / f"{name}_hard{j}.png", crop_box(image, box))
            hard += len(mined)
    return CropSummary(output, len(annotations), faces, negatives + hard, missing, hard)


def check_split_shares(fractions: Sequence[float]) -> None:
    """Refuse ``--split`` shares that are not three fractions summing to 1 with a train share above 0.

    Raises:
        ValueError: what was expected and what came.
    """
    good = len(fractions) == 3 and all(math.isfinite(f) and f >= 0 for f in fractions) and fractions[0] > 0
    if not good or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"expected --split TRAIN,VAL,TEST shares >= 0 summing to 1 with TRAIN > 0, got {list(fractions)}")


def split_by_image(
    annotations: Sequence[FaceAnnotation], fractions: Sequence[float], seed: int = 0
) -> dict[str, list[FaceAnnotation]]:
    """Split annotated images (not crops) into ``train`` / ``val`` / ``test``, seeded.

    Every crop of one photo (its faces and its negatives) lands in the same split, so a model is
    never tested on the other half of a photo it trained on.

    Args:
        annotations: One entry per image.
        fractions: ``(train, val, test)`` shares, summing to 1 (a zero share gives no folder).
        seed: Seed of the shuffle.
    """
    check_split_shares(fractions)
    # One class: the seeded split of facetorch.data.splits, photo by photo.
    parts = stratified_split([0] * len(annotations), fractions[1], fractions[2], seed)
    chosen = {name: getattr(parts, name) for name in ("train", "val", "test")}
    return {name: [annotations[i] for i in indices] for name, indices in chosen.items() if len(indices)}


def fold_by_image(
    annotations: Sequence[FaceAnnotation], folds: int, fold: int, seed: int = 0
) -> tuple[list[FaceAnnotation], list[FaceAnnotation]]:
    """Deal photos into ``folds`` seeded folds of (almost) equal size; return ``(the others, fold ``fold``)``.

    For cross-validation by photo: every fold is held out once over ``fold = 0 .. folds - 1``
    with the same ``seed``, and every photo lands in exactly one fold.

    Raises:
        ValueError: If ``fold`` is not in ``[0, folds)`` or there are fewer photos than folds.
    """
    if not (folds >= 2 and 0 <= fold < folds):
        raise ValueError(f"expected a fold I of K folds with K >= 2 and 0 <= I < K, got fold {fold} of {folds}")
    if len(annotations) < folds:
        raise ValueError(f"expected at least {folds} annotated photos for {folds} folds, got {len(annotations)}")
    order = np.random.default_rng(seed).permutation(len(annotations))
    held = set(order[fold::folds].tolist())
    return ([a for i, a in enumerate(annotations) if i not in held], [a for i, a in enumerate(annotations) if i in held])


def write_identity_crops(
    annotations: Iterable[FaceAnnotation],
    output: Path,
    *,
    root: Path,
    size: int = 112,
    margin: float = 0.0,
    overwrite: bool = False,
    progress: bool = True,
) -> CropSummary:
    """Write ``output/<identity>/<stem>.png``: the first face of each image, square ``size`` pixels.

    The identity is the image's folder under ``root`` (layout ``root/<identity>/<image>``). The
    box is grown by ``margin`` then resized to ``size x size`` (Haar boxes are square already).

    Raises:
        ValueError: If an image lies directly in ``root`` (no identity folder).
        FileExistsError: If ``output`` is not empty and ``overwrite`` is false.
    """
    if size < 1:
        raise ValueError(f"expected a crop size >= 1 pixel, got {size}")
    annotations = [a for a in annotations if a.boxes]
    output, root = Path(output), Path(root)
    flat = [a.image_path.name for a in annotations if a.image_path.parent == root]
    if flat:
        raise ValueError(
            f"expected the layout {root}/<identity>/<image> for identity crops, got images directly in "
            f"{root}: {', '.join(flat[:5])}"
        )
    targets = [Path(a.image_path.parent.name, f"{a.image_path.stem}.png") for a in annotations]
    clashes = sorted({t.as_posix() for t in targets if targets.count(t) > 1})
    if clashes:
        raise ValueError(f"expected one image per identity and stem, got several for {', '.join(clashes[:5])}")
    _prepare_output(output, overwrite)
    for annotation, target in io.progress(zip(annotations, targets, strict=True), "crops", len(annotations), progress):
        image = _read_image(annotation.image_path, (annotation.width, annotation.height))
        box = expand_box(annotation.boxes[0], margin, annotation.width, annotation.height)
        crop = crop_box(image, box)
        # INTER_AREA averages when shrinking (no aliasing); it is nearest-like when enlarging.
        interpolation = cv2.INTER_AREA if min(crop.shape[:2]) >= size else cv2.INTER_LINEAR
        (output / target).parent.mkdir(exist_ok=True)
        _write_png(output, output / target, cv2.resize(crop, (size, size), interpolation=interpolation))
    return CropSummary(output, len(annotations), len(annotations))


def write_no_face_list(output: Path, images: Sequence[Path], root: Path) -> Path:
    """Write ``output/no_face.txt``: one image path per line, relative to ``root``."""
    lines = [Path(p).relative_to(root).as_posix() for p in images]
    path = Path(output) / NO_FACE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _record(Path(output), path)
    io.write_text(path, "".join(f"{line}\n" for line in lines))
    return path


# ----------------------------------------------------------------------------------------------
# Haar


def list_layout_images(root: Path) -> list[Path]:
    """Images of ``root/<identity>/<image>`` and ``root/<image>`` (flat), sorted.

    Raises:
        FileNotFoundError: If ``root`` is not a folder or holds no image at either level.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"expected a folder of images, got {str(root)!r} (not a folder)")
    images = list_images(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images += list_images(folder)
    if not images:
        raise FileNotFoundError(f"{root}: expected images in it or in its sub-folders, found none")
    return images


def haar_annotations(
    images_root: Path, detector: _Detector, progress: bool = True, box_shape: Literal["haar", "hand"] = "haar"
) -> tuple[list[FaceAnnotation], list[Path]]:
    """Find the largest face of every image under ``images_root`` with a detector.

    Args:
        images_root: ``root/<identity>/<image>`` or a flat folder of images.
        detector: Anything with ``largest(image) -> box | None``, e.g. :class:`~facetorch.data.haar.HaarFaceDetector`.
        progress: Show a progress bar (on a terminal).
        box_shape: ``haar``: the detector's box; ``hand``: reshaped to a hand-drawn face box
            (:func:`~facetorch.data.haar.haar_to_hand_box`), so these faces match hand-boxed ones.

    Returns:
        ``(annotations, without_face)``: one single-box annotation per image with a face, and the
        images where none was found. Those are not turned into face-free annotations: a missed face
        is still in the picture, so negatives must not be sampled from it.
    """
    annotations: list[FaceAnnotation] = []
    without_face: list[Path] = []
    for path in io.progress(list_layout_images(images_root), "haar", enabled=progress):
        image = _read_image(path)
        box = detector.largest(image)
        if box is None:
            without_face.append(path)
            continue
        height, width = image.shape[:2]
        box = haar_to_hand_box(box, width, height) if box_shape == "hand" else box
        annotations.append(FaceAnnotation(path, width, height, [expand_box(box, 0.0, width, height)]))
    return annotations, without_face

"""Readers for face box annotations: LabelMe 5 JSON and Pascal VOC XML.

Both readers return a :class:`FaceAnnotation` with boxes as ``(x1, y1, x2, y2)`` pixel floats,
``x1 < x2`` and ``y1 < y2``, inside the image. Every problem with an input file raises
:class:`AnnotationError`, whose message names the file, what was expected and what came.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facetorch.boxes import Box
from facetorch.data import images
from facetorch.data.files import IMAGE_EXTENSIONS, list_images

FACE_LABEL = "face"  # LabelMe rectangles whose label starts with this (any case) are faces

__all__ = [
    "AnnotationError",
    "Box",
    "FaceAnnotation",
    "read_image_size",
    "read_labelme",
    "read_voc",
    "scan_labelme_folder",
    "scan_voc_folder",
]


_EXTENSIONS_TEXT = "|".join(ext[1:] for ext in IMAGE_EXTENSIONS)  # for messages: jpg|jpeg|...

# Annotation tools round corners and some put them on the last pixel row/column, so a corner up to
# this far outside the image is accepted (and clipped); anything further is a wrong annotation.
BOX_TOLERANCE_PX = 1.0


class AnnotationError(ValueError):
    """An annotation file that cannot be read or does not match its image."""


@dataclass(frozen=True)
class FaceAnnotation:
    """Face boxes of one image.

    Attributes:
        image_path: The image the boxes belong to.
        width: Image width in pixels.
        height: Image height in pixels.
        boxes: Face boxes ``(x1, y1, x2, y2)`` in pixels; empty for an image without a face.
    """

    image_path: Path
    width: int
    height: int
    boxes: list[Box]


def read_image_size(path: Path) -> tuple[int, int]:
    """Return ``(width, height)`` of an image file.

    Raises:
        AnnotationError: If the file is missing or cannot be decoded.
    """
    if not path.is_file():
        raise AnnotationError(f"{path}: image file not found")
    try:
        return images.read_image_size(path)  # EXIF orientation applied, as every reader here does
    except images.ImageReadError as error:
        raise AnnotationError(f"{path}: expected a readable image: {error}") from None


# ----------------------------------------------------------------------------------------------
# LabelMe


def read_labelme(
    json_path: Path,
    *,
    max_faces: int | None = None,
    check_image: bool = True,
    image_path: Path | None = None,
) -> FaceAnnotation:
    """Read one LabelMe 5 JSON file; every ``rectangle`` shape labelled ``face...`` is a face.

    A rectangle's label must start with ``face`` (any case: ``face``, ``Face``, ``face_masked``);
    another label (``cat``) is an error rather than a face. ``imagePath`` must name the image the
    JSON sits beside (or a file that does not exist, as LabelMe writes paths from the machine
    that drew the boxes): a JSON that names another existing image is an error.

    Args:
        json_path: The ``.json`` file.
        max_faces: Most faces allowed in one image; ``None`` for no limit.
        check_image: Decode the image and compare its size with ``imageWidth``/``imageHeight``.
        image_path: The image, when already known; otherwise ``imagePath`` is resolved relative to
            the JSON's folder, falling back to ``<json stem>.<image extension>`` beside it.

    Returns:
        The image path, its size and the face boxes, corners sorted whatever the drag order.

    Raises:
        AnnotationError: On malformed JSON, a missing key, a non-rectangle shape, too many faces,
            a box outside the image or of zero area, a missing image or a size mismatch.
    """
    json_path = Path(json_path)
    data = _load_json(json_path)
    for key in ("shapes", "imagePath", "imageWidth", "imageHeight"):
        if key not in data:
            raise AnnotationError(f"{json_path}: missing key {key!r} (expected a LabelMe 5 file)")
    width = _positive_int(data["imageWidth"], json_path, "imageWidth")
    height = _positive_int(data["imageHeight"], json_path, "imageHeight")
    shapes = data["shapes"]
    if not isinstance(shapes, list):
        raise AnnotationError(f"{json_path}: key 'shapes': expected a list, got {type(shapes).__name__}")

    raw_boxes = [_labelme_rectangle(shape, json_path, i) for i, shape in enumerate(shapes)]
    if image_path is None:
        image_path = _resolve_labelme_image(json_path, data["imagePath"])
    else:
        _check_image_path(json_path, data["imagePath"], image_path)
    return _finish(json_path, image_path, width, height, raw_boxes, max_faces, check_image)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: expected LabelMe JSON, got malformed JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object at top level, got {type(data).__name__}")
    return data


def _labelme_rectangle(shape: Any, path: Path, index: int) -> Box:
    """Corner points of one LabelMe shape, as an unsorted ``(xa, ya, xb, yb)``."""
    where = f"{path}: shapes[{index}]"
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(shape).__name__}")
    for key in ("shape_type", "points"):
        if key not in shape:
            raise AnnotationError(f"{where}: missing key {key!r}")
    if shape["shape_type"] != "rectangle":
        raise AnnotationError(f"{where}: expected shape_type 'rectangle' (a face box), got {shape['shape_type']!r}")
    label = shape.get("label", "face")
    if not (isinstance(label, str) and label.strip().lower().startswith(FACE_LABEL)):
        raise AnnotationError(
            f"{where}: label {label!r} is not a face; facetorch reads rectangles labelled face (any case, e.g. "
            "'face', 'Face', 'face_masked'): relabel the shape, or remove it"
        )
    points = shape["points"]
    if not (isinstance(points, list) and len(points) == 2 and all(_is_xy(p) for p in points)):
        raise AnnotationError(f"{where}.points: expected two [x, y] corners, got {points!r}")
    (xa, ya), (xb, yb) = points
    return float(xa), float(ya), float(xb), float(yb)


def _is_xy(point: Any) -> bool:
    return (
        isinstance(point, (list, tuple))
        and len(point) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
    )


def _check_image_path(json_path: Path, written: Any, image: Path) -> None:
    """Refuse a JSON beside ``image`` whose ``imagePath`` names another image that exists."""
    if not isinstance(written, str):
        raise AnnotationError(f"{json_path}: key 'imagePath': expected a string, got {written!r}")
    named = Path(written.replace("\\", "/"))
    if named.name == image.name:
        return
    other = json_path.parent / named
    if other.is_file() and other.resolve() != image.resolve():
        raise AnnotationError(
            f"{json_path}: imagePath {written!r} names another image in the folder; expected {image.name!r} (the image "
            "with the JSON's stem). Fix imagePath, or rename the JSON after the image it annotates"
        )


def _resolve_labelme_image(json_path: Path, image_path: Any) -> Path:
    if not isinstance(image_path, str):
        raise AnnotationError(f"{json_path}: key 'imagePath': expected a string, got {image_path!r}")
    # LabelMe on Windows writes backslashes; they are folder separators, not part of a name.
    relative = Path(image_path.replace("\\", "/"))
    return _find_image(json_path, [json_path.parent], [relative, Path(relative.name)], "imagePath", image_path)


# ----------------------------------------------------------------------------------------------
# Pascal VOC


def read_voc(
    xml_path: Path,
    *,
    max_faces: int | None = None,
    check_image: bool = True,
    image_path: Path | None = None,
) -> FaceAnnotation:
    """Read one Pascal VOC XML file; every ``<object>`` is a face, whatever its ``<name>``.

    Object names are classes of a face (the dev data has ``with_mask`` / ``without_mask``), so
    they are not filtered. Coordinates are taken as written (no 1-based shift), as LabelMe does.

    Args:
        xml_path: The ``.xml`` file.
        max_faces: Most faces allowed in one image; ``None`` for no limit.
        check_image: Decode the image and compare its size with ``<size>``.
        image_path: The image, when already known; otherwise ``<filename>`` is looked up in the
            XML's folder, then its parent, then ``<stem>.<image extension>`` in both (exports that
            re-encoded images keep the old extension in ``<filename>``).

    Returns:
        The image path, its size and the face boxes.

    Raises:
        AnnotationError: Same cases as :func:`read_labelme`.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"{xml_path}: expected Pascal VOC XML, got malformed XML ({exc})") from exc
    if root.tag != "annotation":
        raise AnnotationError(f"{xml_path}: expected root element <annotation>, got <{root.tag}>")
    width = _positive_int(_xml_number(root, "size/width", xml_path), xml_path, "size/width")
    height = _positive_int(_xml_number(root, "size/height", xml_path), xml_path, "size/height")
    raw_boxes = [
        tuple(_xml_number(obj, f"bndbox/{k}", xml_path, f"object[{i}]") for k in ("xmin", "ymin", "xmax", "ymax"))
        for i, obj in enumerate(root.findall("object"))
    ]
    if image_path is None:
        filename = _xml_text(root, "filename", xml_path)
        folders = [xml_path.parent, xml_path.parent.parent]
        image_path = _find_image(xml_path, folders, [Path(filename)], "filename", filename)
    return _finish(xml_path, image_path, width, height, raw_boxes, max_faces, check_image)


def _xml_text(node: ET.Element, key: str, path: Path, where: str = "") -> str:
    found = node.find(key)
    label = f"{where}/{key}" if where else key
    if found is None or not (found.text or "").strip():
        raise AnnotationError(f"{path}: missing element <{label}>")
    return found.text.strip()


def _xml_number(node: ET.Element, key: str, path: Path, where: str = "") -> float:
    text = _xml_text(node, key, path, where)
    try:
        return float(text)
    except ValueError:
        label = f"{where}/{key}" if where else key
        raise AnnotationError(f"{path}: <{label}>: expected a number, got {text!r}") from None


# ----------------------------------------------------------------------------------------------
# Shared checks


def _positive_int(value: Any, path: Path, key: str) -> int:
    whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value == int(value))
    if isinstance(value, bool) or not whole or value <= 0:
        raise AnnotationError(f"{path}: key {key!r}: expected a positive whole number, got {value!r}")
    return int(value)


def _find_image(annotation: Path, folders: Sequence[Path], names: Sequence[Path], key: str, written: str) -> Path:
    """First existing image among ``folder/name``, then ``folder/<annotation stem><ext>``."""
    candidates = [folder / name for folder in folders for name in names]
    stems = dict.fromkeys([annotation.stem, *(name.stem for name in names)])  # ordered, deduplicated
    candidates += [folder / f"{stem}{ext}" for folder in folders for stem in stems for ext in IMAGE_EXTENSIONS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AnnotationError(
        f"{annotation}: image file missing: {key} {written!r} not found in "
        f"{', '.join(str(f) for f in folders)} (also tried {'|'.join(stems)}.<{_EXTENSIONS_TEXT}>)"
    )


def _finish(
    path: Path,
    image_path: Path,
    width: int,
    height: int,
    raw_boxes: list[tuple[float, ...]],
    max_faces: int | None,
    check_image: bool,
) -> FaceAnnotation:
    """Check the image and the boxes, common to both readers."""
    image_path = Path(image_path)
    if check_image:
        real = _image_size_for(path, image_path)
        if real != (width, height):
            raise AnnotationError(
                f"{path}: expected image size {width}x{height} (width x height, as annotated), "
                f"got {real[0]}x{real[1]} in {image_path}"
            )
    elif not image_path.is_file():
        raise AnnotationError(f"{path}: image file missing: {image_path}")
    if max_faces is not None and len(raw_boxes) > max_faces:
        raise AnnotationError(f"{path}: expected at most {max_faces} face(s), got {len(raw_boxes)}")
    boxes = [_checked_box(b, width, height, path, i) for i, b in enumerate(raw_boxes)]
    return FaceAnnotation(image_path=image_path, width=width, height=height, boxes=boxes)


def _image_size_for(annotation: Path, image_path: Path) -> tuple[int, int]:
    try:
        return read_image_size(image_path)
    except AnnotationError as exc:
        raise AnnotationError(f"{annotation}: {exc}") from None


def _checked_box(raw: Sequence[float], width: int, height: int, path: Path, index: int) -> Box:
    """Sort corners (drag order is arbitrary), check bounds within tolerance, clip."""
    xa, ya, xb, yb = raw
    if not all(math.isfinite(v) for v in raw):
        raise AnnotationError(f"{path}: box {index}: expected finite coordinates, got {tuple(raw)}")
    x1, x2 = min(xa, xb), max(xa, xb)
    y1, y2 = min(ya, yb), max(ya, yb)
    tol = BOX_TOLERANCE_PX
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise AnnotationError(
            f"{path}: box {index}: expected inside the {width}x{height} image "
            f"(tolerance {tol:g} px), got ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        )
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise AnnotationError(
            f"{path}: box {index}: expected a box with positive area, got ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        )
    return x1, y1, x2, y2


# ----------------------------------------------------------------------------------------------
# Folders


def scan_labelme_folder(root: Path, *, max_faces: int | None = None, check_image: bool = True) -> list[FaceAnnotation]:
    """Annotations of every image directly in ``root`` (sorted), paired with ``<stem>.json``.

    An image without a JSON file, or whose JSON has no shape, is an image without a face.

    Raises:
        AnnotationError: For a bad JSON file, or a JSON file with no image of its stem beside it.
        FileNotFoundError: If ``root`` is not a folder.
    """
    root = Path(root)
    return _scan(root, root, ".json", read_labelme, max_faces, check_image)


def scan_voc_folder(
    xml_dir: Path,
    *,
    images_dir: Path | None = None,
    max_faces: int | None = None,
    check_image: bool = True,
) -> list[FaceAnnotation]:
    """Annotations of every image, paired with ``xml_dir/<stem>.xml``.

    Args:
        xml_dir: Folder of VOC XML files.
        images_dir: Folder of the images; by default ``xml_dir`` itself when it holds images,
            else its parent (the layout ``root/*.jpg`` + ``root/voc/*.xml``).
        max_faces: Most faces allowed in one image.
        check_image: Compare each image's real size with ``<size>``.
    """
    xml_dir = Path(xml_dir)
    _require_dir(xml_dir)
    if images_dir is None:
        images_dir = xml_dir if list_images(xml_dir) else xml_dir.parent
    return _scan(Path(images_dir), xml_dir, ".xml", read_voc, max_faces, check_image)


def _require_dir(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a folder of images and annotations, got {str(folder)!r} (not a folder)")


def _scan(
    images_dir: Path,
    annotations_dir: Path,
    suffix: str,
    reader: Callable[..., FaceAnnotation],
    max_faces: int | None,
    check_image: bool,
) -> list[FaceAnnotation]:
    _require_dir(images_dir)
    _require_dir(annotations_dir)
    images = list_images(images_dir)
    stems = {p.stem for p in images}
    if len(stems) < len(images):
        twins = sorted(p.name for p in images if sum(q.stem == p.stem for q in images) > 1)
        raise AnnotationError(
            f"{images_dir}: expected one image per stem (the annotation is <stem>{suffix}), got {', '.join(twins[:6])}"
        )
    # An annotation without its image would be dropped silently by an image-driven scan.
    orphans = sorted(p.name for p in annotations_dir.glob(f"*{suffix}") if p.stem not in stems)
    if orphans:
        raise AnnotationError(
            f"{annotations_dir}: expected an image named <stem>.<{_EXTENSIONS_TEXT}> "
            f"in {images_dir} for every {suffix} file, got {len(orphans)} without one: {', '.join(orphans[:5])}"
            + (" ..." if len(orphans) > 5 else "")
        )
    result = []
    for image in images:
        annotation = annotations_dir / f"{image.stem}{suffix}"
        if annotation.is_file():
            result.append(reader(annotation, max_faces=max_faces, check_image=check_image, image_path=image))
        else:
            # The size is needed even unchecked: negatives are sampled over the whole image.
            width, height = read_image_size(image)
            result.append(FaceAnnotation(image_path=image, width=width, height=height, boxes=[]))
    return result

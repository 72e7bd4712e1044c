"""LabelMe / Pascal VOC readers on small generated images and annotation files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetorch.data.annotations import (
    AnnotationError,
    FaceAnnotation,
    read_labelme,
    read_voc,
    scan_labelme_folder,
    scan_voc_folder,
)

W, H = 64, 48
BOX = (10.0, 8.0, 40.0, 38.0)


def make_image(path: Path, width: int = W, height: int = H) -> Path:
    channels = 1 if path.suffix == ".pgm" else 3
    image = np.full((height, width, channels), 127, np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def rectangle(points, shape_type: str = "rectangle") -> dict:
    return {
        "label": "face",
        "points": [list(p) for p in points],
        "group_id": None,
        "shape_type": shape_type,
        "flags": {},
    }


def write_labelme(
    folder: Path, stem: str, shapes: list[dict], *, width=W, height=H, image_name=None, image=True
) -> Path:
    image_name = image_name or f"{stem}.png"
    if image:
        make_image(folder / image_name)
    data = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_name,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(data))
    return path


def write_voc(folder: Path, stem: str, boxes, *, filename=None, names=None, width=W, height=H) -> Path:
    filename = filename or f"{stem}.jpg"
    names = names or ["with_mask"] * len(boxes)
    objects = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in zip(names, boxes, strict=True)
    )
    xml = (
        f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size><segmented>0</segmented>{objects}</annotation>"
    )
    path = folder / f"{stem}.xml"
    path.write_text(xml)
    return path


# ---------------------------------------------------------------------------------------------- LabelMe


def test_read_labelme_box_and_size(tmp_path):
    ann = read_labelme(write_labelme(tmp_path, "a", [rectangle([(10, 8), (40, 38)])]))
    assert ann == FaceAnnotation(tmp_path / "a.png", W, H, [BOX])


@pytest.mark.parametrize(
    "corners",
    [
        [(10, 8), (40, 38)],  # top-left then bottom-right
        [(40, 38), (10, 8)],  # reverse drag order
        [(40, 8), (10, 38)],
        [(10, 38), (40, 8)],
    ],
)
def test_corner_drag_order_gives_same_box(tmp_path, corners):
    assert read_labelme(write_labelme(tmp_path, "a", [rectangle(corners)])).boxes == [BOX]


def test_box_within_one_pixel_outside_is_clipped(tmp_path):
    ann = read_labelme(write_labelme(tmp_path, "a", [rectangle([(-0.5, -1), (W + 1, H + 0.4)])]))
    assert ann.boxes == [(0.0, 0.0, float(W), float(H))]


def test_image_path_falls_back_to_json_stem(tmp_path):
    make_image(tmp_path / "a.jpg")
    path = write_labelme(
        tmp_path, "a", [rectangle([(10, 8), (40, 38)])], image_name="C:\\old\\renamed.png", image=False
    )
    assert read_labelme(path).image_path == tmp_path / "a.jpg"


def test_image_path_with_windows_separators(tmp_path):
    (tmp_path / "imgs").mkdir()
    make_image(tmp_path / "imgs" / "b.png")
    path = write_labelme(tmp_path, "a", [], image_name="imgs\\b.png", image=False)
    assert read_labelme(path).image_path == tmp_path / "imgs" / "b.png"


def test_scan_labelme_folder_negatives_and_order(tmp_path):
    write_labelme(tmp_path, "b_face", [rectangle([(40, 38), (10, 8)])])
    write_labelme(tmp_path, "c_empty", [])  # JSON with no shapes: no face
    make_image(tmp_path / "a_nojson.jpg")  # no JSON: no face
    make_image(tmp_path / "d_grey.pgm")
    (tmp_path / "notes.txt").write_text("not an image")
    anns = scan_labelme_folder(tmp_path)
    assert [a.image_path.name for a in anns] == ["a_nojson.jpg", "b_face.png", "c_empty.png", "d_grey.pgm"]
    assert [a.boxes for a in anns] == [[], [BOX], [], []]
    assert all((a.width, a.height) == (W, H) for a in anns)


def test_scan_labelme_folder_json_without_image(tmp_path):
    write_labelme(tmp_path, "ok", [])
    write_labelme(tmp_path, "orphan", [], image=False)
    with pytest.raises(AnnotationError, match="orphan.json"):
        scan_labelme_folder(tmp_path)


def _labelme_case(tmp_path: Path, case: str) -> tuple[Path, dict]:
    box = [(10, 8), (40, 38)]
    kwargs: dict = {}
    if case == "polygon":
        path = write_labelme(tmp_path, "bad", [rectangle([(1, 1), (5, 1), (5, 5)], "polygon")])
    elif case == "two_faces":
        path = write_labelme(tmp_path, "bad", [rectangle(box), rectangle([(41, 1), (60, 20)])])
        kwargs = {"max_faces": 1}
    elif case == "outside":
        path = write_labelme(tmp_path, "bad", [rectangle([(10, 8), (W + 5, 38)])])
    elif case == "zero_area":
        path = write_labelme(tmp_path, "bad", [rectangle([(10, 8), (10, 38)])])
    elif case == "malformed":
        path = tmp_path / "bad.json"
        make_image(tmp_path / "bad.png")
        path.write_text('{"shapes": [')
    elif case == "size_mismatch":
        path = write_labelme(tmp_path, "bad", [rectangle(box)], width=W + 10)
    elif case == "missing_image":
        path = write_labelme(tmp_path, "bad", [rectangle(box)], image=False)
    elif case == "missing_key":
        path = write_labelme(tmp_path, "bad", [rectangle(box)])
        data = json.loads(path.read_text())
        del data["imageHeight"]
        path.write_text(json.dumps(data))
    elif case == "bad_points":
        path = write_labelme(tmp_path, "bad", [{"shape_type": "rectangle", "points": [[1, 2]]}])
    else:
        raise AssertionError(case)
    return path, kwargs


@pytest.mark.parametrize(
    "case, expected",
    [
        ("polygon", "expected shape_type 'rectangle'.*got 'polygon'"),
        ("two_faces", "expected at most 1 face.*got 2"),
        ("outside", "expected inside the 64x48 image"),
        ("zero_area", "positive area"),
        ("malformed", "malformed JSON"),
        ("size_mismatch", "expected image size 74x48.*got 64x48"),
        ("missing_image", "image file missing"),
        ("missing_key", "missing key 'imageHeight'"),
        ("bad_points", r"expected two \[x, y\] corners"),
    ],
)
def test_labelme_errors_name_the_file(tmp_path, case, expected):
    path, kwargs = _labelme_case(tmp_path, case)
    with pytest.raises(AnnotationError, match=expected) as info:
        read_labelme(path, **kwargs)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_check_image_false_skips_size_but_not_existence(tmp_path):
    path = write_labelme(tmp_path, "a", [rectangle([(10, 8), (40, 38)])], width=W + 10)
    assert read_labelme(path, check_image=False).width == W + 10
    (tmp_path / "a.png").unlink()
    with pytest.raises(AnnotationError, match="image file missing"):
        read_labelme(path, check_image=False)


# ---------------------------------------------------------------------------------------------- VOC


def test_read_voc_all_object_names_are_faces(tmp_path):
    make_image(tmp_path / "a.jpg")
    path = write_voc(tmp_path, "a", [(10, 8, 40, 38), (42, 1, 60, 20)], names=["with_mask", "without_mask"])
    ann = read_voc(path)
    assert ann.image_path == tmp_path / "a.jpg"
    assert ann.boxes == [BOX, (42.0, 1.0, 60.0, 20.0)]


def test_read_voc_in_subfolder_with_stale_extension(tmp_path):
    # Layout of the dev data: root/*.jpg + root/voc/*.xml, <filename> still says .png.
    (tmp_path / "voc").mkdir()
    make_image(tmp_path / "a.jpg")
    ann = read_voc(write_voc(tmp_path / "voc", "a", [(40, 38, 10, 8)], filename="a.png"))
    assert ann.image_path == tmp_path / "a.jpg"
    assert ann.boxes == [BOX]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("two_faces", "expected at most 1 face.*got 2"),
        ("outside", "expected inside the 64x48 image"),
        ("zero_area", "positive area"),
        ("malformed", "malformed XML"),
        ("size_mismatch", "expected image size 64x50.*got 64x48"),
        ("missing_image", "image file missing"),
        ("missing_size", "missing element <size/width>"),
        ("not_a_number", "expected a number, got 'ten'"),
    ],
)
def test_voc_errors_name_the_file(tmp_path, case, expected):
    kwargs: dict = {}
    if case != "missing_image":
        make_image(tmp_path / "bad.jpg")
    boxes = {
        "two_faces": [(10, 8, 40, 38), (41, 1, 60, 20)],
        "outside": [(10, 8, 40, H + 3)],
        "zero_area": [(10, 8, 40, 8)],
        "not_a_number": [("ten", 8, 40, 38)],
    }.get(case, [(10, 8, 40, 38)])
    path = write_voc(tmp_path, "bad", boxes, height=50 if case == "size_mismatch" else H)
    if case == "two_faces":
        kwargs = {"max_faces": 1}
    elif case == "malformed":
        path.write_text("<annotation><size>")
    elif case == "missing_size":
        path.write_text(path.read_text().replace("<width>64</width>", ""))
    with pytest.raises(AnnotationError, match=expected) as info:
        read_voc(path, **kwargs)
    assert str(path) in str(info.value)


def test_scan_voc_folder_images_in_parent(tmp_path):
    (tmp_path / "voc").mkdir()
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "b.jpg")
    write_voc(tmp_path / "voc", "a", [(10, 8, 40, 38)], filename="a.png")
    anns = scan_voc_folder(tmp_path / "voc", max_faces=1)
    assert [(a.image_path.name, a.boxes) for a in anns] == [("a.jpg", [BOX]), ("b.jpg", [])]


def test_scan_voc_folder_xml_without_image(tmp_path):
    make_image(tmp_path / "a.jpg")
    write_voc(tmp_path, "a", [])
    write_voc(tmp_path, "ghost", [])
    with pytest.raises(AnnotationError, match="ghost.xml"):
        scan_voc_folder(tmp_path)

"""Crop preparation: negatives, the face_crops writer, the Haar helpers and tools/prepare_crops.py."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from facetorch.cli import prepare_crops as prepare_crops_cli
from facetorch.cli.common import run_tool
from facetorch.cli.prepare_crops import prepare_crops
from facetorch.data.annotations import FaceAnnotation
from facetorch.data.crops import (
    MANIFEST,
    expand_box,
    haar_annotations,
    sample_negative_boxes,
    write_crops,
    write_identity_crops,
)
from facetorch.data.haar import CascadeLoadError, HaarFaceDetector
from facetorch.evaluation import box_iou

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
W, H = 90, 120


@pytest.fixture(scope="module")
def tool() -> SimpleNamespace:
    """tools/prepare_crops.py as a function of argv that returns its exit code."""
    return SimpleNamespace(main=lambda argv: run_tool("prepare_crops.py", prepare_crops, argv))


def make_image(path: Path, width: int = W, height: int = H, seed: int = 0) -> Path:
    """A noise image, so that crops of different places differ."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def make_labelme_folder(root: Path, faces: dict[str, list[tuple]]) -> Path:
    """``root/<stem>.png`` + LabelMe JSON (none for an empty box list)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (stem, boxes) in enumerate(faces.items()):
        make_image(root / f"{stem}.png", seed=i)
        if boxes:
            shapes = [
                {"label": "face", "points": [[b[2], b[3]], [b[0], b[1]]], "shape_type": "rectangle"} for b in boxes
            ]
            data = {
                "version": "5.4.1",
                "shapes": shapes,
                "imagePath": f"{stem}.png",
                "imageData": None,
                "imageHeight": H,
                "imageWidth": W,
            }
            (root / f"{stem}.json").write_text(json.dumps(data))
    return root


def annotation(path: Path, boxes) -> FaceAnnotation:
    return FaceAnnotation(path, W, H, [tuple(map(float, b)) for b in boxes])


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the tool's hidden manifests."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}  # fmt: skip


# ---------------------------------------------------------------------------------------------- boxes


def iou(a, b) -> float:
    """IoU of two boxes through the package's one IoU (facetorch.evaluation.box_iou)."""
    return float(box_iou([a], [b])[0, 0])


def test_box_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_expand_box_grows_each_side_and_clips():
    assert expand_box((20, 20, 40, 60), 0.5, 100, 100) == (10.0, 0.0, 50.0, 80.0)
    assert expand_box((20, 20, 40, 60), 0.0, 100, 100) == (20.0, 20.0, 40.0, 60.0)
    with pytest.raises(ValueError, match="margin"):
        expand_box((0, 0, 1, 1), -0.1, 10, 10)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "width, height, faces",
    [
        (240, 240, [(125, 34, 239, 191)]),
        (301, 400, [(97, 240, 193, 356)]),
        (250, 250, [(70, 70, 180, 180), (0, 0, 40, 50)]),
        (200, 100, []),
    ],
)
def test_negatives_follow_the_sampling_rule(seed, width, height, faces):
    boxes = sample_negative_boxes(width, height, faces, 10, np.random.default_rng(seed))
    assert len(boxes) == 10
    for x1, y1, x2, y2 in boxes:
        h, w = y2 - y1, x2 - x1
        assert height / 5 <= h <= height / 2
        assert w == pytest.approx(h / 1.5)
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert all(iou((x1, y1, x2, y2), f) <= 0.1 for f in faces)


def test_negatives_give_up_instead_of_looping():
    # No overlap allowed with a face covering the image: no room at all, so none, and quickly.
    rng = np.random.default_rng(0)
    assert sample_negative_boxes(100, 100, [(0, 0, 100, 100)], 5, rng, max_iou=0.0, max_tries=50) == []
    # A very narrow image cannot hold a 1:1.5 box of at least a fifth of its height.
    assert sample_negative_boxes(5, 400, [], 3, rng, max_tries=50) == []


def test_negatives_are_deterministic_by_seed():
    def draw(seed):
        return sample_negative_boxes(W, H, [(10, 10, 50, 60)], 5, np.random.default_rng(seed))

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


# ---------------------------------------------------------------------------------------------- writer


def test_write_crops_layout_and_content(tmp_path):
    image_path = make_image(tmp_path / "img.png")
    faces = [(10, 20, 40, 65), (50, 70, 80, 115)]
    summary = write_crops([annotation(image_path, faces)], tmp_path / "out", negatives_per_image=3)
    assert (summary.images, summary.faces, summary.negatives, summary.missing_negatives) == (1, 2, 3, 0)
    tree = read_tree(tmp_path / "out")
    assert sorted(tree) == [
        "face/img_face0.png",
        "face/img_face1.png",
        "non_face/img_neg0.png",
        "non_face/img_neg1.png",
        "non_face/img_neg2.png",
    ]
    image = cv2.imread(str(image_path))
    crop = cv2.imread(str(tmp_path / "out" / "face" / "img_face1.png"))
    np.testing.assert_array_equal(crop, image[70:115, 50:80])


def test_write_crops_margin(tmp_path):
    image_path = make_image(tmp_path / "img.png")
    write_crops([annotation(image_path, [(20, 20, 40, 60)])], tmp_path / "out", negatives_per_image=0, margin=0.5)
    assert cv2.imread(str(tmp_path / "out" / "face" / "img_face0.png")).shape == (80, 40, 3)


def test_write_crops_same_seed_same_files(tmp_path):
    anns = [annotation(make_image(tmp_path / f"{s}.png", seed=i), [(10, 10, 40, 50)]) for i, s in enumerate("abc")]
    write_crops(anns, tmp_path / "one", seed=7)
    write_crops(list(reversed(anns)), tmp_path / "two", seed=7)  # order does not matter either
    write_crops(anns, tmp_path / "three", seed=8)
    one = read_tree(tmp_path / "one")
    assert one == read_tree(tmp_path / "two")
    assert one != read_tree(tmp_path / "three")
    assert not any(name.startswith(".") or "/." in name for name in one)  # no temp file left


def test_write_crops_repeated_stems_get_folder_prefix(tmp_path):
    for person in ("s1", "s2"):
        (tmp_path / person).mkdir()
        make_image(tmp_path / person / "1.png")
    anns = [annotation(tmp_path / p / "1.png", [(10, 10, 40, 50)]) for p in ("s1", "s2")]
    write_crops(anns, tmp_path / "out", negatives_per_image=0)
    assert sorted(p.name for p in (tmp_path / "out" / "face").iterdir()) == ["s1_1_face0.png", "s2_1_face0.png"]


def test_write_crops_refuses_non_empty_output(tmp_path):
    ann = annotation(make_image(tmp_path / "img.png"), [(10, 10, 40, 50)])
    out = tmp_path / "out"
    (out / "face").mkdir(parents=True)
    (out / "face" / "old.png").write_bytes(b"old")
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite") as info:
        write_crops([ann], out)
    assert str(out) in str(info.value)
    assert read_tree(out) == {"face/old.png": b"old", "keep.txt": b"mine"}

    # --overwrite replaces only what the tool wrote: a folder holding anything else is refused, untouched.
    with pytest.raises(FileExistsError, match="did not write.*face/old.png"):
        write_crops([ann], out, negatives_per_image=1, overwrite=True)
    assert read_tree(out) == {"face/old.png": b"old", "keep.txt": b"mine"}


def test_overwrite_replaces_the_crops_of_an_earlier_run_and_nothing_else(tmp_path):
    ann = annotation(make_image(tmp_path / "img.png"), [(10, 10, 40, 50)])
    out = tmp_path / "out"
    write_crops([ann], out, negatives_per_image=3)
    assert len(read_tree(out)) == 4
    write_crops([ann], out, negatives_per_image=1, overwrite=True)  # stale negatives must not mix in
    assert sorted(read_tree(out)) == ["face/img_face0.png", "non_face/img_neg0.png"]
    (out / "myphotos").mkdir()
    (out / "myphotos" / "holiday.png").write_bytes(b"a user's photo")
    with pytest.raises(FileExistsError, match="1 file.*myphotos/holiday.png"):
        write_crops([ann], out, negatives_per_image=1, overwrite=True)
    assert (out / "myphotos" / "holiday.png").read_bytes() == b"a user's photo"


def test_overwrite_never_deletes_a_data_set_given_as_output(tool, tmp_path, capsys):
    from tests.conftest import write_identity_folders

    data = make_labelme_folder(tmp_path / "data", {"a": [(10, 10, 50, 60)]})
    people = write_identity_folders(tmp_path / "people")  # PNG and PGM images, one folder per person
    before = read_tree(people)
    assert tool.main(["--labelme", str(data), "--output", str(people), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert read_tree(people) == before


# ---------------------------------------------------------------------------------------------- Haar


def test_haar_detector_on_blank_images():
    detector = HaarFaceDetector()
    for image in (
        np.full((120, 100), 90, np.uint8),
        np.zeros((120, 100, 3), np.uint8),
        np.zeros((120, 100, 4), np.uint8),
    ):
        boxes = detector.detect(image)
        assert boxes.shape == (0, 4) and boxes.dtype == np.float32
        assert detector.largest(image) is None
    with pytest.raises(TypeError, match="uint8"):
        detector.detect(np.zeros((10, 10), np.float32))


def test_haar_detector_bad_cascade():
    with pytest.raises(CascadeLoadError, match="opencv-python-headless < 5"):
        HaarFaceDetector("no_such_cascade.xml")


class _FakeDetector:
    """Finds a fixed face in every other image it is given (1st, 3rd, ...)."""

    def __init__(self):
        self.calls = []

    def largest(self, image):
        self.calls.append(image.shape)
        return None if len(self.calls) % 2 == 0 else (10.0, 10.0, 50.0, 50.0)


def test_haar_annotations_identity_and_flat_layouts(tmp_path):
    for person in ("ann", "bob"):
        (tmp_path / person).mkdir()
        for k in (1, 2):
            make_image(tmp_path / person / f"{person}_{k}.jpg")
    make_image(tmp_path / "flat.png")
    anns, without_face = haar_annotations(tmp_path, _FakeDetector())
    # sorted: flat.png first, then ann/, bob/; every second image "has no face"
    assert [a.image_path.name for a in anns] == ["flat.png", "ann_2.jpg", "bob_2.jpg"]
    assert [p.name for p in without_face] == ["ann_1.jpg", "bob_1.jpg"]
    assert anns[0].boxes == [(10.0, 10.0, 50.0, 50.0)] and (anns[0].width, anns[0].height) == (W, H)


def test_write_identity_crops(tmp_path):
    (tmp_path / "ann").mkdir()
    image_path = make_image(tmp_path / "ann" / "ann_1.jpg")
    summary = write_identity_crops(
        [annotation(image_path, [(10, 10, 50, 50)])], tmp_path / "out", root=tmp_path, size=32
    )
    assert (summary.images, summary.faces) == (1, 1)
    assert cv2.imread(str(tmp_path / "out" / "ann" / "ann_1.png")).shape == (32, 32, 3)
    flat = annotation(make_image(tmp_path / "flat.jpg"), [(10, 10, 50, 50)])
    with pytest.raises(ValueError, match="<identity>"):
        write_identity_crops([flat], tmp_path / "out2", root=tmp_path)


@pytest.mark.skipif(not (SHARED_DATA / "lfw_devtrain" / "images").is_dir(), reason="needs ../shared/data (real LFW)")
def test_haar_finds_the_face_on_a_real_lfw_image():
    path = SHARED_DATA / "lfw_devtrain" / "images" / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    box = HaarFaceDetector().largest(cv2.imread(str(path)))
    assert box is not None
    x1, y1, x2, y2 = box
    # LFW (deep funneled, 250x250) centres the face at about 100-130 px wide.
    assert abs((x1 + x2) / 2 - 125) < 25 and abs((y1 + y2) / 2 - 125) < 25
    assert 70 < x2 - x1 < 170


# ---------------------------------------------------------------------------------------------- tool


def test_tool_labelme_end_to_end(tool, tmp_path, capsys):
    data = make_labelme_folder(tmp_path / "data", {"a": [(10, 10, 50, 60)], "b": [], "c": [(30, 40, 80, 100)]})
    out = tmp_path / "crops"
    assert tool.main(["--labelme", str(data), "--output", str(out), "--negatives_per_image", "2"]) == 0
    assert sorted(read_tree(out)) == [
        "face/a_face0.png",
        "face/c_face0.png",
        "non_face/a_neg0.png",
        "non_face/a_neg1.png",
        "non_face/b_neg0.png",
        "non_face/b_neg1.png",
        "non_face/c_neg0.png",
        "non_face/c_neg1.png",
    ]
    assert cv2.imread(str(out / "face" / "c_face0.png")).shape == (60, 50, 3)
    assert "3 images -> 2 face crops, 6 non-face crops" in capsys.readouterr().out

    # A second run into the same folder is refused and leaves it as it was.
    before = read_tree(out)
    assert tool.main(["--labelme", str(data), "--output", str(out), "--seed", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert read_tree(out) == before
    assert tool.main(["--labelme", str(data), "--output", str(out), "--seed", "1", "--overwrite"]) == 0


def test_tool_reports_bad_annotation(tool, tmp_path, capsys):
    data = make_labelme_folder(tmp_path / "data", {"a": [(10, 10, 50, 60), (60, 60, 80, 90)]})
    assert tool.main(["--labelme", str(data), "--output", str(tmp_path / "o"), "--max_faces", "1"]) == 2
    assert "a.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tool_voc(tool, tmp_path):
    (tmp_path / "data" / "voc").mkdir(parents=True)
    make_image(tmp_path / "data" / "a.jpg")
    (tmp_path / "data" / "voc" / "a.xml").write_text(
        f"<annotation><filename>a.png</filename><size><width>{W}</width><height>{H}</height></size>"
        "<object><name>without_mask</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>60</ymax>"
        "</bndbox></object></annotation>"
    )
    assert tool.main(["--voc", str(tmp_path / "data" / "voc"), "--output", str(tmp_path / "o")]) == 0
    assert len(list((tmp_path / "o" / "face").iterdir())) == 1
    assert len(list((tmp_path / "o" / "non_face").iterdir())) == 5


class _FacesExceptWalls:
    """A Haar stand-in: a face in the middle of every image except a flat one (a wall)."""

    def __init__(self, cascade: str = "") -> None:
        pass

    def largest(self, image: np.ndarray) -> tuple[float, float, float, float] | None:
        return None if image.std() == 0 else (10.0, 10.0, 50.0, 50.0)


@pytest.mark.parametrize("identity_layout", [False, True])
def test_tool_haar_lists_images_without_face(tool, tmp_path, capsys, identity_layout, monkeypatch):
    monkeypatch.setattr(prepare_crops_cli, "HaarFaceDetector", _FacesExceptWalls)
    images = tmp_path / "people"
    (images / "nobody").mkdir(parents=True)
    cv2.imwrite(str(images / "nobody" / "wall.png"), np.full((120, 100, 3), 200, np.uint8))
    (images / "ann").mkdir()
    make_image(images / "ann" / "ann_1.jpg")
    out = tmp_path / "out"
    argv = ["--haar", str(images), "--output", str(out)] + (
        ["--identity_layout", "--size", "32"] if identity_layout else []
    )
    assert tool.main(argv) == 0
    assert (out / "no_face.txt").read_text() == "nobody/wall.png\n"
    captured = capsys.readouterr()
    assert "prepare_crops.py: no face found:" in captured.err and "wall.png" in captured.err
    assert "Haar found a face in 1/2 images" in captured.out
    # Only walls: nothing to cut is a failed run, not an empty output that exits 0.
    (images / "ann" / "ann_1.jpg").unlink()
    assert tool.main([*argv[:3], str(tmp_path / "out2"), *argv[4:]]) == 2
    assert "no crop could be cut from 0 image(s) (1 without a face), so nothing was written" in capsys.readouterr().err


def test_tool_refuses_output_over_its_input(tool, tmp_path, capsys):
    data = make_labelme_folder(tmp_path / "data", {"a": [(10, 10, 50, 60)]})
    assert tool.main(["--labelme", str(data), "--output", str(data), "--overwrite"]) == 2
    assert "input" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["a.json", "a.png"]


def test_tool_identity_layout_needs_haar(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main(["--labelme", str(tmp_path), "--output", str(tmp_path / "o"), "--identity_layout"])


def test_tool_split_keeps_each_photo_in_one_split(tool, tmp_path):
    faces = {f"p{i}": [(10, 10, 50, 60)] for i in range(10)}
    data = make_labelme_folder(tmp_path / "data", faces)
    out = tmp_path / "crops"
    args = ["--labelme", str(data), "--output", str(out), "--negatives_per_image", "2", "--split", "0.6,0.2,0.2"]
    assert tool.main(args) == 0
    photo_split = {}
    for path in out.rglob("*.png"):
        split, photo = path.relative_to(out).parts[0], path.stem.split("_")[0]
        assert photo_split.setdefault(photo, split) == split, f"{photo} straddles splits"
    assert sorted(collections.Counter(photo_split.values()).items()) == [("test", 2), ("train", 6), ("val", 2)]
    from facetorch.data import FaceDataModule

    sizes = {name: len(index) for name, index in FaceDataModule(root=str(out)).splits.items()}
    assert sizes == {"train": 18, "val": 6, "test": 6}  # the split folders are used as they are


def test_tool_split_rejects_bad_shares(tool, tmp_path, capsys):
    data = make_labelme_folder(tmp_path / "data", {"a": [(10, 10, 50, 60)]})
    assert tool.main(["--labelme", str(data), "--output", str(tmp_path / "o"), "--split", "0.5,0.1"]) == 2
    assert "TRAIN,VAL,TEST" in capsys.readouterr().err


def test_tool_combines_sources(tool, tmp_path):
    first = make_labelme_folder(tmp_path / "one", {"a": [(10, 10, 50, 60)]})
    second = make_labelme_folder(tmp_path / "two", {"b": [(10, 10, 50, 60)], "c": []})
    out = tmp_path / "crops"
    assert tool.main(["--labelme", str(first), "--labelme", str(second), "--output", str(out),
                      "--negatives_per_image", "1"]) == 0
    assert sorted(read_tree(out)) == ["face/a_face0.png", "face/b_face0.png",
                                      "non_face/a_neg0.png", "non_face/b_neg0.png", "non_face/c_neg0.png"]

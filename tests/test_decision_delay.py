"""The decision delay of tracked video: rows wait a bounded number of frames and carry their tracks' settled names.

The toy detector and embedder of tests/test_recognition.py (coloured squares on black; a square's
colour is its identity) keep every test in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
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

"""Face tracks: the tracker on synthetic boxes, names from evidence, quality, the tracked CSV, the test video and its scorer.

The toy detector and embedder of tests/test_recognition.py (coloured squares on black; a
square's colour is its identity) keep every test in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetorch.cli import gallery as gallery_cli
from facetorch.evaluation.tracking import track_metrics
from facetorch.recognition import open_gallery
from facetorch.recognition.enrollment import enroll_photos
from facetorch.recognition.evidence import NameEvidence
from facetorch.recognition.pipeline import OpenSetMatcher, Recognizer
from facetorch.recognition.quality import face_quality, pose_offset
from facetorch.recognition.results import CSV_FIELDS, TRACKED_FIELDS, score_recognitions
from facetorch.recognition.runs import recognize_source
from facetorch.recognition.tracked import TrackOptions
from facetorch.recognition.tracking import FaceTracker, flow_boxes
from tests.conftest import read_csv
from tests.test_recognition import (
    COLOURS,
    STRANGER,
    ColourEmbedder,
    SquareDetector,
    people_folder,
    picture,
    write_rgb,
    write_video,
)

# ---------------------------------------------------------------------------------------------- the tracker


def run_boxes(tracker: FaceTracker, frames: list[list[tuple[float, ...]]], embed_of: dict | None = None) -> list[dict]:
    """Feed per-frame boxes (x1, y1, x2, y2[, identity]) to the tracker; the id it gives each identity, per frame."""
    seen = []
    for index, faces in enumerate(frames):
        tracker.predict()
        boxes = np.array([f[:4] for f in faces], dtype=float).reshape(-1, 4)
        identities = [f[4] if len(f) > 4 else k for k, f in enumerate(faces)]
        embed = None
        if embed_of is not None:
            def embed(indices: list[int], identities: list = identities) -> np.ndarray:
                return np.stack([embed_of[identities[i]] for i in indices])
        visible = tracker.update(index, boxes, np.ones(len(boxes)), embed)
        for track in visible:  # what the loop does: the track's appearance is its faces' mean
            if embed_of is not None:
                track.feature = embed_of[identities[track.detection]]
        seen.append({identities[t.detection]: t.id for t in visible})
    return seen


def test_crossing_faces_keep_their_ids_by_motion_and_by_appearance() -> None:
    # Two faces walk towards each other on one line, pass through each other, and go on.
    frames = [[(10 + 8 * i, 50, 50 + 8 * i, 90, "a"), (250 - 8 * i, 52, 290 - 8 * i, 92, "b")] for i in range(31)]
    seen = run_boxes(FaceTracker(), frames)
    assert all(s == seen[0] for s in seen) and set(seen[0].values()) == {1, 2}
    # Same size, same line, and a face that stops in the middle while the other passes: the boxes alone are
    # ambiguous there; the faces' appearance tells them apart.
    embed_of = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    frames = [[(130, 50, 170, 90, "a"), (250 - 8 * i, 50, 290 - 8 * i, 90, "b")] for i in range(31)]
    seen = run_boxes(FaceTracker(same_person=0.8), frames, embed_of)
    assert all(s == seen[0] for s in seen)


def test_a_gap_longer_than_max_gap_ends_a_track_and_a_reappearing_face_keeps_its_id() -> None:
    face = (40, 40, 80, 80, "a")
    frames = [[face]] * 3 + [[]] * 5 + [[face]] * 2
    assert [s.get("a") for s in run_boxes(FaceTracker(max_gap=5), frames)] == [1, 1, 1, None, None, None, None, None, 1, 1]
    assert [s.get("a") for s in run_boxes(FaceTracker(max_gap=4), frames)][-2:] == [2, 2]
    tracker = FaceTracker(max_gap=4)
    run_boxes(tracker, frames)
    tracker.end_all()
    assert sorted(t.id for t in tracker.ended) == [1, 2]
    # Behind something for a while, it re-appears elsewhere (no overlap): its appearance gives its id back.
    embed_of = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    frames = [[face, (200, 40, 240, 80, "b")]] * 3 + [[(200, 40, 240, 80, "b")]] * 4 + [[(120, 60, 160, 100, "a")]]
    seen = run_boxes(FaceTracker(max_gap=10), frames, embed_of)
    assert seen[-1] == {"a": 1}
    assert run_boxes(FaceTracker(max_gap=10), frames)[-1] == {"a": 3}  # without appearance: a new track


def test_flow_moves_a_box_with_the_picture() -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (120, 160)).astype(np.uint8), (5, 5), 0)
    moved = np.roll(texture, (3, 5), axis=(0, 1))
    (box,) = flow_boxes(texture, moved, [(40.0, 30.0, 100.0, 90.0)])
    assert box is not None and np.allclose(box, (45, 33, 105, 93), atol=0.5)
    assert flow_boxes(np.zeros((60, 60), np.uint8), np.zeros((60, 60), np.uint8), [(10.0, 10.0, 40.0, 40.0)]) == [None]


# ---------------------------------------------------------------------------------------------- names and quality


def test_a_track_name_does_not_flip_on_one_bad_answer_and_unknown_becomes_a_person() -> None:
    evidence = NameEvidence(threshold=0.5, confirm=2, sure=0.05)
    assert evidence.decide("ann", 0.6, frame=0) == "ann" and evidence.named_from == 0
    assert evidence.decide("unknown", 0.4, frame=5) == "ann"  # one bad answer
    assert evidence.decide("ann", 0.6, frame=10) == "ann"
    assert evidence.decide("bob", 0.6, frame=15) == "ann" and evidence.deciding
    assert evidence.decide("bob", 0.6, frame=20) == "bob" and evidence.named_from == 20
    late = NameEvidence(threshold=0.5, confirm=2, sure=0.05)
    assert late.decide("ann", 0.52, frame=3) == "unknown"  # above the threshold, but not sure: waits
    assert late.decide("ann", 0.56, frame=6) == "ann" and late.named_from == 6
    assert late.changes == [(6, "ann")]


def test_the_mean_embedding_weighs_faces_by_quality() -> None:
    evidence = NameEvidence(threshold=0.5)
    evidence.add(np.array([1.0, 0.0]), quality=1.0)
    evidence.add(np.array([0.0, 2.0]), quality=0.0)  # unit length first; a useless frame counts only a little
    assert evidence.embeddings == 2 and evidence.mean[0] > 0.99 and np.isclose(np.linalg.norm(evidence.mean), 1.0)
    with pytest.raises(ValueError, match="no embedding"):
        _ = NameEvidence(threshold=0.5).mean


def test_the_average_scores_a_track_as_the_mean_of_its_frames_scores() -> None:
    """The threshold was calibrated on single embeddings: the track's score must stay on that scale."""
    rng = np.random.default_rng(0)
    enrolled = rng.normal(size=16)
    enrolled /= np.linalg.norm(enrolled)
    frames = [enrolled + rng.normal(scale=0.4, size=16) for _ in range(6)]
    qualities = [0.9, 0.2, 0.5, 1.0, 0.0, 0.7]
    evidence = NameEvidence(threshold=0.5)
    for frame, quality in zip(frames, qualities):
        evidence.add(frame, quality)
    singles = np.array([f @ enrolled / np.linalg.norm(f) for f in frames])
    weights = np.array(qualities) + 0.05
    assert np.isclose(float(evidence.average @ enrolled), float(singles @ weights / weights.sum()), atol=1e-6)
    assert float(evidence.mean @ enrolled) > float(evidence.average @ enrolled)  # the unit mean scores higher: noise cancels


def test_quality_prefers_big_sharp_frontal_faces() -> None:
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 255, (200, 200)).astype(np.uint8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    box = (20.0, 20.0, 140.0, 140.0)
    assert face_quality(sharp, box) > 0.9 > 0.5 > face_quality(blurred, box)
    assert face_quality(sharp, (20.0, 20.0, 60.0, 60.0)) == pytest.approx(0.4 * face_quality(sharp, box), rel=0.1)
    frontal = np.array([[60, 50], [45, 50], [140, 50], [155, 50], [100, 90]], float)
    turned = frontal.copy()
    turned[4, 0] = 140
    assert pose_offset(frontal) == pytest.approx(0.0) and pose_offset(turned) == pytest.approx(40 / 95)
    assert face_quality(sharp, box, turned) < 0.2 * face_quality(sharp, box, frontal)
    assert face_quality(sharp, (-50.0, -50.0, 1.0, 1.0)) == 0.0


# ---------------------------------------------------------------------------------------------- the tracked run


@pytest.fixture
def gallery_file(tmp_path: Path) -> Path:
    path = tmp_path / "people.db"
    enroll_photos(ColourEmbedder(), SquareDetector(), path, people_folder(tmp_path / "people"), progress=False)
    return path


def crossing_video(path: Path, frames: int = 12) -> Path:
    """Red walks right, blue walks left on another line, a stranger stands still."""
    return write_video(path, [picture([(COLOURS["red"], 2 + 6 * i, 10, 24), (COLOURS["blue"], 100 - 6 * i, 50, 24),
                                       (STRANGER, 100, 5, 20)], (96, 128)) for i in range(frames)])  # fmt: skip


def test_a_tracked_video_has_a_row_per_face_and_frame_with_track_and_quality(gallery_file: Path, tmp_path: Path) -> None:
    video = crossing_video(tmp_path / "clip.avi")
    detector = SquareDetector()
    recognizer = Recognizer(ColourEmbedder(), detector, OpenSetMatcher(open_gallery(gallery_file), 0.9))
    run = recognize_source(recognizer, str(video), tmp_path / "out", fourcc="MJPG", progress=False,
                           track=TrackOptions(detect_every=3))  # fmt: skip
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert list(rows[0]) == TRACKED_FIELDS == [*CSV_FIELDS, "track", "quality"]
    assert sorted({int(r["frame"]) for r in rows}) == list(range(12)) and len(rows) == 36
    names = {(r["name"], r["track"]) for r in rows}
    assert names == {("unknown", "1"), ("red", "2"), ("blue", "3")}  # ids in the detector's order (top first)
    assert all(0.0 <= float(r["quality"]) <= 1.0 for r in rows)
    assert detector.calls == 4  # frames 0, 3, 6, 9: the others are tracked
    assert run.tracked and run.tracks == 3 and run.frames == 12 and run.faces == 36 and run.lost_frames == []
    assert {"detect", "embed", "match", "track", "quality"} <= set(run.seconds_by_stage)
    tracks = read_csv(tmp_path / "out" / "tracks.csv")
    assert [(t["track"], t["name"], t["named_from"], t["frames"]) for t in tracks] == [
        ("1", "unknown", "", "12"), ("2", "red", "0", "12"), ("3", "blue", "0", "12")]  # fmt: skip


def test_the_command_tracks_by_default_and_no_track_keeps_the_per_frame_csv(
    gallery_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: ColourEmbedder())
    monkeypatch.setattr(gallery_cli, "_detector", lambda args, recorded: SquareDetector())
    video = crossing_video(tmp_path / "clip.avi", frames=6)
    base = ["recognize", "--gallery", str(gallery_file), "--source", str(video), "--threshold", "0.9", "--quiet",
            "--fourcc", "MJPG"]  # fmt: skip
    gallery_cli.gallery([*base, "--output", str(tmp_path / "tracked")])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["tracked"] and summary["tracks"] == 3 and summary["detect_every"] == TrackOptions().detect_every
    assert list(read_csv(tmp_path / "tracked" / "recognitions.csv")[0]) == TRACKED_FIELDS
    gallery_cli.gallery([*base, "--output", str(tmp_path / "plain"), "--no_track"])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    plain = read_csv(tmp_path / "plain" / "recognitions.csv")
    assert not summary["tracked"] and summary["tracks"] is None and list(plain[0]) == CSV_FIELDS
    assert len(plain) == 18 and all(sorted(r["name"] for r in plain if r["frame"] == str(f)) == ["blue", "red", "unknown"]
                                    for f in range(6))  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["clip_recognized.avi", "recognitions.csv"]
    # A photo is not tracked: the eight columns.
    photo = write_rgb(tmp_path / "photo.png", picture([(COLOURS["green"], 10, 10, 30)]))
    gallery_cli.gallery([*base[:4], str(photo), "--output", str(tmp_path / "photo"), "--quiet"])
    assert list(read_csv(tmp_path / "photo" / "recognitions.csv")[0]) == CSV_FIELDS


def test_bad_tracking_flags_are_one_line(gallery_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.test_recognition import error_line

    base = ["recognize", "--gallery", str(gallery_file), "--source", str(tmp_path), "--output", str(tmp_path / "o")]
    for value, said in (("0", "got 0"), ("-2", "got -2")):  # argparse's line, with the flag and the allowed range
        line = error_line([*base, f"--detect_every={value}"], capsys)
        assert "--detect_every" in line and "integer >= 1" in line and said in line, line
    assert "cannot go with --no_track" in error_line([*base, "--no_track", "--detect_every", "2"], capsys)
    line = error_line([*base, "--max_gap=-1"], capsys)
    assert "--max_gap" in line and "integer >= 0" in line, line
    assert not (tmp_path / "o").exists()


def corrupt_frames(path: Path, frames: list[int], truncate_at: int | None = None) -> None:
    """Wipe the JPEG data of some frames of an MJPG AVI (OpenCV cannot decode them), or cut the file before a frame."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8 and data[i - 8 : i - 4] == b"00dc"]
    for k in frames:
        data[starts[k] : starts[k + 1] - 8] = bytes(starts[k + 1] - 8 - starts[k])
    path.write_bytes(bytes(data[: starts[truncate_at] + 40] if truncate_at is not None else data))


def test_unreadable_frames_and_an_early_end_keep_the_tracks_and_are_listed(
    gallery_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(gallery_file), 0.9))
    video = crossing_video(tmp_path / "clip.avi", frames=14)
    corrupt_frames(video, [5, 6], truncate_at=11)
    run = recognize_source(recognizer, str(video), tmp_path / "out", fourcc="MJPG", progress=False,
                           track=TrackOptions(detect_every=2))  # fmt: skip
    assert run.lost_frames == [5, 6, 11, 12, 13] and run.ended_early
    assert "5 frame(s)" in capsys.readouterr().err
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert sorted({int(r["frame"]) for r in rows}) == [0, 1, 2, 3, 4, 7, 8, 9, 10]
    assert {(r["name"], r["track"]) for r in rows} == {("unknown", "1"), ("red", "2"), ("blue", "3")}


# ---------------------------------------------------------------------------------------------- the test video and its score


def test_a_composed_video_has_moving_tracks_whose_truth_sits_on_the_faces(tmp_path: Path) -> None:
    from facetorch.data.moving import VIDEO_TRUTH_FIELDS, compose_moving_video
    from facetorch.data.scenes import LFW_FACE

    rng = np.random.default_rng(0)
    for k in range(6):
        for i in range(3):
            photo = np.full((250, 250, 3), 20, np.uint8)
            photo[LFW_FACE[1] : LFW_FACE[3], LFW_FACE[0] : LFW_FACE[2]] = rng.integers(120, 255, 3)
            write_rgb(tmp_path / "lfw" / f"person_{k}" / f"person_{k}_{i:04d}.png", photo)
    kwargs = {"people": 3, "enrol_per_person": 1, "tracks": 4, "frames": 20, "size": (240, 400), "scale": (0.4, 0.6)}
    summary = compose_moving_video(tmp_path / "lfw", tmp_path / "set", **kwargs)
    truth = read_csv(tmp_path / "set" / "video_truth.csv")
    assert list(truth[0]) == VIDEO_TRUTH_FIELDS and len(truth) == summary["face_frames"] > 0
    assert summary["tracks"] == 4 and 1 <= summary["stranger_tracks"] <= 3
    assert {r["track"] for r in truth} <= {"0", "1", "2", "3"} and all(int(r["frame"]) < 20 for r in truth)
    capture = cv2.VideoCapture(str(tmp_path / "set" / "video.avi"))
    frames = [capture.read()[1] for _ in range(20)]
    capture.release()
    for row in truth:  # the box covers the bright square of that face in that frame
        x1, y1, x2, y2 = (int(round(float(row[k]))) for k in ("x1", "y1", "x2", "y2"))
        assert frames[int(row["frame"])][y1 + 3 : y2 - 3, x1 + 3 : x2 - 3].mean() > 100
    moving = {}
    for row in truth:
        moving.setdefault(row["track"], []).append(float(row["x1"]))
    assert any(max(xs) - min(xs) > 20 for xs in moving.values())
    compose_moving_video(tmp_path / "lfw", tmp_path / "again", **kwargs)
    assert read_csv(tmp_path / "again" / "video_truth.csv") == truth
    enrolled = {p.name for p in (tmp_path / "set" / "enrol").iterdir()}
    assert len(enrolled) == 3 and {r["name"] for r in truth if r["enrolled"] == "1"} <= enrolled
    assert not {r["name"] for r in truth if r["enrolled"] == "0"} & enrolled


def test_the_scorer_counts_name_changes_and_id_switches_along_true_tracks(tmp_path: Path) -> None:
    truth = [{"key": f, "box": [0, 0, 10, 10], "name": "ann", "enrolled": True, "track": "0"} for f in range(4)] + \
            [{"key": f, "box": [50, 0, 60, 10], "name": "zed", "enrolled": False, "track": "1"} for f in range(4)]  # fmt: skip
    found = [{"key": 0, "box": [0, 0, 10, 10], "name": "unknown", "track": 1},
             {"key": 1, "box": [0, 0, 10, 10], "name": "ann", "track": 1},
             {"key": 2, "box": [1, 0, 10, 10], "name": "ann", "track": 3},  # an id switch
             {"key": 3, "box": [0, 0, 10, 10], "name": "ann", "track": 3},
             *[{"key": f, "box": [50, 0, 60, 10], "name": "bob" if f == 2 else "unknown", "track": 2}
               for f in range(4)]]  # fmt: skip
    report = track_metrics(truth, found)
    assert report["identification_rate"] == 0.75 and report["stranger_accept_rate"] == 0.25
    assert report["name_changes"] == 3 and report["name_changes_per_100"] == pytest.approx(100 * 3 / 8)
    assert report["id_switches"] == 1 and report["tracks_found"] == 3 and report["true_tracks"] == 2
    assert report["per_track"]["0"]["named_from"] == 1 and report["per_track"]["1"]["named_from"] is None
    assert track_metrics(truth, [{**row, "track": None} for row in found])["id_switches"] is None
    # Through the files: video_truth.csv and a tracked recognitions.csv.
    (tmp_path / "truth.csv").write_text("source,frame,x1,y1,x2,y2,name,enrolled,track\n"
                                        "v.avi,0,0,0,10,10,ann,1,0\nv.avi,1,0,0,10,10,ann,1,0\n")  # fmt: skip
    (tmp_path / "found.csv").write_text("source,frame,x1,y1,x2,y2,name,score,track,quality\n"
                                        "v.avi,0,0,0,10,10,ann,0.9,4,0.8\nv.avi,1,0,0,10,10,unknown,0.3,4,0.2\n")  # fmt: skip
    scored = score_recognitions(tmp_path / "truth.csv", tmp_path / "found.csv")
    assert (scored["detection_rate"], scored["identification_rate"], scored["name_changes"]) == (1.0, 0.5, 1)
    assert scored["id_switches"] == 0


def test_another_face_in_a_tracks_box_starts_a_new_track(gallery_file: Path, tmp_path: Path) -> None:
    # A cut: red stands there for 6 frames, then green in the same place. The boxes cannot tell; the faces can.
    frames = [picture([(COLOURS["red"], 30, 20, 40)])] * 6 + [picture([(COLOURS["green"], 30, 20, 40)])] * 6
    video = write_video(tmp_path / "cut.avi", frames)
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(gallery_file), 0.9))
    recognize_source(recognizer, str(video), tmp_path / "out", fourcc="MJPG", progress=False,
                     track=TrackOptions(detect_every=2, embed_every=100, same_person=0.5))  # fmt: skip
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert [(r["name"], r["track"]) for r in rows] == [("red", "1")] * 6 + [("green", "2")] * 6  # unlike, and a sudden change
    tracks = read_csv(tmp_path / "out" / "tracks.csv")
    assert [(t["track"], t["first_frame"], t["last_frame"]) for t in tracks] == [("1", "0", "5"), ("2", "6", "11")]


def test_a_cut_between_detection_frames_is_detected_at_once(gallery_file: Path, tmp_path: Path) -> None:
    # red, then a cut at frame 4 (between detection frames 3 and 6) to green in the same place, filling the frame
    frames = [picture([(COLOURS["red"], 20, 8, 80)])] * 4 + [picture([(COLOURS["green"], 20, 8, 80)])] * 5
    detector = SquareDetector()
    recognizer = Recognizer(ColourEmbedder(), detector, OpenSetMatcher(open_gallery(gallery_file), 0.9))
    recognize_source(recognizer, str(write_video(tmp_path / "cut.avi", frames)), tmp_path / "out", fourcc="MJPG",
                     progress=False, track=TrackOptions(detect_every=3, embed_every=100, same_person=0.5))  # fmt: skip
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert [(r["name"], r["track"]) for r in rows] == [("red", "1")] * 4 + [("green", "2")] * 5
    assert detector.calls == 4  # frames 0, 3, the cut at 4, and 6


def test_a_still_picture_that_changes_a_little_at_once_is_a_new_scene(gallery_file: Path, tmp_path: Path) -> None:
    # Pictures on one background (a slideshow, composed scenes): red stands still, then green elsewhere. The
    # whole frame changes by about 11 grey levels, under the cut's 20, but out of a still picture: detected at
    # once, so red's box is not carried into green's picture until the next detection frame.
    red, green = picture([(COLOURS["red"], 10, 20, 24)]), picture([(COLOURS["green"], 90, 50, 24)])
    overview = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA).astype(float)
                for f in (red, green)]  # fmt: skip
    assert 8 < np.abs(overview[1] - overview[0]).mean() < 20  # a scene change, not a cut
    detector = SquareDetector()
    recognizer = Recognizer(ColourEmbedder(), detector, OpenSetMatcher(open_gallery(gallery_file), 0.9))
    video = write_video(tmp_path / "slides.avi", [red] * 4 + [green] * 5)
    recognize_source(recognizer, str(video), tmp_path / "out", fourcc="MJPG", progress=False,
                     track=TrackOptions(detect_every=3, embed_every=100, same_person=0.5))  # fmt: skip
    rows = [(int(r["frame"]), r["name"]) for r in read_csv(tmp_path / "out" / "recognitions.csv")]
    assert rows == [(f, "red") for f in range(4)] + [(f, "green") for f in range(4, 9)]
    assert detector.calls == 4  # frames 0, 3, the new scene at 4, and 6


def test_one_unlike_face_without_a_cut_does_not_split_its_track(gallery_file: Path, tmp_path: Path) -> None:
    # Frame 6 shows a face unlike red's (a blurred or turned frame) whose picture changed only a little: not a cut.
    odd = (70, 150, 20)  # far from red as an embedding, close in grey (the thumbnails differ by about 28 levels)
    frames = [picture([(COLOURS["red"], 30, 20, 40)])] * 6 + [picture([(odd, 30, 20, 40)])]
    video = write_video(tmp_path / "blip.avi", frames + [picture([(COLOURS["red"], 30, 20, 40)])] * 5)
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(gallery_file), 0.9))
    recognize_source(recognizer, str(video), tmp_path / "out", fourcc="MJPG", progress=False,
                     track=TrackOptions(detect_every=2, embed_every=100, same_person=0.5))  # fmt: skip
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    assert [(r["name"], r["track"]) for r in rows] == [("red", "1")] * 12  # the next face (frame 8) is red's again


def test_orl_photo_sequences_make_a_recording_with_a_cut_between_subjects(tmp_path: Path) -> None:
    from facetorch.data.moving import compose_photo_sequence_video

    for k in range(4):  # ORL's layout: s1..s4, ten 92x112 grey photos each
        for i in range(1, 11):
            photo = np.full((112, 92), 10 * k + i, np.uint8)
            (tmp_path / "orl" / f"s{k + 1}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "orl" / f"s{k + 1}" / f"{i}.pgm"), photo)
    summary = compose_photo_sequence_video(tmp_path / "orl", tmp_path / "set", people=2, enrol_per_person=3, subjects=3,
                                           hold=2, seed=1)  # fmt: skip
    truth = read_csv(tmp_path / "set" / "video_truth.csv")
    enrolled = {t["track"]: t["enrolled"] for t in truth}
    assert summary["frames"] == len(truth) == sum(2 * (7 if e == "1" else 10) for e in enrolled.values())
    assert [t["track"] for t in truth] == sorted(t["track"] for t in truth)  # one subject after another
    assert {(t["x1"], t["y1"], t["x2"], t["y2"]) for t in truth} == {("14.0", "44.0", "168.0", "200.0")}
    assert all(len(list(p.iterdir())) == 3 for p in (tmp_path / "set" / "enrol").iterdir())
    capture = cv2.VideoCapture(str(tmp_path / "set" / "video.avi"))
    first = capture.read()[1]
    capture.release()
    assert first.shape == (224, 184, 3)


def test_the_lockstep_comparison_scores_both_ways_and_checks_the_goals(gallery_file: Path, tmp_path: Path) -> None:
    from facetorch.recognition.compare import compare_tracking

    video = crossing_video(tmp_path / "clip.avi", frames=9)
    truth = ["source,frame,x1,y1,x2,y2,name,enrolled,track"]
    for i in range(9):
        truth += [f"clip.avi,{i},{2 + 6 * i},10,{26 + 6 * i},34,red,1,0",
                  f"clip.avi,{i},{100 - 6 * i},50,{124 - 6 * i},74,blue,1,1", f"clip.avi,{i},100,5,120,25,yellow,0,2"]
    (tmp_path / "truth.csv").write_text("\n".join(truth) + "\n")
    recognizer = Recognizer(ColourEmbedder(), SquareDetector(), OpenSetMatcher(open_gallery(gallery_file), 0.9))
    result = compare_tracking(recognizer, video, tmp_path / "truth.csv", tmp_path / "runs", TrackOptions(detect_every=3))
    for way in ("per_frame", "tracked"):
        assert result[way]["identification_rate"] == 1.0 and result[way]["stranger_accept_rate"] == 0.0
        assert result[way]["name_changes_per_100"] == 0.0 and result[way]["frames_s"] > 0
    assert result["tracked"]["id_switches"] == 0 and result["per_frame"]["id_switches"] is None and result["frames"] == 9
    assert result["goals"]["identification_not_lower"]["met"] and result["goals"]["name_changes_per_100_at_most_0.5"]["met"]
    assert result["speedup"] > 0 and (tmp_path / "runs" / "tracked" / "tracks.csv").is_file()


def test_replaying_detections_measures_what_a_longer_gap_does(tmp_path: Path) -> None:
    from facetorch.recognition.compare import replay_gaps

    # One face, missed by the detector in frames 3-8, found again in the same place.
    header = "source,frame,x1,y1,x2,y2,name,score\n"
    seen = [f for f in range(14) if not 3 <= f <= 8]
    (tmp_path / "found.csv").write_text(header + "".join(f"v,{f},10,10,50,50,ann,0.9\n" for f in seen))
    (tmp_path / "truth.csv").write_text("source,frame,x1,y1,x2,y2,name,enrolled,track\n"
                                        + "".join(f"v,{f},10,10,50,50,ann,1,0\n" for f in range(14)))  # fmt: skip
    report = replay_gaps(tmp_path / "found.csv", tmp_path / "truth.csv", [3, 6], detect_every=1)
    assert report[3]["tracks_found"] == 2 and report[3]["id_switches"] == 1
    assert report[6]["tracks_found"] == 1 and report[6]["id_switches"] == 0 and report[6]["face_frames_found"] == 8

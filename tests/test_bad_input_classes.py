"""Bad input, second round: each class of issue 25 across every tool, one parametrised test per class.

1. an output that is one of the inputs (or a folder holding one) is refused, naming both, and the input survives;
2. a run that did nothing fails in one line (and a partial run says what it skipped);
3. every skipped input is counted and named on stderr;
4. a number outside its meaning is refused with its allowed range;
5. a data option that contradicts the checkpoint is refused or named in one line;
6. evaluation sets that contradict the gallery or the model are refused, naming the people;
7. a config file that is not a mapping is refused, naming the file.

The tools run in this process on tiny generated data and conftest's one-epoch checkpoints. The
docs page ``docs/bad_input.md`` lists each case with the test that checks it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import pytest

from facetorch.cli import baselines, benchmark, detect, explain, export, gallery, prepare_crops, prepare_shards, synthetic_faces
from facetorch.cli.lightning import evaluate_main, train_main
from facetorch.inference.embedder import Embedder
from facetorch.recognition.enrollment import enroll, split_open_set
from tests.conftest import REPO, notices

TINY = REPO / "tests" / "configs"


def run(main: Callable[[list[str]], Any], argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """A tool's exit code and stderr (every tool ends with SystemExit)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return int(exit_info.value.code or 0), capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if ": error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def write_video(path: Path, frames: int, source: Path) -> Path:
    frame = cv2.imread(str(source))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (frame.shape[1], frame.shape[0]))
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path


def unreadable_people(root: Path) -> Path:
    for name in ("anna", "bert"):
        (root / name).mkdir(parents=True)
        (root / name / "x.jpg").write_bytes(b"not a jpeg")
        (root / name / "y.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def world(tiny_checkpoints: dict, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Checkpoints, their configs, a gallery, probes, photos, videos and broken files, for every tool."""
    work = tmp_path_factory.mktemp("bad_input_classes")
    face, crops = tiny_checkpoints["face_vgg.yaml"]
    identity, people = tiny_checkpoints["identity_tiny.yaml"]
    embedding, faces = tiny_checkpoints["embedding_tiny.yaml"]
    detector, boxes = tiny_checkpoints["detector_tiny.yaml"]
    open_set = work / "open_set"
    split_open_set(faces, open_set, people=4, per_person=2)
    gallery_file = work / "people.db"
    enroll(Embedder(embedding, faces="whole", progress=False), gallery_file, open_set / "enrol")
    photo = sorted(boxes.glob("*.jpg"))[0]
    photos = work / "photos"
    photos.mkdir()
    shutil.copy(photo, photos / "a.jpg")
    (photos / "broken.jpg").write_bytes(b"garbage")
    videos = work / "videos"
    videos.mkdir()
    (work / "notes.txt").write_text("not a picture")
    truth, other = work / "truth.csv", work / "other_set.csv"
    truth.write_text("source,frame,x1,y1,x2,y2,name,enrolled\na.png,,1,1,20,20,person_00,1\n")
    other.write_text("source,frame,x1,y1,x2,y2,name,score\nelsewhere/b.png,0,1,1,20,20,person_00,0.9\n")
    return SimpleNamespace(
        work=work, face=face, face_config=face.parents[1] / "config.yaml", crops=crops, identity=identity,
        identity_config=identity.parents[1] / "config.yaml", people=people, embedding=embedding, faces=faces,
        detector=detector, boxes=boxes, open_set=open_set, gallery=gallery_file, photos=photos,
        video=write_video(videos / "clip.avi", 4, photo), no_frames=write_video(work / "no_frames.avi", 0, photo),
        notes=work / "notes.txt", unreadable=unreadable_people(work / "unreadable"),
        truth=truth, other_set=other,
    )  # fmt: skip


def snapshot(path: Path) -> Any:
    """What a file holds, or the files (and their bytes) under a folder."""
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# 1. An output that is one of the inputs
# --------------------------------------------------------------------------------------------

CLASS_1 = {  # tool -> (main, argv from the world, the input that must survive)
    "evaluate": (evaluate_main, lambda w: ["--config", w.face_config, "--ckpt_path", w.face, "--data.root", w.crops,
                                           "--output", w.face, "--overwrite"], lambda w: w.face),
    "export": (export.main, lambda w: ["--config", w.face_config, "--ckpt_path", w.face, "--format", "onnx",
                                       "--output", w.face_config, "--overwrite"], lambda w: w.face_config),
    "explain": (explain.main, lambda w: ["--config", w.face_config, "--ckpt_path", w.face, "--images", w.crops / "face",
                                         "--output", w.crops, "--overwrite"], lambda w: w.crops),
    "train": (train_main, lambda w: ["--config", TINY / "face_vgg.yaml", "--data.root", w.crops,
                                     f"--trainer.default_root_dir={w.crops}"], lambda w: w.crops),
    "detect": (detect.main, lambda w: ["--ckpt_path", w.detector, "--source", w.photos, "--output", w.photos,
                                       "--overwrite"], lambda w: w.photos),
    "gallery enroll": (gallery.main, lambda w: ["enroll", "--ckpt_path", w.embedding, "--faces", "whole", "--images",
                                                w.open_set / "enrol", "--gallery", w.embedding], lambda w: w.embedding),
    "gallery recognize": (gallery.main, lambda w: ["recognize", "--gallery", w.gallery, "--ckpt_path", w.embedding,
                                                   "--source", w.video, "--output", w.video.parent, "--overwrite"],
                          lambda w: w.video),
    "gallery identify": (gallery.main, lambda w: ["identify", "--ckpt_path", w.embedding, "--gallery", w.gallery,
                                                  "--images", w.open_set / "known", "--output", w.gallery, "--overwrite"],
                         lambda w: w.gallery),
    "gallery evaluate": (gallery.main, lambda w: ["evaluate", "--ckpt_path", w.embedding, "--gallery", w.gallery, "--known",
                                                  w.open_set / "known", "--unknown", w.open_set / "unknown", "--output",
                                                  w.open_set, "--overwrite"], lambda w: w.open_set),
    "gallery split": (gallery.main, lambda w: ["split", "--images", w.faces, "--people", 2, "--per_person", 1, "--output",
                                               w.faces, "--overwrite"], lambda w: w.faces),
    "gallery compose": (gallery.main, lambda w: ["compose", "--lfw", w.faces, "--output", w.faces.parent, "--overwrite"],
                        lambda w: w.faces),
    "gallery score": (gallery.main, lambda w: ["score", "--truth", w.truth, "--recognitions", w.other_set, "--output",
                                               w.other_set, "--overwrite"], lambda w: w.other_set),
    "prepare_crops": (prepare_crops.main, lambda w: ["--labelme", w.boxes, "--output", w.boxes, "--overwrite"],
                      lambda w: w.boxes),
    "prepare_shards": (prepare_shards.main, lambda w: ["--layout", "identity_folders", "--images", w.people, "--output",
                                                       w.people.parent, "--overwrite"], lambda w: w.people),
    "baselines": (baselines.main, lambda w: ["--config", w.face_config, "--data.root", w.crops, "--output", w.face_config,
                                             "--overwrite"], lambda w: w.face_config),  # a run's config.yaml is read too
    "benchmark": (benchmark.main, lambda w: ["--task", "scan", "--data_root", w.people, "--output", w.people, "--overwrite"],
                  lambda w: w.people),
}  # fmt: skip


@pytest.mark.parametrize("tool", list(CLASS_1))
def test_an_output_that_is_an_input_is_refused_naming_both(tool: str, world: SimpleNamespace,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    main, argv, kept = CLASS_1[tool]
    before = snapshot(kept(world))
    code, err = run(main, argv(world), capsys)
    line = error_line(err)
    assert code == 2 and ("is the input" in line or "holds the input" in line or "inside --data.root" in line), line
    assert snapshot(kept(world)) == before  # nothing was replaced, nothing was added


# --------------------------------------------------------------------------------------------
# 2. A run that did nothing
# --------------------------------------------------------------------------------------------

CLASS_2 = {  # case -> (main, argv, what the one line says)
    "gallery enroll, every image unreadable": (
        gallery.main, lambda w: ["enroll", "--ckpt_path", w.embedding, "--faces", "whole", "--images", w.unreadable,
                                 "--gallery", w.work / "new.db", "--quiet"],
        "nothing was enrolled from 2 person folder(s): 4 image(s) skipped"),
    "gallery recognize, a text file": (
        gallery.main, lambda w: ["recognize", "--gallery", w.gallery, "--ckpt_path", w.embedding, "--detector", "haar",
                                 "--source", w.notes, "--output", w.work / "r1", "--quiet"],
        "is neither an image nor a video"),
    "gallery recognize, a video without frames": (
        gallery.main, lambda w: ["recognize", "--gallery", w.gallery, "--ckpt_path", w.embedding, "--detector", "haar",
                                 "--source", w.no_frames, "--output", w.work / "r2", "--quiet"],
        "no image or frame could be read"),
    "gallery recognize --max_frames -1": (
        gallery.main, lambda w: ["recognize", "--gallery", w.gallery, "--source", w.video, "--output", w.work / "r3",
                                 "--max_frames", "-1"],
        "argument --max_frames: expected an integer >= 1"),
    "detect, a text file": (
        detect.main, lambda w: ["--ckpt_path", w.detector, "--source", w.notes, "--output", w.work / "d1", "--quiet"],
        "is neither an image nor a video"),
    "detect, a video without frames": (
        detect.main, lambda w: ["--ckpt_path", w.detector, "--source", w.no_frames, "--output", w.work / "d2", "--quiet"],
        "no image or frame could be read"),
    "detect --max_frames -1": (
        detect.main, lambda w: ["--ckpt_path", w.detector, "--source", w.video, "--output", w.work / "d3",
                                "--max_frames", "-1"],
        "argument --max_frames: expected an integer >= 1"),
    "detect, every image unreadable": (
        detect.main, lambda w: ["--ckpt_path", w.detector, "--source", w.unreadable, "--output", w.work / "d4", "--quiet"],
        "no image or frame could be read, so nothing was detected (4 unreadable)"),
    "gallery identify, every image unreadable": (
        gallery.main, lambda w: ["identify", "--ckpt_path", w.embedding, "--gallery", w.gallery, "--images", w.unreadable,
                                 "--quiet"],
        "none of the 4 image(s) could be embedded"),
    "gallery evaluate, every probe unreadable": (
        gallery.main, lambda w: ["evaluate", "--ckpt_path", w.embedding, "--gallery", w.gallery, "--known", w.unreadable,
                                 "--unknown", w.unreadable, "--quiet"],
        "person(s) not enrolled"),  # the probe people are refused first (class 6); the next case has enrolled names
    "explain, every image unreadable": (
        explain.main, lambda w: ["--config", w.face_config, "--ckpt_path", w.face, "--images", w.unreadable,
                                 "--output", w.work / "e1", "--quiet"],
        "No readable image"),
    "train, no training step": (
        train_main, lambda w: ["--config", TINY / "face_vgg.yaml", "--data.root", w.crops, "--trainer.max_epochs=0",
                               f"--trainer.default_root_dir={w.work / 'runs'}"],
        "no training step ran"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLASS_2))
def test_a_run_that_did_nothing_fails_in_one_line(case: str, world: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    main, argv, says = CLASS_2[case]
    code, err = run(main, argv(world), capsys)
    assert code == 2 and says in error_line(err), err
    assert not (world.work / "new.db").exists()  # an enrolment of nothing writes no gallery
    assert not list((world.work / "runs").rglob("*.yaml")) if (world.work / "runs").exists() else True


def test_probes_of_enrolled_people_that_are_all_unreadable_fail(world: SimpleNamespace, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    known = tmp_path / "known"
    for name in ("person_00", "person_01"):
        (known / name).mkdir(parents=True)
        (known / name / "x.png").write_bytes(b"")
    unknown = unreadable_people(tmp_path / "unknown")
    code, err = run(gallery.main, ["evaluate", "--ckpt_path", world.embedding, "--gallery", world.gallery, "--known", known,
                                   "--unknown", unknown, "--quiet"], capsys)  # fmt: skip
    assert code == 2 and "none of the probe images could be embedded, so nothing was evaluated" in error_line(err)


# --------------------------------------------------------------------------------------------
# 3. Inputs skipped without a word
# --------------------------------------------------------------------------------------------


def _loose(world: SimpleNamespace, tmp: Path) -> Path:
    people = tmp / "people_loose"
    shutil.copytree(world.open_set / "enrol", people)
    shutil.copy(next((people / "person_00").iterdir()), people / "loose.png")
    return people


def _broken_probe(world: SimpleNamespace, tmp: Path) -> Path:
    known = tmp / "known"
    shutil.copytree(world.open_set / "known", known)
    (known / "person_00" / "broken.png").write_bytes(b"xx")
    return known


CLASS_3 = {  # case -> (main, argv from (world, tmp), what stderr names)
    "gallery enroll, a loose image": (
        gallery.main, lambda w, t: ["enroll", "--ckpt_path", w.embedding, "--faces", "whole", "--images", _loose(w, t),
                                    "--gallery", t / "g.db", "--quiet"],
        ["1 image(s) beside the person folders are not read", "loose.png"]),
    "detect, an unreadable image": (
        detect.main, lambda w, t: ["--ckpt_path", w.detector, "--source", w.photos, "--output", t / "out", "--quiet"],
        ["skipped 1 unreadable image(s)", "broken.jpg"]),
    "gallery identify --output, an unreadable image": (
        gallery.main, lambda w, t: ["identify", "--ckpt_path", w.embedding, "--gallery", w.gallery, "--images",
                                    _broken_probe(w, t), "--output", t / "ids.csv", "--quiet"],
        ["skipped 1 of", "broken.png"]),
    "gallery evaluate, an unreadable probe": (
        gallery.main, lambda w, t: ["evaluate", "--ckpt_path", w.embedding, "--gallery", w.gallery, "--known",
                                    _broken_probe(w, t), "--unknown", w.open_set / "unknown", "--quiet"],
        ["skipped 1 probe image(s)", "broken.png"]),
    "gallery recognize, an unreadable image": (
        gallery.main, lambda w, t: ["recognize", "--gallery", w.gallery, "--ckpt_path", w.embedding, "--detector", "haar",
                                    "--source", w.photos, "--output", t / "rec", "--quiet"],
        ["skipped", "broken.jpg"]),
    "prepare_shards, a loose image": (
        prepare_shards.main, lambda w, t: ["--layout", "identity_folders", "--images", _loose(w, t), "--output",
                                           t / "shards", "--quiet"],
        ["not written", "loose.png"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLASS_3))
def test_every_skipped_input_is_counted_and_named(case: str, world: SimpleNamespace, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    if case.startswith("prepare_shards"):
        pytest.importorskip("litdata")
    main, argv, named = CLASS_3[case]
    code, err = run(main, argv(world, tmp_path), capsys)
    assert code == 0, err
    assert all(word in err for word in named), err


def test_evaluate_names_a_loose_image_beside_the_identity_folders(world: SimpleNamespace, tmp_path: Path) -> None:
    from facetorch import cli

    people = tmp_path / "people"
    shutil.copytree(world.people, people)
    shutil.copy(next((people / "person_00").iterdir()), people / "loose.png")
    with notices() as said:
        report = cli.evaluate(["--config", str(world.identity_config), "--ckpt_path", str(world.identity), "--data.root",
                               str(people), "--trainer.enable_progress_bar=false", "--output", str(tmp_path / "m.json")])
    assert re.search(r"entr(y|ies) not read .*loose\.png", said.text)
    assert report["num_samples"] == sum(1 for p in people.rglob("*") if p.parent != people and p.is_file())


# --------------------------------------------------------------------------------------------
# 4. Values outside their meaning
# --------------------------------------------------------------------------------------------

CLASS_4 = {  # case -> (main, argv, the flag or key, the allowed range as the message says it)
    "gallery identify --threshold -0.5": (
        gallery.main, lambda w: ["identify", "--ckpt_path", w.embedding, "--gallery", w.gallery, "--images", w.faces,
                                 "--threshold", "-0.5"], "--threshold", "in [0, 1] (a cosine similarity threshold)"),
    "gallery verify --threshold 1.5": (
        gallery.main, lambda w: ["verify", "--ckpt_path", w.embedding, "a.png", "b.png", "--threshold", "1.5"],
        "--threshold", "in [0, 1]"),
    "gallery recognize --threshold nan": (
        gallery.main, lambda w: ["recognize", "--gallery", w.gallery, "--source", w.video, "--output", w.work / "x",
                                 "--threshold", "nan"], "--threshold", "in [0, 1]"),
    "gallery enroll --open_set_fpir 2": (
        gallery.main, lambda w: ["enroll", "--images", w.faces, "--gallery", w.work / "f.db", "--open_set_fpir", "2"],
        "--open_set_fpir", "in (0, 1)"),
    "gallery enroll --count 0": (
        gallery.main, lambda w: ["enroll", "--source", w.video, "--name", "x", "--gallery", w.work / "f.db", "--count", "0"],
        "--count", "an integer >= 1"),
    "gallery recognize --upsample 40": (
        gallery.main, lambda w: ["recognize", "--gallery", w.gallery, "--source", w.video, "--output", w.work / "x",
                                 "--upsample", "40"], "--upsample", "in [0, 4]"),
    "gallery recognize --margin -1": (
        gallery.main, lambda w: ["recognize", "--gallery", w.gallery, "--source", w.video, "--output", w.work / "x",
                                 "--margin", "-1"], "--margin", "in [0, 1]"),
    "gallery split --per_person 0": (
        gallery.main, lambda w: ["split", "--images", w.faces, "--people", "2", "--per_person", "0", "--output",
                                 w.work / "s"], "--per_person", "an integer >= 1"),
    "gallery compose --scenes -4": (
        gallery.main, lambda w: ["compose", "--lfw", w.faces, "--output", w.work / "c", "--scenes", "-4"], "--scenes",
        "an integer >= 1"),
    "gallery score --iou 0": (
        gallery.main, lambda w: ["score", "--truth", w.truth, "--recognitions", w.other_set, "--iou", "0"], "--iou",
        "in (0, 1]"),
    "detect --threshold 2": (
        detect.main, lambda w: ["--ckpt_path", w.detector, "--source", w.photos, "--threshold", "2"], "--threshold",
        "in [0, 1] (a probability)"),
    "prepare_crops --margin -1": (
        prepare_crops.main, lambda w: ["--labelme", w.boxes, "--output", w.work / "c", "--margin", "-1"], "--margin",
        "in [0, 1]"),
    "prepare_crops --negatives_per_image -3": (
        prepare_crops.main, lambda w: ["--labelme", w.boxes, "--output", w.work / "c", "--negatives_per_image", "-3"],
        "--negatives_per_image", "an integer >= 0"),
    "prepare_crops --size 0": (
        prepare_crops.main, lambda w: ["--haar", w.faces, "--output", w.work / "c", "--identity_layout", "--size", "0"],
        "--size", "in [8, 4096]"),
    "prepare_crops --split 1.5,-0.5,0": (
        prepare_crops.main, lambda w: ["--labelme", w.boxes, "--output", w.work / "c", "--split", "1.5,-0.5,0"],
        "--split", "shares >= 0 summing to 1"),
    "prepare_shards --num_workers 0": (
        prepare_shards.main, lambda w: ["--layout", "identity_folders", "--images", w.people, "--output", w.work / "sh",
                                        "--num_workers", "0"], "--num_workers", "an integer >= 1"),
    "prepare_shards --chunk_bytes 12": (
        prepare_shards.main, lambda w: ["--layout", "identity_folders", "--images", w.people, "--output", w.work / "sh",
                                        "--chunk_bytes", "12"], "--chunk_bytes", "at least 1KB"),
    "benchmark --repeats -1": (
        benchmark.main, lambda w: ["--task", "scan", "--data_root", w.people, "--repeats", "-1"], "--repeats",
        "an integer >= 1"),
    "benchmark --batch_sizes 4,0": (
        benchmark.main, lambda w: ["--task", "losses", "--batch_sizes", "4,0"], "--batch_sizes", "an integer >= 1"),
    "synthetic_faces --identities 0": (
        synthetic_faces.main, lambda w: ["--output", w.work / "syn", "--identities", "0"], "--identities",
        "an integer >= 1"),
    "train --data.batch_size=0": (
        train_main, lambda w: ["--config", TINY / "face_vgg.yaml", "--data.root", w.crops, "--data.batch_size=0"],
        "data.batch_size", "an integer >= 1"),
    "train --data.val_fraction=1.5": (
        train_main, lambda w: ["--config", TINY / "face_vgg.yaml", "--data.root", w.crops, "--data.val_fraction=1.5"],
        "data.val_fraction", "in [0, 1)"),
    "train --model.init_args.lr=-1": (
        train_main, lambda w: ["--config", TINY / "face_vgg.yaml", "--data.root", w.crops, "--model.init_args.lr=-1"],
        "model.lr", "a number > 0"),
    "train --model.init_args.dropout=1": (
        train_main, lambda w: ["--config", TINY / "face_vgg.yaml", "--data.root", w.crops, "--model.init_args.dropout=1"],
        "model.dropout", "in [0, 1)"),
    "train --trainer.max_epochs=-5": (  # Lightning's own check of its trainer options, as one line too
        train_main, lambda w: ["--config", TINY / "face_vgg.yaml", "--data.root", w.crops, "--trainer.max_epochs=-5",
                               f"--trainer.default_root_dir={w.work / 'runs'}"], "max_epochs", "non-negative integer or -1"),
    "evaluate --data.num_workers=-2": (
        evaluate_main, lambda w: ["--config", w.face_config, "--ckpt_path", w.face, "--data.root", w.crops,
                                  "--data.num_workers=-2"], "data.num_workers", "an integer >= 0"),
    "export --opset 0": (
        export.main, lambda w: ["--config", w.face_config, "--ckpt_path", w.face, "--format", "onnx", "--output",
                                w.work / "o.onnx", "--opset", "0"], "--opset", "an integer >= 7"),
    "explain --data.batch_size=-1": (
        explain.main, lambda w: ["--config", w.face_config, "--ckpt_path", w.face, "--images", w.crops / "face",
                                 "--output", w.work / "ex", "--data.batch_size=-1"], "data.batch_size", "an integer >= 1"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLASS_4))
def test_a_number_outside_its_meaning_is_refused_with_its_range(case: str, world: SimpleNamespace,
                                                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    main, argv, flag, allowed = CLASS_4[case]
    code, err = run(main, argv(world), capsys)
    line = error_line(err)
    assert code == 2 and flag in line and allowed in line, line
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------------
# 5. An override that contradicts the model
# --------------------------------------------------------------------------------------------


def test_evaluating_with_another_input_size_is_named_in_one_warning(world: SimpleNamespace, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    code, err = run(evaluate_main, ["--config", world.face_config, "--ckpt_path", world.face, "--data.root", world.crops,
                                    "--data.image_size=[32,24]", "--output", tmp_path / "m.json"], capsys)  # fmt: skip
    lines = [line for line in err.splitlines() if "data.image_size" in line]
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("evaluate.py: warning: data.image_size is [32, 24], but --ckpt_path") and "[24, 16]" in lines[0]


def test_evaluating_with_other_channels_is_refused(world: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    code, err = run(evaluate_main, ["--config", world.face_config, "--ckpt_path", world.face, "--data.root", world.crops,
                                    "--data.channels=3"], capsys)  # fmt: skip
    assert code == 2 and "data.channels is 3, but --ckpt_path" in error_line(err) and "1-channel" in error_line(err)


@pytest.mark.parametrize("tool", ["export", "explain"])
def test_tools_that_take_the_checkpoints_input_say_the_override_is_not_used(tool: str, world: SimpleNamespace,
                                                                            tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    base = ["--config", world.face_config, "--ckpt_path", world.face, "--data.normalization=imagenet"]
    if tool == "export":
        code, err = run(export.main, [*base, "--format", "torchscript", "--output", tmp_path / "m.pt"], capsys)
    else:
        images = tmp_path / "one"
        images.mkdir()
        shutil.copy(sorted((world.crops / "face").iterdir())[0], images)
        code, err = run(explain.main, [*base, "--images", images, "--output", tmp_path / "ex", "--method", "gradcam",
                                       "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    assert f"{tool}.py: note: data.normalization imagenet is not used: the input" in err and "(unit)" in err


# --------------------------------------------------------------------------------------------
# 6. Evaluation sets that contradict themselves
# --------------------------------------------------------------------------------------------


def test_an_enrolled_person_among_unknown_probes_is_refused_by_name(world: SimpleNamespace, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    unknown = tmp_path / "unknown"
    shutil.copytree(world.open_set / "unknown", unknown)
    shutil.copytree(world.open_set / "known" / "person_01", unknown / "person_01")
    code, err = run(gallery.main, ["evaluate", "--ckpt_path", world.embedding, "--gallery", world.gallery, "--known",
                                   world.open_set / "known", "--unknown", unknown, "--quiet"], capsys)  # fmt: skip
    line = error_line(err)
    assert code == 2 and "1 person(s) enrolled in the gallery: person_01" in line and "--unknown" in line


def test_a_known_probe_of_someone_not_enrolled_names_the_person(world: SimpleNamespace, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    known = tmp_path / "known"
    shutil.copytree(world.open_set / "known", known)
    shutil.copytree(world.open_set / "unknown" / "person_05", known / "person_05")
    code, err = run(gallery.main, ["evaluate", "--ckpt_path", world.embedding, "--gallery", world.gallery, "--known",
                                   known, "--unknown", world.open_set / "unknown", "--quiet"], capsys)  # fmt: skip
    line = error_line(err)
    assert code == 2 and "1 person(s) not enrolled in the gallery (4 enrolled): person_05" in line


def test_recognitions_of_another_set_are_not_scored(world: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    code, err = run(gallery.main, ["score", "--truth", world.truth, "--recognitions", world.other_set], capsys)
    assert code == 2 and "share no pictures (recognised: b.png; true: a.png)" in error_line(err)


def test_an_identity_model_refuses_people_it_never_saw_and_keeps_its_labels_on_fewer(
    world: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    strangers, fewer = tmp_path / "strangers", tmp_path / "fewer"
    folders = sorted(p for p in world.people.iterdir() if p.is_dir())
    for i, folder in enumerate(folders):
        shutil.copytree(folder, strangers / f"stranger_{i}")
    for folder in folders[1::2]:
        shutil.copytree(folder, fewer / folder.name)
    base = ["--config", world.identity_config, "--ckpt_path", world.identity, "--trainer.enable_progress_bar=false"]
    code, err = run(evaluate_main, [*base, "--data.root", strangers], capsys)
    assert code == 2 and "stranger_0" in error_line(err) and "the people it was trained on" in error_line(err)
    full = run(evaluate_main, [*base, "--data.root", world.people, "--output", tmp_path / "all.json"], capsys)
    part = run(evaluate_main, [*base, "--data.root", fewer, "--output", tmp_path / "fewer.json"], capsys)
    assert full[0] == 0 and part[0] == 0, part[1]
    import json

    every, some = (json.loads((tmp_path / name).read_text()) for name in ("all.json", "fewer.json"))
    assert some["num_samples"] == sum(1 for f in fewer.rglob("*") if f.is_file()) < every["num_samples"]


# --------------------------------------------------------------------------------------------
# 7. A configuration that is not a mapping
# --------------------------------------------------------------------------------------------

NOT_A_MAPPING = {"a list": "- a\n- b\n", "a number": "3\n", "an empty file": ""}
CLASS_7 = {  # tool -> (main, argv given the config file)
    "train": (train_main, lambda w, c: ["--config", c]),
    "evaluate": (evaluate_main, lambda w, c: ["--config", c, "--data.root", w.crops]),
    "export": (export.main, lambda w, c: ["--config", c, "--format", "onnx", "--output", w.work / "o.onnx"]),
    "explain": (explain.main, lambda w, c: ["--config", c, "--ckpt_path", w.face, "--images", w.crops, "--output",
                                            w.work / "e7"]),
    "gallery verify": (gallery.main, lambda w, c: ["verify", "--config", c, "a.png", "b.png"]),
    "benchmark": (benchmark.main, lambda w, c: ["--task", "face_vgg", "--config", c, "--steps", "1"]),
    "baselines": (baselines.main, lambda w, c: ["--config", c]),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(NOT_A_MAPPING))
@pytest.mark.parametrize("tool", list(CLASS_7))
def test_a_config_that_is_not_a_mapping_is_refused_naming_the_file(
    tool: str, kind: str, world: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "not_a_mapping.yaml"
    config.write_text(NOT_A_MAPPING[kind])
    main, argv = CLASS_7[tool]
    code, err = run(main, argv(world, config), capsys)
    line = error_line(err)
    assert code == 2 and "not_a_mapping.yaml" in line and "not a mapping of sections" in line, line


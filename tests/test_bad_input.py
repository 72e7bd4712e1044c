"""Bad or unusual input: nothing is lost, nothing is silently wrong, and the error names what to fix.

Each test is one line of the README's "Bad input" section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetorch import cli
from facetorch.cli.common import run_tool
from facetorch.data.images import ImageReadError, read_image, read_image_size
from facetorch.inference.checkpoint import CheckpointError
from tests.conftest import REPO, expect_warning, notices, read_csv, write_face_crops, write_identity_folders

TINY = REPO / "tests" / "configs"


# --------------------------------------------------------------------------------------------
# Images: one reader, upright, any depth
# --------------------------------------------------------------------------------------------


def test_a_16_bit_png_keeps_its_picture(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint16)[None, :].repeat(8, axis=0) * 1000).astype(np.uint16)  # 0 .. 63000
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # Pillow reads it as a 16-bit (or 32-bit) integer image
    grey = read_image(path, 1)
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 63000 >> 8
    assert np.array_equal(grey[0], (ramp[0] >> 8).astype(np.uint8))  # a ramp, not a white image
    assert read_image(path, 3).shape == (8, 64, 3)


def test_exif_orientation_is_applied_by_every_reader(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high as stored; a bright left quarter
    stored[:, :10] = 255
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    upright = read_image(path, 3)
    assert upright.shape == (40, 20, 3) and read_image_size(path) == (20, 40)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # the bright strip is now on top


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"GIF89a", b"not an image at all"])
def test_an_unreadable_image_is_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(path, 3)


# --------------------------------------------------------------------------------------------
# Runs and metrics
# --------------------------------------------------------------------------------------------


def test_a_split_with_one_class_reports_null_auc_with_a_warning(tmp_path: Path, in_tmp: Path) -> None:
    # A class with a single image keeps it for training: the test split holds faces only.
    root = write_face_crops(tmp_path / "crops", per_class=10)
    for extra in sorted((root / "non_face").iterdir())[1:]:
        extra.unlink()
    with expect_warning(UserWarning, "AUC needs images of at least two classes"):
        report = cli.train(["--config", str(TINY / "face_vgg.yaml"), "--data.root", str(root), "--trainer.max_epochs=1",
                            "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert report["auc"] is None
    text = next(in_tmp.rglob("metrics.json")).read_text()
    assert "NaN" not in text and json.loads(text)["auc"] is None


def _face_vgg_ckpt(tmp_path: Path) -> Path:
    work = tmp_path / "train"
    work.mkdir()
    crops = write_face_crops(work / "crops")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        cli.train(["--config", str(TINY / "face_vgg.yaml"), "--data.root", str(crops), "--trainer.max_epochs=1",
                   "--trainer.enable_progress_bar=false"])  # fmt: skip
    return work / "runs" / "face_vgg_tiny" / "version_0" / "checkpoints" / "best.ckpt"


def test_a_failed_run_leaves_no_empty_run_folder(face_crops_dir: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facetorch.tasks import FaceClassifierTask

    def broken_step(self: FaceClassifierTask, batch: object, batch_idx: int) -> None:
        raise ValueError("a training step that fails at once")

    monkeypatch.setattr(FaceClassifierTask, "training_step", broken_step)
    with pytest.raises(ValueError, match="fails at once"):
        cli.train(["--config", str(TINY / "face_vgg.yaml"), "--data.root", str(face_crops_dir)])
    assert not list((in_tmp / "runs").rglob("config.yaml")) if (in_tmp / "runs").exists() else True


def test_a_checkpoint_of_another_task_is_named_by_evaluate(tmp_path: Path, identity_dir: Path) -> None:
    ckpt = _face_vgg_ckpt(tmp_path)
    with pytest.raises(CheckpointError, match="is a FaceClassifierTask checkpoint, but the config's model is IdentityTask"):
        cli.evaluate(["--config", str(TINY / "identity_tiny.yaml"), "--ckpt_path", str(ckpt), "--data.root", str(identity_dir)])


@pytest.mark.parametrize("content", [b"", b"garbage that is not a checkpoint"])
def test_a_broken_checkpoint_is_one_line_with_exit_code_2(tmp_path: Path, face_crops_dir: Path, content: bytes,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(content)
    code = run_tool("evaluate.py", cli.evaluate, ["--config", str(TINY / "face_vgg.yaml"), "--ckpt_path", str(ckpt),
                                                  "--data.root", str(face_crops_dir)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("evaluate.py: error: --ckpt_path") and "model.ckpt" in err[0]


def test_facetorch_debug_shows_the_traceback_instead_of_the_line(tmp_path: Path, face_crops_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    monkeypatch.setenv("FACETORCH_DEBUG", "1")
    with pytest.raises(CheckpointError):
        run_tool("evaluate.py", cli.evaluate, ["--config", str(TINY / "face_vgg.yaml"), "--ckpt_path", str(ckpt),
                                               "--data.root", str(face_crops_dir)])  # fmt: skip


def test_outputs_are_readable_by_others_as_the_umask_allows(tmp_path: Path) -> None:
    import os

    from facetorch import io

    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "metrics.json", {"acc": 1.0})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_output_problems_are_found_before_any_work_and_name_the_given_path(tmp_path: Path, face_crops_dir: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    folder = tmp_path / "a_folder"
    folder.mkdir()
    ckpt = _face_vgg_ckpt(tmp_path)
    capsys.readouterr()
    args = ["--config", str(TINY / "face_vgg.yaml"), "--ckpt_path", str(ckpt), "--data.root", str(face_crops_dir)]
    code = run_tool("evaluate.py", cli.evaluate, [*args, "--output", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"evaluate.py: error: --output {str(folder)!r} is a folder; expected a file name"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os_can_write(locked):  # root ignores permissions: nothing to check then
            pytest.skip("this user can write into a read-only folder")
        code = run_tool("evaluate.py", cli.evaluate, [*args, "--output", str(locked / "metrics.json")])
        assert code == 2 and "is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def os_can_write(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_pairs_with_a_classifier_config_is_refused(tmp_path: Path, face_crops_dir: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\n")
    with pytest.raises(ValueError, match="--pairs verifies face pairs with an embedding model.*FaceClassifierTask"):
        cli.evaluate(["--config", str(TINY / "face_vgg.yaml"), "--ckpt_path", str(_face_vgg_ckpt(tmp_path)),
                      "--data.root", str(face_crops_dir), "--pairs", str(pairs)])  # fmt: skip


def test_an_embedding_config_on_two_folders_says_it_found_two_identities(face_crops_dir: Path, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"found 2 identities \(face, non_face\).*split_by: identity needs enough people"):
        cli.train(["--config", str(TINY / "embedding_tiny.yaml"), "--data.root", str(face_crops_dir),
                   "--data.val_fraction=0.2", "--data.test_fraction=0.2"])  # fmt: skip


def test_pretrained_weights_that_are_not_there_are_one_line(identity_dir: Path, in_tmp: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    monkeypatch.setenv("TORCH_HOME", str(in_tmp / "empty_torch_home"))
    code = run_tool("train.py", cli.train, ["--config", str(TINY / "identity_tiny.yaml"), "--data.root", str(identity_dir),
                                            "--model.init_args.backbone=resnet18", "--model.init_args.pretrained=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("train.py: error: pretrained: true needs ImageNet weights for 'resnet18'")
    assert "Does not validate" not in err[-1]


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_detect_reports_a_zero_byte_image_in_the_csv_and_goes_on(tmp_path: Path) -> None:
    from facetorch.inference.detection import Detector
    from facetorch.recognition.detect import detect_source
    from tests.conftest import write_labelme_folder

    data = write_labelme_folder(tmp_path / "boxes")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        cli.train(["--config", str(TINY / "detector_tiny.yaml"), "--data.root", str(data), "--trainer.max_epochs=1",
                   "--trainer.enable_progress_bar=false"])  # fmt: skip
    ckpt = next(tmp_path.rglob("best.ckpt"))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a_empty.jpg").write_bytes(b"")
    (photos / "b.jpg").write_bytes((data / "p000.jpg").read_bytes())
    run = detect_source(Detector(str(ckpt)), str(photos), tmp_path / "out", progress=False)
    rows = read_csv(Path(run.csv))
    assert [Path(r["source"]).name for r in rows] == ["a_empty.jpg", "b.jpg"]
    assert "a_empty.jpg" in rows[0]["error"] and "empty" in rows[0]["error"] and rows[1]["score"] and not rows[1]["error"]
    assert run.frames == 1


def test_identity_data_writer_is_what_tests_use(tmp_path: Path) -> None:
    # The generated data the suite runs on lives in the package (benchmarks use it too).
    root = write_identity_folders(tmp_path / "ids", identities=3, per_identity=2)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["person_00", "person_01", "person_02"]


# --------------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------------


def _labelme_pair(folder: Path, stem: str, label: str = "face", image_path: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(folder / f"{stem}.jpg")
    shape = {"label": label, "points": [[2, 3], [20, 30]], "shape_type": "rectangle", "group_id": None, "flags": {}}
    data = {"version": "5.4.1", "shapes": [shape], "imagePath": image_path or f"{stem}.jpg", "imageData": None,
            "imageHeight": 40, "imageWidth": 30}  # fmt: skip
    (folder / f"{stem}.json").write_text(json.dumps(data))
    return folder


def test_a_labelme_shape_that_is_not_a_face_is_refused(tmp_path: Path) -> None:
    from facetorch.data.annotations import AnnotationError, scan_labelme_folder

    assert scan_labelme_folder(_labelme_pair(tmp_path / "ok", "a", label="Face_masked"))[0].boxes
    with pytest.raises(AnnotationError, match=r"b.json: shapes\[0\]: label 'cat' is not a face"):
        scan_labelme_folder(_labelme_pair(tmp_path / "cat", "b", label="cat"))


def test_a_labelme_json_naming_another_existing_image_is_refused(tmp_path: Path) -> None:
    from facetorch.data.annotations import AnnotationError, scan_labelme_folder

    folder = _labelme_pair(tmp_path / "boxes", "a")
    _labelme_pair(folder, "b", image_path="a.jpg")  # b.json was drawn on a.jpg
    with pytest.raises(AnnotationError, match=r"b.json: imagePath 'a.jpg' names another image.*expected 'b.jpg'"):
        scan_labelme_folder(folder)
    # A path from the machine that drew the boxes (that file is not here) is fine: LabelMe writes those.
    assert len(scan_labelme_folder(_labelme_pair(tmp_path / "elsewhere", "c", image_path="C:\\photos\\c.jpg"))) == 1


# --------------------------------------------------------------------------------------------
# Folders: split folders in any case, and a word about everything that is not read
# --------------------------------------------------------------------------------------------


def test_capitalised_val_and_test_folders_are_the_splits(tmp_path: Path) -> None:
    from facetorch.data import FaceDataModule

    for name, seed in (("Train", 0), ("Val", 1), ("TEST", 2)):
        write_face_crops(tmp_path / name, per_class=3 + seed, seed=seed)
    data = FaceDataModule(root=str(tmp_path), image_size=(16, 16))
    assert [len(data.splits[split]) for split in ("train", "val", "test")] == [6, 8, 10]


def test_two_folders_for_one_split_are_refused(tmp_path: Path) -> None:
    from facetorch.data import FaceDataModule

    for name in ("train", "val", "Val"):
        write_face_crops(tmp_path / name, per_class=2)
    with pytest.raises(ValueError, match=r"has 2 folders for the val split \(Val, val\): keep one"):
        _ = FaceDataModule(root=str(tmp_path), image_size=(16, 16)).splits


def test_nested_folders_and_other_files_in_class_folders_are_named_and_gifs_are_read(tmp_path: Path) -> None:
    from facetorch.data import FaceDataModule

    root = write_identity_folders(tmp_path / "people", identities=3, per_identity=4)
    Image.fromarray(np.full((24, 28), 90, np.uint8)).save(root / "person_00" / "anim.gif")
    (root / "person_01" / "more").mkdir()
    Image.fromarray(np.full((24, 28), 90, np.uint8)).save(root / "person_01" / "more" / "x.png")
    (root / "person_02" / "notes.txt").write_text("not an image")
    (root / "person_02" / ".DS_Store").write_text("hidden files are not data")
    data = FaceDataModule(root=str(root), layout="identity_folders", image_size=(16, 16), eval_all=True)
    with notices() as said:
        index = data.splits["test"]
    assert re.search(r"2 entries not read .*person_01/more/, person_02/notes.txt", said.text)
    assert len(index) == 13 and any(str(source).endswith("anim.gif") for source in index.sources)
    assert read_image(root / "person_00" / "anim.gif", 1).shape == (24, 28)

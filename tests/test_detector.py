"""Single-face detector: labelme layout, box-aware augmentation, losses, task, detect.py, explain, baselines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facetorch import cli
from facetorch.baselines.runs import run_baseline
from facetorch.data.annotations import AnnotationError
from facetorch.data.box_transforms import BoxAugmentation, build_box_transform
from facetorch.data.datamodule import FaceDataModule
from facetorch.data.detection import scan_labelme_index
from facetorch.explain.detector import peak_in_box
from facetorch.inference.detection import Detector
from facetorch.losses import DetectionLoss, giou_loss, original_localization
from facetorch.models.backbones import PretrainedWeightsError
from facetorch.models.detector import FaceDetector
from facetorch.recognition.detect import detect_source
from facetorch.tasks import FaceDetectorTask
from tests.conftest import REPO, read_csv, square_face_photo, write_labelme_folder

TINY = str(REPO / "tests" / "configs" / "detector_tiny.yaml")
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


# ------------------------------------------------------------------------------ layout
def test_labelme_index_sorts_corners_and_reads_negatives(labelme_dir: Path) -> None:
    index = scan_labelme_index(labelme_dir)
    assert len(index) == 19 and index.labels == [1] * 16 + [0] * 3
    assert index.boxes[16:] == [None, None, None]  # no JSON file, then JSONs without shapes
    data = json.loads((labelme_dir / "p001.json").read_text())
    (xa, ya), (xb, yb) = data["shapes"][0]["points"]
    assert xa > xb and ya > yb  # stored in reverse drag order
    assert index.boxes[1] == (xb, yb, xa, ya)
    assert index.normalized_boxes()[1] == pytest.approx([xb / 64, yb / 48, xa / 64, ya / 48])


def _rewrite(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "case, expected",
    [
        ("two_faces", "expected at most 1 face"),
        ("polygon", "expected shape_type 'rectangle'"),
        ("outside", "expected inside the 64x48 image"),
        ("zero_area", "expected a box with positive area"),
        ("malformed", "malformed JSON"),
        ("size", "expected image size 99x48"),
    ],
)
def test_bad_annotations_name_the_file(labelme_dir: Path, case: str, expected: str) -> None:
    path = labelme_dir / "p002.json"
    shape = json.loads(path.read_text())["shapes"][0]
    if case == "two_faces":
        _rewrite(path, shapes=[shape, shape])
    elif case == "polygon":
        _rewrite(path, shapes=[{**shape, "shape_type": "polygon"}])
    elif case == "outside":
        _rewrite(path, shapes=[{**shape, "points": [[10, 10], [80, 20]]}])
    elif case == "zero_area":
        _rewrite(path, shapes=[{**shape, "points": [[10, 10], [10, 20]]}])
    elif case == "malformed":
        path.write_text("{not json")
    else:
        _rewrite(path, imageWidth=99)
    data = FaceDataModule(root=str(labelme_dir), layout="labelme", image_size=(32, 32), channels=3)
    with pytest.raises(AnnotationError, match=expected) as error:
        _ = data.splits
    assert "p002.json" in str(error.value)


def test_datamodule_batches_and_seeded_split(labelme_dir: Path) -> None:
    data = FaceDataModule(root=str(labelme_dir), layout="labelme", image_size=(32, 32), channels=3, batch_size=4,
                          val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    again = FaceDataModule(root=str(labelme_dir), layout="labelme", image_size=(32, 32), channels=3,
                           val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    assert [list(map(str, data.splits[s].sources)) for s in ("train", "val", "test")] == [
        list(map(str, again.splits[s].sources)) for s in ("train", "val", "test")
    ]
    assert data.class_names == ["no_face", "face"] and data.num_classes == 2
    assert 0 in data.splits["test"].labels or 0 in data.splits["val"].labels or 0 in data.splits["train"].labels
    data.setup("test")
    images, target = next(iter(data.test_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    assert target["label"].dtype == torch.float32 and target["box"].shape == (4, 2 * 2)
    assert ((target["box"] >= 0) & (target["box"] <= 1)).all()


def test_split_folders(tmp_path: Path) -> None:
    write_labelme_folder(tmp_path / "split" / "train", count=8, negatives=2, seed=1)
    write_labelme_folder(tmp_path / "split" / "test", count=3, negatives=1, seed=2)
    data = FaceDataModule(root=str(tmp_path / "split"), layout="labelme", image_size=(32, 32), channels=3)
    assert len(data.splits["test"]) == 4 and len(data.splits["train"]) + len(data.splits["val"]) == 10


# ------------------------------------------------------------------------------ augmentation
def _bright_box(image: torch.Tensor) -> tuple[float, float, float, float] | None:
    """Normalised box around the bright "face" pixels of a transformed image, or None."""
    bright = ((image[0] * 0.5 + 0.5) > 0.7).numpy()
    ys, xs = np.nonzero(bright)
    if len(xs) < 4:
        return None
    h, w = bright.shape
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


def test_augmentation_keeps_the_box_on_the_face() -> None:
    rng = np.random.default_rng(0)
    box = (70, 30, 130, 90)
    photo = square_face_photo(rng, (120, 160), box)
    augmentation = BoxAugmentation(negative_p=0.3, color_p=0.0, gamma_p=0.0, rgb_shift_p=0.0)
    transform = build_box_transform((64, 64), MEAN, STD, augmentation)
    torch.manual_seed(0)
    positives = negatives = 0
    for _ in range(60):
        image, target = transform(photo, [box])
        seen = _bright_box(image)
        if target["label"] == 1:
            positives += 1
            assert seen is not None
            assert np.abs(np.asarray(seen) - target["box"].numpy()).max() < 2.5 / 64  # box and face agree
        else:
            negatives += 1
            assert target["box"].tolist() == [0.0] * 4
            # At most a sliver of the face stays, cut off by the crop's border.
            assert seen is None or min(seen[0], seen[1]) == 0.0 or max(seen[2], seen[3]) == 1.0
    assert positives > 20 and negatives > 5


def test_eval_transform_normalises_the_box_exactly() -> None:
    photo = square_face_photo(np.random.default_rng(1), (100, 200), (20, 10, 60, 50))
    image, target = build_box_transform((50, 80), MEAN, STD)(photo, [(20.0, 10.0, 60.0, 50.0)])
    assert image.shape == (3, 50, 80) and target["label"] == 1
    assert target["box"].tolist() == pytest.approx([0.1, 0.1, 0.3, 0.5])
    _, empty = build_box_transform((50, 80), MEAN, STD)(photo, [])
    assert empty["label"] == 0 and empty["box"].tolist() == [0.0] * 4


# ------------------------------------------------------------------------------ losses
def test_localisation_loss_is_masked_for_negatives() -> None:
    pred = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.9, 0.9, 0.95, 0.95]], requires_grad=True)
    truth = torch.tensor([[0.1, 0.2, 0.5, 0.6], [float("nan")] * 4])  # a negative's box is meaningless
    logits = torch.tensor([2.0, -2.0])
    labels = torch.tensor([1.0, 0.0])
    loss = DetectionLoss("original", box_weight=1.0, cls_weight=0.5)
    total = loss(logits, pred, labels, truth)
    assert torch.isfinite(total)
    assert loss.last["box_loss"].item() == pytest.approx(0.1**2)  # y1 off by 0.1; size exact
    (grad,) = torch.autograd.grad(total, pred)
    assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert total.item() == pytest.approx(0.01 + 0.5 * bce.item())


def test_box_losses_agree_on_a_perfect_box() -> None:
    box = torch.tensor([[0.2, 0.3, 0.6, 0.9]])
    assert original_localization(box, box).item() == 0.0
    assert giou_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)
    assert giou_loss(box[:, [2, 3, 0, 1]], box).item() == pytest.approx(0.0, abs=1e-6)  # swapped corners
    for name in ("original", "giou", "smooth_l1"):
        loss = DetectionLoss(name)
        assert loss(torch.tensor([5.0]), box, torch.tensor([1.0]), box).item() < 0.01


# ------------------------------------------------------------------------------ model
def test_detector_outputs_and_cam_layer() -> None:
    model = FaceDetector("tiny", in_channels=3, hidden=8, pool_grid=2)
    logit, boxes = model(torch.randn(2, 3, 32, 32))
    assert logit.shape == (2, 1) and boxes.shape == (2, 4) and ((boxes > 0) & (boxes < 1)).all()
    assert model.cam_layer in dict(model.named_modules())
    narrow = FaceDetector("vgg16_bn", in_channels=1, width=0.125, hidden=8)
    assert narrow(torch.randn(1, 1, 32, 32))[1].shape == (1, 4)


def test_pretrained_weights_fail_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match="vgg16-397923af.pth' does not exist and torchvision could not download it"):
        FaceDetector("vgg16", pretrained=True)  # conftest refuses the connection: offline


# ------------------------------------------------------------------------------ training, detect, explain
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny training run through the real CLI, shared by the tests below."""
    root = tmp_path_factory.mktemp("detector")
    data = write_labelme_folder(root / "boxes", count=16, negatives=4)
    work = root / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        report = cli.train(["--config", TINY, "--data.root", str(data)])
    run = work / "runs" / "detector_tiny" / "version_0"
    return {"data": data, "run": run, "ckpt": run / "checkpoints" / "best.ckpt", "report": report}  # type: ignore[dict-item]


def test_training_writes_metrics_and_detection_grid(trained: dict) -> None:
    run = trained["run"]
    for name in ("config.yaml", "metrics.json", "detections.png", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == trained["report"]
    assert {"cls_acc", "mean_iou", "ap50", "iou50_rate", "num_samples"} <= set(metrics)
    assert metrics["num_samples"] == 4 and 0.0 <= metrics["mean_iou"] <= 1.0


def test_evaluate_on_another_folder(trained: dict, tmp_path: Path) -> None:
    other = write_labelme_folder(tmp_path / "other", count=4, negatives=1, seed=7)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        report = cli.evaluate(["--config", TINY, "--ckpt_path", str(trained["ckpt"]), "--data.root", str(other),
                               "--trainer.logger=false"])  # fmt: skip
    assert report["num_samples"] == 5 and {"cls_acc", "mean_iou", "ap50"} <= set(report)


def test_predict_csv_gives_boxes_in_the_photo_pixels_as_detect_does(trained: dict, tmp_path: Path) -> None:
    photos = sorted(p for p in trained["data"].iterdir() if p.suffix != ".json")[:3]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        for photo in photos:
            shutil.copy(photo, tmp_path / photo.name)
        cli.main(["predict", "--config", TINY, "--ckpt_path", str(trained["ckpt"]), "--data.root", str(trained["data"]),
                  "--data.predict_dir", str(tmp_path), "--model.init_args.score_threshold=0.001"])  # fmt: skip
        detect_source(Detector(trained["ckpt"], threshold=0.001), str(tmp_path / photos[0].name), tmp_path / "detected")
    rows = {Path(r["file"]).name: r for r in read_csv(next(tmp_path.rglob("predictions.csv")))}
    detected = read_csv(tmp_path / "detected" / "detections.csv")[0]
    for key in ("x1", "y1", "x2", "y2"):  # the same photo, the same box, in pixels
        assert float(rows[photos[0].name][key]) == pytest.approx(float(detected[key]), abs=0.6)


def _write_video(path: Path, fourcc: str, frames: int = 12) -> None:
    rng = np.random.default_rng(3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        box = (10 + i, 8, 34 + i, 32) if i < frames // 2 else None  # a face, then an empty scene
        writer.write(cv2.cvtColor(square_face_photo(rng, (48, 64), box), cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.mark.parametrize("fourcc, suffix", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_detect_turns_a_video_into_an_annotated_video_and_csv(trained: dict, tmp_path: Path, fourcc: str, suffix: str) -> None:
    video = tmp_path / f"clip{suffix}"
    _write_video(video, fourcc)
    detector = Detector(trained["ckpt"], threshold=0.5, device="cpu")
    run = detect_source(detector, str(video), tmp_path / "out", fourcc=fourcc)
    assert run.frames == 12 and run.fps > 0 and not run.stopped_early
    annotated = cv2.VideoCapture(run.output)
    count = 0
    while annotated.read()[0]:
        count += 1
    assert count == 12 and Path(run.output).suffix == suffix
    rows = read_csv(run.csv)
    assert [int(r["frame"]) for r in rows] == list(range(12))
    for row in rows:  # a face row has a box, a no-face row has none
        assert (row["x1"] != "") == (row["face"] == "1")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no partial files left
    with pytest.raises(FileExistsError, match="--overwrite"):
        detect_source(detector, str(video), tmp_path / "out")


def test_detect_threshold_decides_faces(trained: dict, tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    _write_video(video, "MJPG", frames=6)
    never = detect_source(Detector(trained["ckpt"], threshold=0.999999), str(video), tmp_path / "never")
    assert never.faces <= 6
    rows = read_csv(never.csv)
    assert all((float(r["score"]) >= 0.999999) == (r["face"] == "1") for r in rows)


@pytest.mark.slow
def test_detect_images_folder_via_the_tool(trained: dict, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("p000.jpg", "p017.jpg"):
        shutil.copy(trained["data"] / name, images / name)
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "detect.py"), "--ckpt_path", str(trained["ckpt"]), "--source", str(images),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["detections.csv", "p000_jpg.png", "p017_jpg.png"]


@pytest.mark.slow
def test_detect_stops_cleanly_on_sigint(trained: dict, tmp_path: Path) -> None:
    video = tmp_path / "long.avi"
    _write_video(video, "MJPG", frames=400)
    process = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, facetorch.inference.detection as d, facetorch.cli.detect as tool\n"
         "orig = d.Detector.__call__\n"
         "def slow(self, frame):\n    time.sleep(0.02)\n    return orig(self, frame)\n"
         "d.Detector.__call__ = slow\n"
         "print('ready', flush=True)\n"
         "tool.main(sys.argv[1:])",
         "--ckpt_path", str(trained["ckpt"]), "--source", str(video), "--output", str(tmp_path / "out"), "--fourcc", "MJPG"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert process.stdout.readline().strip() == "ready"
    deadline = 0
    while not (tmp_path / "out").is_dir() and deadline < 200:  # the loop has started once the folder exists
        deadline += 1
        subprocess.run(["sleep", "0.05"])
    subprocess.run(["sleep", "0.5"])
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped_early"] and 0 < summary["frames"] < 400
    rows = read_csv(tmp_path / "out" / "detections.csv")
    assert len(rows) == summary["frames"]
    capture = cv2.VideoCapture(summary["output"])
    assert capture.isOpened() and capture.read()[0]


def test_explain_detector_and_peak_in_box(trained: dict, tmp_path: Path) -> None:
    from facetorch.cli.explain import explain

    written = explain(["--config", TINY, "--ckpt_path", str(trained["ckpt"]), "--data.root", str(trained["data"]),
                       "--images", str(trained["data"] / "p000.jpg"), "--output", str(tmp_path / "cam"),
                       "--method", "gradcam", "--target", "x2", "--peak_in_box"])  # fmt: skip
    assert (tmp_path / "cam" / "p000_gradcam_overlay.png") in written
    report = json.loads((tmp_path / "cam" / "peak_in_box.json").read_text())
    assert set(report) == {"peak_in_box_rate", "mass_in_box", "box_area_share", "num_samples"}
    assert 0.0 <= report["peak_in_box_rate"] <= 1.0 and 0.0 <= report["mass_in_box"] <= 1.0


def test_detector_explain_targets() -> None:
    task = FaceDetectorTask(backbone="tiny", hidden=8)
    assert task.explain_target(None).part == "score" and task.explain_target("y2").part == "y2"
    with pytest.raises(ValueError, match="--target for the detector"):
        task.explain_target("face_logit")
    assert task.cam_layer in dict(task.named_modules())


def test_peak_in_box_counts_peak_and_mass() -> None:
    heat = torch.zeros(2, 10, 10)
    heat[0, 2, 3] = 1.0  # inside the box below
    heat[1, 9, 9] = 1.0  # outside
    heat[1, 2, 2] = 0.5
    boxes = torch.tensor([[0.2, 0.1, 0.5, 0.4]] * 2)
    hit, mass, area = peak_in_box(heat, boxes)
    assert hit.tolist() == [True, False]
    assert mass.tolist() == pytest.approx([1.0, 0.5 / 1.5])
    assert area.tolist() == pytest.approx([0.09, 0.09])


# ------------------------------------------------------------------------------ baselines
def test_detection_baselines_use_the_model_split(labelme_dir: Path) -> None:
    data = FaceDataModule(root=str(labelme_dir), layout="labelme", image_size=(32, 32), channels=3,
                          val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    for method in ("haar", "mean_box"):
        report = run_baseline(method, data)
        assert report["method"] == method and report["num_samples"] == len(data.splits["test"])
        assert {"cls_acc", "mean_iou", "iou50_rate", "ap50"} <= set(report)
    mean_box = run_baseline("mean_box", data)
    assert mean_box["cls_acc"] == pytest.approx(np.mean(np.asarray(data.splits["test"].labels) == 1))


def test_benchmark_detector_setup(labelme_dir: Path) -> None:
    from facetorch.bench.training import run

    tiny = str(Path(__file__).parent / "configs" / "detector_tiny.yaml")  # the benchmark's plumbing, not VGG16's speed
    result = run("detector", batch_size=4, steps=3, warmup=1, repeats=1, data_root=str(labelme_dir), config=tiny)
    assert result["task"] == "detector" and result["inference_batch1_fps"] > 0
    assert result["plain_fp32_img_s"] > 0 and result["trainer_bf16_channels_last_img_s"] > 0

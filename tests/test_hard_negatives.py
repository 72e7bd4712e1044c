"""Face / non-face data recipe: hard negatives, hand-shaped Haar boxes, folds by photo, crop augmentations."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from facetorch.cli.common import run_tool
from facetorch.cli.prepare_crops import prepare_crops
from facetorch.data.annotations import FaceAnnotation
from facetorch.data.crops import fold_by_image, write_crops
from facetorch.data.face_variants import draw_mask, jittered_boxes
from facetorch.data.haar import HAND_BOX, haar_to_hand_box
from facetorch.data.synthetic import write_labelme_folder
from facetorch.data.transforms import Augmentation, InputSpec
from facetorch.evaluation import box_iou
from facetorch.inference.checkpoint import CheckpointError
from facetorch.inference.hard_negatives import HardNegativeMiner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def face_ckpt(tiny_checkpoints: dict[str, tuple[Path, Path]]) -> Path:
    """A tiny face / non-face checkpoint (the session's one epoch of tests/configs/face_vgg.yaml on generated crops)."""
    return tiny_checkpoints["face_vgg.yaml"][0]


@pytest.fixture
def tool() -> SimpleNamespace:
    return SimpleNamespace(main=lambda argv: run_tool("prepare_crops.py", prepare_crops, argv))


def photos(root: Path, count: int = 9) -> Path:
    return write_labelme_folder(root, count=count, negatives=0)


def stems(folder: Path) -> set[str]:
    return {p.name.split("_")[0] for p in folder.rglob("*.png")}


# ---------------------------------------------------------------------------------------------- the miner


class Always:
    """A stand-in model score: every window is a face (p), so every window is a hard negative."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        return np.full(len(crops), self.p)


def test_miner_keeps_the_highest_scores_away_from_faces_up_to_the_cap(face_ckpt):
    miner = HardNegativeMiner(face_ckpt, per_image=3, windows=40, threshold=0.0)
    image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    face = (30.0, 30.0, 60.0, 70.0)
    boxes = miner.mine(image, [face], np.random.default_rng(1))
    assert 1 <= len(boxes) <= 3
    assert box_iou(boxes, [face]).max() <= 0.1
    assert len(boxes) == 1 or box_iou(boxes, boxes)[~np.eye(len(boxes), dtype=bool)].max() <= 0.5  # no duplicates
    # The kept windows are the best-scoring ones, in order.
    scores = miner.face_probabilities([image[round(b[1]) : round(b[3]), round(b[0]) : round(b[2])] for b in boxes])
    assert np.all(np.diff(scores) <= 1e-6)


def test_miner_threshold_one_keeps_nothing_and_probabilities_are_probabilities(face_ckpt):
    miner = HardNegativeMiner(face_ckpt, windows=10, threshold=1.0)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (40, 30), dtype=np.uint8), rng.integers(0, 256, (50, 20, 3), dtype=np.uint8)]
    probs = miner.face_probabilities(crops)
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))
    image = rng.integers(0, 256, (120, 90), dtype=np.uint8)
    assert miner.mine(image, [], np.random.default_rng(1)) == [] or np.all(probs == 1.0)


def test_miner_avoids_the_faces_its_finder_sees(face_ckpt):
    image = np.zeros((120, 90), dtype=np.uint8)
    tiny = SimpleNamespace(detect=lambda image: np.array([[40, 50, 44, 54]], dtype=np.float32))  # a bystander's face
    miner = HardNegativeMiner(face_ckpt, per_image=50, windows=200, threshold=0.0, face_finder=tiny)
    kept = miner.mine(image, [], np.random.default_rng(0))
    assert kept and all(not (b[0] <= 42 <= b[2] and b[1] <= 52 <= b[3]) for b in kept)  # none holds most of it
    everywhere = SimpleNamespace(detect=lambda image: np.array([[0, 0, 4, 4], [0, 0, 90, 120]], dtype=np.float32))
    miner.face_finder = everywhere  # a window inside a face still is a negative; one holding a whole face is not
    kept = miner.mine(image, [], np.random.default_rng(0))
    assert kept and all(b[0] > 2 or b[1] > 2 for b in kept)


def test_write_crops_adds_hard_negatives_without_changing_the_random_ones(tmp_path):
    image = tmp_path / "p.png"
    import cv2

    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    ann = [FaceAnnotation(image, 90, 120, [(30.0, 30.0, 60.0, 70.0)])]
    plain = write_crops(ann, tmp_path / "plain", progress=False)
    seen = []

    def miner(img, annotation, rng):
        seen.append((img.shape, list(annotation.boxes)))
        return [(0.0, 0.0, 20.0, 30.0), (60.0, 80.0, 90.0, 120.0)]

    mined = write_crops(ann, tmp_path / "mined", progress=False, miner=miner)
    assert seen == [((120, 90, 3), [(30.0, 30.0, 60.0, 70.0)])]
    assert (mined.negatives, mined.hard_negatives) == (plain.negatives + 2, 2)
    assert "2 of them hard negatives" in str(mined)
    hard = sorted(p.name for p in (tmp_path / "mined" / "non_face").glob("*_hard*.png"))
    assert hard == ["p_hard0.png", "p_hard1.png"]
    for p in (tmp_path / "plain" / "non_face").iterdir():  # the random negatives are the same files
        assert (tmp_path / "mined" / "non_face" / p.name).read_bytes() == p.read_bytes()


def test_tool_mines_train_only(tool, tmp_path, face_ckpt, capsys):
    boxes = photos(tmp_path / "boxes", count=12)
    code = tool.main(["--labelme", str(boxes), "--output", str(tmp_path / "out"), "--split", "0.5,0.25,0.25",
                      "--hard_negatives_from", str(face_ckpt), "--hard_negative_threshold", "0",
                      "--hard_negatives_per_image", "2", "--quiet"])  # fmt: skip
    assert code == 0
    assert list((tmp_path / "out" / "train" / "non_face").glob("*_hard*.png"))
    assert not list((tmp_path / "out").glob("val/non_face/*_hard*.png"))
    assert not list((tmp_path / "out").glob("test/non_face/*_hard*.png"))
    assert "hard negatives" in capsys.readouterr().out


def test_tool_refuses_a_checkpoint_of_another_kind_in_one_line(tool, tmp_path, face_ckpt, capsys):
    boxes = photos(tmp_path / "boxes", count=3)
    checkpoint = torch.load(face_ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["class_names"] = ["cat", "dog"]
    other = tmp_path / "cats.ckpt"
    torch.save(checkpoint, other)
    for bad, expected in [(other, "expected a face / non-face model"), (tmp_path / "missing.ckpt", "does not exist"),
                          (sorted(boxes.glob("*.json"))[0], "not a readable facetorch checkpoint")]:  # fmt: skip
        capsys.readouterr()
        code = tool.main(["--labelme", str(boxes), "--output", str(tmp_path / "out"), "--hard_negatives_from", str(bad)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err and "--hard_negatives_from" in err, err
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_miner_refuses_a_bad_checkpoint_as_a_checkpoint_error(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="--hard_negatives_from"):
        HardNegativeMiner(bad)


# ---------------------------------------------------------------------------------------------- hand boxes


def test_haar_to_hand_box_is_taller_narrower_lower_and_clipped():
    x1, y1, x2, y2 = haar_to_hand_box((100.0, 100.0, 200.0, 200.0), 1000, 1000)
    assert (x2 - x1, y2 - y1) == pytest.approx((100 * HAND_BOX[0], 100 * HAND_BOX[1]))
    assert (y1 + y2) / 2 == pytest.approx(150 + 100 * HAND_BOX[2])
    assert (x1 + x2) / 2 == pytest.approx(150)
    assert haar_to_hand_box((0.0, 0.0, 90.0, 90.0), 90, 92) == pytest.approx((9.0, 0.0, 81.0, 92.0))


def test_tool_haar_box_hand_changes_the_face_crop_shape(tool, tmp_path, monkeypatch):
    import cv2

    people = tmp_path / "people" / "anna"
    people.mkdir(parents=True)
    cv2.imwrite(str(people / "a.png"), np.full((120, 120, 3), 128, np.uint8))
    from facetorch.data import haar

    monkeypatch.setattr(haar.HaarFaceDetector, "largest", lambda self, image: (30.0, 30.0, 80.0, 80.0))
    shapes = {}
    for shape in ("haar", "hand"):
        out = tmp_path / shape
        assert tool.main(["--haar", str(tmp_path / "people"), "--output", str(out), "--haar_box", shape, "--quiet"]) == 0
        shapes[shape] = cv2.imread(str(next((out / "face").glob("*.png")))).shape[:2]
    assert shapes == {"haar": (50, 50), "hand": (54, 40)}


# ---------------------------------------------------------------------------------------------- folds


def test_fold_by_image_holds_every_photo_out_once():
    anns = [FaceAnnotation(Path(f"p{i}.jpg"), 10, 10, []) for i in range(10)]
    held = []
    for fold in range(3):
        rest, out = fold_by_image(anns, 3, fold, seed=4)
        assert len(rest) + len(out) == 10 and not {a.image_path for a in rest} & {a.image_path for a in out}
        held += [a.image_path for a in out]
    assert sorted(held) == sorted(a.image_path for a in anns)
    assert fold_by_image(anns, 3, 1, seed=4) == fold_by_image(anns, 3, 1, seed=4)
    with pytest.raises(ValueError, match="fold 3 of 3"):
        fold_by_image(anns, 3, 3)
    with pytest.raises(ValueError, match="at least 20 annotated photos"):
        fold_by_image(anns, 20, 0)


def test_tool_test_fold_tests_on_held_out_annotated_photos_only(tool, tmp_path):
    boxes = photos(tmp_path / "boxes", count=9)
    held = set()
    for fold in range(3):
        out = tmp_path / f"fold{fold}"
        argv = ["--labelme", str(boxes), "--output", str(out), "--split", "0.75,0.25,0", "--test_fold", f"{fold}/3", "--quiet"]
        assert tool.main(argv) == 0
        test, train = stems(out / "test"), stems(out / "train") | stems(out / "val")
        assert len(test) == 3 and not test & train and len(train) == 6
        held |= test
    assert len(held) == 9


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--test_fold", "3/3", "--split", "0.8,0.2,0"], "expected --test_fold I/K"),
        (["--test_fold", "a/b", "--split", "0.8,0.2,0"], "expected --test_fold I/K"),
        (["--test_fold", "0/3"], "give --split TRAIN,VAL,0"),
        (["--test_fold", "0/3", "--split", "0.7,0.15,0.15"], "give --split TRAIN,VAL,0"),
    ],
)
def test_tool_test_fold_bad_input_is_one_line(tool, tmp_path, capsys, argv, expected):
    boxes = photos(tmp_path / "boxes", count=3)
    assert tool.main(["--labelme", str(boxes), "--output", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_tool_missing_folder_is_one_line(tool, tmp_path, capsys):
    assert tool.main(["--haar", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err and "expected a folder" in err, err


# ---------------------------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("channels", [1, 3])
def test_photo_quality_augmentations_change_the_image_and_keep_its_shape(channels):
    spec = InputSpec((40, 30), channels)
    shape = (60, 45) if channels == 1 else (60, 45, 3)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    plain = spec.transform(Augmentation(hflip=0, color_p=0, affine_p=0))(image)
    for name in ("blur", "downscale", "jpeg") + (("grey",) if channels == 3 else ()):
        off = dict(hflip=0, color_p=0, affine_p=0)
        changed = spec.transform(Augmentation(**off, **{name: 1.0}))(image)
        assert changed.shape == plain.shape == (channels, 40, 30)
        assert not torch.equal(changed, plain), name
    grey = spec.transform(Augmentation(hflip=0, color_p=0, affine_p=0, grey=1.0))(image)
    if channels == 3:
        assert torch.allclose(grey[0], grey[1], atol=1e-2) and torch.allclose(grey[1], grey[2], atol=1e-2)


def test_face_vgg_config_turns_the_crop_augmentations_on():
    import yaml

    augmentation = yaml.safe_load((REPO / "configs" / "face_vgg.yaml").read_text())["data"]["augmentation"]
    assert all(augmentation[name] > 0 for name in ("blur", "downscale", "jpeg", "scale"))


def test_augmentation_refuses_a_probability_out_of_range_naming_it():
    with pytest.raises(ValueError, match=r"data.augmentation.jpeg must be a probability in \[0, 1\], got 1.5"):
        Augmentation(jpeg=1.5)


def test_miner_mines_only_its_photos(face_ckpt, tmp_path):
    miner = HardNegativeMiner(face_ckpt, windows=10, threshold=0.0, photos={tmp_path / "a.jpg"})
    image = np.random.default_rng(0).integers(0, 256, (120, 90), dtype=np.uint8)
    face = [(30.0, 30.0, 60.0, 70.0)]
    assert miner(image, FaceAnnotation(tmp_path / "b.jpg", 90, 120, face), np.random.default_rng(0)) == []
    assert miner(image, FaceAnnotation(tmp_path / "a.jpg", 90, 120, face), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- more faces


def test_jittered_boxes_stay_near_the_face_and_inside_the_image():
    boxes = jittered_boxes((20.0, 30.0, 60.0, 90.0), 50, 70, 100, np.random.default_rng(0))
    assert len(boxes) == 50 and len(set(boxes)) == 50
    b = np.array(boxes)
    assert b[:, 0].min() >= 0 and b[:, 2].max() <= 70 and b[:, 3].max() <= 100
    assert box_iou(boxes, [(20.0, 30.0, 60.0, 90.0)]).min() > 0.6


@pytest.mark.parametrize("shape", [(120, 80), (120, 80, 3)])
def test_draw_mask_covers_the_lower_face_only(shape):
    crop = np.zeros(shape, np.uint8)  # every mask colour is lighter than black
    masked = draw_mask(crop, np.random.default_rng(1))
    assert masked.shape == crop.shape and masked.dtype == np.uint8
    changed = masked.reshape(120, 80, -1).max(axis=2) > 5
    assert not changed[:40].any() and changed[80:100, 20:60].all()
    with pytest.raises(ValueError, match="expected a uint8 grey or BGR face crop"):
        draw_mask(crop.astype(np.float32), np.random.default_rng(1))


def test_tool_face_copies_and_masks_go_to_train_only(tool, tmp_path):
    import cv2

    boxes = photos(tmp_path / "boxes", count=6)
    people = tmp_path / "people" / "anna"
    people.mkdir(parents=True)
    for k in range(4):
        cv2.imwrite(str(people / f"a{k}.png"), np.full((120, 120, 3), 60 + 40 * k, np.uint8))
    from facetorch.data import haar

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(haar.HaarFaceDetector, "largest", lambda self, image: (30.0, 30.0, 80.0, 80.0))
        argv = ["--labelme", str(boxes), "--haar", str(tmp_path / "people"), "--output", str(tmp_path / "out"),
                "--face_copies", "3", "--synthetic_masks", "1", "--split", "0.5,0.5,0", "--test_fold", "0/3",
                "--quiet"]  # fmt: skip
        assert tool.main(argv) == 0
    out = tmp_path / "out"
    train = sorted(p.name for p in (out / "train" / "face").glob("*_x*.png"))
    copies = [n for n in train if n.startswith("p")]
    masked = [n for n in train if n.startswith("a")]
    trained_photos = {n.split("_")[0] for n in copies}
    assert copies and len(copies) == 3 * len(trained_photos)
    assert all(n.endswith("_face0_x0.png") for n in masked)  # one masked copy per Haar face (share 1)
    assert not list(out.glob("val/face/*_x*.png")) and not list(out.glob("test/face/*_x*.png"))


def test_tool_mining_without_annotated_photos_is_refused_in_one_line(tool, tmp_path, face_ckpt, capsys):
    (tmp_path / "people" / "anna").mkdir(parents=True)
    argv = ["--haar", str(tmp_path / "people"), "--output", str(tmp_path / "out"), "--hard_negatives_from", str(face_ckpt)]
    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--hard_negatives_on all" in err.splitlines()[-1], err

"""FaceDataModule: layouts, splits, transforms and the errors a user sees on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetorch.data import Augmentation, FaceDataModule
from facetorch.data.images import ImageReadError, decode_image, read_image
from facetorch.data.splits import identity_split, stratified_split
from tests.conftest import write_face_crops


def test_builtin_source_is_lfw_subset_faces_and_non_faces() -> None:
    data = FaceDataModule(image_size=(40, 32), batch_size=16)
    assert data.class_names == ["non_face", "face"]
    sizes = {name: len(index) for name, index in data.splits.items()}
    assert sizes == {"train": 140, "val": 30, "test": 30}
    for index in data.splits.values():  # stratified: both classes in equal share
        assert sum(index.labels) * 2 == len(index.labels)
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (16, 1, 40, 32) and images.dtype == torch.float32
    assert -1.0 <= images.min() and images.max() <= 1.0
    assert set(labels.tolist()) <= {0, 1}


def test_face_crops_split_is_seeded_stratified_and_disjoint(face_crops_dir: Path) -> None:
    first = FaceDataModule(root=str(face_crops_dir), val_fraction=0.25, test_fraction=0.25, seed=3).splits
    again = FaceDataModule(root=str(face_crops_dir), val_fraction=0.25, test_fraction=0.25, seed=3).splits
    other = FaceDataModule(root=str(face_crops_dir), val_fraction=0.25, test_fraction=0.25, seed=4).splits
    assert [first[s].sources for s in first] == [again[s].sources for s in again]
    assert first["test"].sources != other["test"].sources
    seen = [set(map(str, first[s].sources)) for s in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(map(len, seen)) == 24
    for name in ("val", "test"):
        assert sorted(first[name].labels) == [0, 0, 0, 1, 1, 1]


def test_rgb_and_greyscale_resize_to_configured_size(face_crops_dir: Path) -> None:
    for channels in (1, 3):
        data = FaceDataModule(root=str(face_crops_dir), image_size=(36, 24), channels=channels, batch_size=4)
        data.setup("test")
        images, _ = next(iter(data.test_dataloader()))
        assert images.shape == (4, channels, 36, 24)


def test_eval_transform_is_deterministic_and_train_transform_augments(face_crops_dir: Path) -> None:
    data = FaceDataModule(root=str(face_crops_dir), image_size=(30, 20),
                          augmentation=Augmentation(hflip=1.0, affine_p=1.0, color_p=1.0))
    image = read_image(face_crops_dir / "face" / "f000.png", 1)
    eval_tf, train_tf = data.transform(train=False), data.transform(train=True)
    assert torch.equal(eval_tf(image), eval_tf(image))
    assert not torch.equal(train_tf(image), train_tf(image))


def test_split_folders_are_used_as_given(tmp_path: Path) -> None:
    for split, n in (("train", 8), ("val", 3), ("test", 2)):
        write_face_crops(tmp_path / "root" / split, per_class=n, seed=n)
    splits = FaceDataModule(root=str(tmp_path / "root")).splits
    assert {name: len(index) for name, index in splits.items()} == {"train": 16, "val": 6, "test": 4}


def test_eval_all_puts_every_image_in_test(face_crops_dir: Path) -> None:
    data = FaceDataModule(root=str(face_crops_dir), eval_all=True)
    assert len(data.splits["test"]) == 24 and len(data.splits["train"]) == 0
    with pytest.raises(ValueError, match="cannot be used to fit"):
        data.setup("fit")


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        _ = FaceDataModule(root=str(missing)).splits


def test_missing_class_folder_says_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "face").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "face" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"'face/' and 'non_face/'.*'non_face/' is missing"):
        _ = FaceDataModule(root=str(tmp_path)).splits


def test_empty_class_folder_is_an_error(face_crops_dir: Path) -> None:
    for image in (face_crops_dir / "non_face").iterdir():
        image.unlink()
    (face_crops_dir / "non_face" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"non_face.*holds no image"):
        _ = FaceDataModule(root=str(face_crops_dir)).splits


def test_truncated_image_error_names_the_file(face_crops_dir: Path) -> None:
    bad = face_crops_dir / "non_face" / "n000.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(ImageReadError, match="n000.jpg"):
        read_image(bad, 1)
    data = FaceDataModule(root=str(face_crops_dir), eval_all=True, batch_size=64)
    data.setup("test")
    with pytest.raises(ImageReadError, match="n000.jpg"):
        next(iter(data.test_dataloader()))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_fails_even_when_pillow_is_told_to_pad(tmp_path: Path, suffix: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Another library (face_recognition, on import) may set Pillow's process-wide switch: facetorch still refuses."""
    from PIL import ImageFile

    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match=f"cut{suffix}"):
        read_image(cut, 3)
    with pytest.raises(ImageReadError, match="the upload"):
        decode_image(cut.read_bytes(), 3, "the upload")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the other library's setting is put back
    assert read_image(whole, 3).shape == (64, 48, 3)


def test_not_an_image_error_names_the_file(face_crops_dir: Path) -> None:
    bad = face_crops_dir / "face" / "broken.png"
    bad.write_text("this is not a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(bad, 3)


def test_identity_folders_ignore_loose_files_and_drop_small_identities(identity_dir: Path) -> None:
    small = identity_dir / "person_small"
    small.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small / "only.png")
    data = FaceDataModule(root=str(identity_dir), layout="identity_folders", min_images_per_class=2,
                          val_fraction=0.2, test_fraction=0.2)
    assert data.class_names == [f"person_{k:02d}" for k in range(6)]
    assert data.num_classes == 6
    assert {name: len(index) for name, index in data.splits.items()} == {"train": 18, "val": 6, "test": 6}


def test_identity_layout_needs_a_root() -> None:
    with pytest.raises(ValueError, match="data.root is required"):
        FaceDataModule(layout="identity_folders")


def test_stratified_split_counts_per_class() -> None:
    labels = np.repeat(np.arange(4), 10)
    parts = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    for label in range(4):
        assert [np.sum(labels[getattr(parts, s)] == label) for s in ("train", "val", "test")] == [7, 1, 2]


def test_stratified_split_keeps_one_training_image_per_class() -> None:
    parts = stratified_split([0, 1, 1], val_fraction=0.4, test_fraction=0.4, seed=0)
    assert 0 in parts.train and len(set(parts.train) & {1, 2}) >= 1


def test_identity_split_keeps_people_disjoint() -> None:
    labels = np.repeat(np.arange(10), 3)
    parts = identity_split(labels, val_fraction=0.2, test_fraction=0.2, seed=1)
    people = [set(labels[getattr(parts, s)]) for s in ("train", "val", "test")]
    assert [len(p) for p in people] == [6, 2, 2]
    assert not (people[0] & people[1] or people[0] & people[2] or people[1] & people[2])


@pytest.mark.parametrize("fractions", [(0.6, 0.5), (-0.1, 0.2), (0.2, 1.0)])
def test_bad_split_fractions_are_rejected(fractions: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([0, 1], *fractions)


def test_small_training_sets_are_drawn_up_to_min_batches_per_epoch(face_crops_dir: Path) -> None:
    data = FaceDataModule(root=str(face_crops_dir), batch_size=4, min_batches_per_epoch=10,
                          val_fraction=0.25, test_fraction=0.25)
    data.setup("fit")
    loader = data.train_dataloader()
    assert len(loader) == 10
    counts = np.bincount(list(loader.sampler), minlength=12)
    assert counts.sum() == 40 and set(counts.tolist()) <= {3, 4}  # 12 images, each drawn 3 or 4 times
    large = FaceDataModule(root=str(face_crops_dir), batch_size=4, min_batches_per_epoch=2)
    large.setup("fit")
    assert len(large.train_dataloader()) == len(large.splits["train"]) // 4  # already enough: unchanged


def test_loader_workers_start_from_a_fork_server_only_in_a_rank_of_several(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DDP rank runs other threads when its workers start: forking it can hang (see worker_start_method)."""
    from facetorch.data.workers import worker_start_method

    assert worker_start_method(2) is None  # one process: the platform's default (fork on Linux, the shared cache)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert worker_start_method(2) == "forkserver" and worker_start_method(0) is None
    assert worker_start_method(2, "fork") == "fork"  # the user's choice wins (fork: the shared cache, and the risk)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 1)
    assert worker_start_method(2) is None and worker_start_method(2, "spawn") == "spawn"
    data = FaceDataModule(num_workers=1, batch_size=4)
    data.setup("fit")
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert data.val_dataloader().multiprocessing_context is not None
    assert data.val_dataloader().multiprocessing_context.get_start_method() == "forkserver"

"""The bounded image cache (shared by forked loader workers) and the fast, compact folder index."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facetorch.data import FaceDataModule
from facetorch.data.cache import ImageCache, available_memory, default_cache_bytes
from facetorch.data.datasets import FaceImageDataset, scan_face_crops, scan_identity_folders
from facetorch.data.detection import FaceBoxDataset, scan_labelme_index
from facetorch.data.files import FileList, list_images
from facetorch.data.layouts import get_layout
from facetorch.data.transforms import InputSpec
from tests.conftest import write_identity_folders

SPEC = InputSpec((16, 12), channels=3)
SLOT = 16 * 12 * 3


def image_dataset(index, cache_bytes: int | None, cache: bool = True, workers: int = 0) -> FaceImageDataset:
    return get_layout("identity_folders").dataset(index, SPEC, None, cache, cache_bytes, workers)


def test_image_cache_slots_fill_in_order_within_the_budget() -> None:
    cache = ImageCache([100, 100, 50, 100], budget=260)
    assert len(cache) == 3 and cache.nbytes == 250  # the 4th sample would pass the budget
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert cache.get(0) is None and cache.put(0, image)
    got = cache.get(0)
    assert np.array_equal(got, image) and got.base is not cache._pixels  # a copy, safe to write into
    got[:] = 0
    assert np.array_equal(cache.get(0), image)
    assert not cache.put(3, image)  # no slot
    assert not cache.put(2, image)  # larger than its slot
    assert cache.put(1, np.ones((2, 5, 10), dtype=np.uint8)) and cache.get(1).shape == (2, 5, 10)
    assert cache.filled == 2 and cache.filled_bytes == 200
    empty = ImageCache([], budget=10)
    assert len(empty) == 0 and empty.get(0) is None


def test_a_pickled_cache_starts_empty_and_private() -> None:
    cache = ImageCache([4] * 10, budget=40, private_bytes=20)
    cache.put(0, np.ones((2, 2), dtype=np.uint8))
    copy = pickle.loads(pickle.dumps(cache))
    assert not copy.shared and copy.filled == 0 and len(copy) == 5


def test_default_budget_is_a_share_of_available_memory() -> None:
    available = available_memory()
    assert available is None or available > 0
    assert 0 < default_cache_bytes(2) <= default_cache_bytes(1)


def test_a_folder_larger_than_the_budget_gives_the_same_items(identity_dir: Path) -> None:
    index = scan_identity_folders(identity_dir)
    uncached = image_dataset(index, None, cache=False)
    bounded = image_dataset(index, cache_bytes=10 * SLOT)
    assert bounded.cache_info["slots"] == 10 < len(index)
    for _ in range(2):  # the second pass serves the first 10 from memory
        for i in range(len(index)):
            assert torch.equal(bounded[i][0], uncached[i][0])
    assert bounded.cache_info["filled"] == 10
    assert image_dataset(index, cache_bytes=0).cache_info["slots"] == 0


def test_forked_loader_workers_share_one_cache(identity_dir: Path) -> None:
    index = scan_identity_folders(identity_dir)
    dataset = image_dataset(index, cache_bytes=len(index) * SLOT, workers=2)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="fork")
    first = torch.cat([images for images, _ in loader])
    # The workers filled the slots; this (parent) process sees them without having read a single image.
    assert dataset.cache_info["filled"] == len(index) and dataset.cache_info["shared"]
    dataset.decode = None  # type: ignore[assignment,method-assign]  # any read from disk now fails
    assert torch.equal(torch.cat([images for images, _ in DataLoader(dataset, batch_size=4)]), first)


def test_labelme_cache_keeps_full_photos_within_the_budget(labelme_dir: Path) -> None:
    index = scan_labelme_index(labelme_dir)
    photo = 64 * 48 * 3  # the generated photos' size
    spec = InputSpec((32, 32), channels=3)
    bounded = get_layout("labelme").dataset(index, spec, None, True, 5 * photo)
    uncached = get_layout("labelme").dataset(index, spec, None, False)
    assert isinstance(bounded, FaceBoxDataset) and bounded.cache_info["slots"] == 5
    for i in range(len(index)):
        image, target = bounded[i]
        assert torch.equal(image, uncached[i][0]) and torch.equal(target["box"], uncached[i][1]["box"])
    assert bounded.cache_info["filled"] == 5 and bounded.load(0).shape == (48, 64, 3)


def test_datamodule_splits_the_budget_between_splits(identity_dir: Path) -> None:
    data = FaceDataModule(str(identity_dir), layout="identity_folders", image_size=(16, 12), channels=3,
                          cache_bytes=30 * SLOT, val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    data.setup("fit")
    sizes = {name: len(data.splits[name]) for name in ("train", "val", "test")}
    assert data.cache_budget("train") == 30 * SLOT * sizes["train"] // 30
    assert data.datasets["train"].cache_info["slots"] == sizes["train"]
    with pytest.raises(ValueError, match="cache_bytes"):
        FaceDataModule(str(identity_dir), layout="identity_folders", cache_bytes=-1)


# --------------------------------------------------------------------------------------------
# scanning
# --------------------------------------------------------------------------------------------


def test_file_list_is_a_compact_sequence_of_paths(tmp_path: Path) -> None:
    names = ["a/1.jpg", "a/2.png", "bé/ü.jpg", "c/3.pgm"]
    files = FileList(tmp_path, names)
    assert len(files) == 4 and files[2] == tmp_path / "bé" / "ü.jpg" and files[-1] == tmp_path / "c" / "3.pgm"
    assert list(files) == [tmp_path / n for n in names] and files == [tmp_path / n for n in names]
    assert files.take([3, 0, 0]) == [tmp_path / "c/3.pgm", tmp_path / "a/1.jpg", tmp_path / "a/1.jpg"]
    assert files[1:3] == files.take([1, 2]) and len(files.take([])) == 0
    assert pickle.loads(pickle.dumps(files)) == files
    with pytest.raises(IndexError):
        files[4]


def test_scanners_index_the_same_files_as_a_plain_listing(tmp_path: Path, face_crops_dir: Path) -> None:
    root = write_identity_folders(tmp_path / "ids", identities=4, per_identity=3)
    (root / "person_00" / ".hidden.png").write_bytes(b"")
    (root / "person_00" / "notes.txt").write_text("not an image")
    (root / "person_01" / "sub.png").mkdir()  # a folder named like an image is not a file
    (root / ".git").mkdir()
    index = scan_identity_folders(root)
    expected = [p for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") for p in list_images(d)]
    assert list(index.sources) == expected and len(index) == 12
    assert index.subset([5, 0]).sources == [expected[5], expected[0]]
    crops = scan_face_crops(face_crops_dir)
    assert list(crops.sources) == list_images(face_crops_dir / "non_face") + list_images(face_crops_dir / "face")

"""Bad gallery input: every broken, odd or mixed gallery is named, and no answer is silently wrong.

Each test is a line of the README's "Bad input" section.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from facetorch.recognition.enrollment import person_folders
from facetorch.recognition.gallery import Gallery, GalleryError
from tests.conftest import expect_warning


def unit_rows(rng: np.random.Generator, count: int, dim: int = 8) -> np.ndarray:
    rows = rng.normal(size=(count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def embedder(dim: int = 8, fingerprint: str = "f" * 16) -> SimpleNamespace:
    return SimpleNamespace(embedding_dim=dim, fingerprint=fingerprint, threshold=0.5, faces="whole", source="test")


def people_gallery(rng: np.random.Generator, people: int, per_person: int = 3, dim: int = 8) -> Gallery:
    """Each person: images close to their own random direction."""
    gallery = Gallery.empty(embedder(dim))
    for k in range(people):
        centre = unit_rows(rng, 1, dim)
        rows = centre + 0.15 * rng.normal(size=(per_person, dim))
        rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
        gallery.add(f"person_{k}", rows, [f"person_{k}/{i}.png" for i in range(per_person)])
    return gallery


def test_the_same_person_under_two_names_keeps_a_usable_threshold_and_says_so() -> None:
    rng = np.random.default_rng(0)
    gallery = people_gallery(rng, 4)
    copy = gallery.embeddings[gallery.meta.names.index("person_0") :][:3]
    gallery.add("person_0_again", copy.copy(), ["again/0.png", "again/1.png", "again/2.png"])
    with expect_warning(UserWarning, r"person_0 and person_0_again .* the same person under two names"):
        threshold = gallery.calibrate_open_set()
    assert threshold <= 1.0
    others = [i for i, name in enumerate(gallery.meta.names) if name in ("person_1", "person_2", "person_3")]
    answers = gallery.identify(gallery.embeddings[others])
    assert [name for name, _ in answers] == [gallery.meta.names[i] for i in others]  # not "unknown"


def test_a_gallery_of_fewer_than_three_people_stores_null_and_uses_the_pair_threshold(tmp_path: Path) -> None:
    gallery = people_gallery(np.random.default_rng(1), 1)
    with expect_warning(UserWarning, r"1 person.*no open-set threshold.*pair threshold 0.5"):
        gallery.calibrate_open_set()
    gallery.save(tmp_path / "one.npz")
    with np.load(tmp_path / "one.npz") as archive:
        meta = json.loads(archive["meta"].tobytes().decode("utf-8"))  # strict JSON: no NaN
    assert meta["open_set_threshold"] is None
    assert Gallery.load(tmp_path / "one.npz").default_threshold() == 0.5


def test_a_nan_embedding_is_never_enrolled_nor_matched(tmp_path: Path) -> None:
    gallery = people_gallery(np.random.default_rng(2), 3)
    bad = np.full((1, 8), np.nan, np.float32)
    with pytest.raises(GalleryError, match=r"1 embedding.*not finite.*broken/0.png"):
        gallery.add("broken", bad, ["broken/0.png"])
    with pytest.raises(GalleryError, match="not finite"):
        gallery.identify(bad)
    path = tmp_path / "nan.npz"
    gallery.save(path)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["embeddings"][1] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(GalleryError, match=rf"{path.name}.*row 1 .*not finite"):
        Gallery.load(path)


def test_broken_gallery_files_name_the_file(tmp_path: Path) -> None:
    gallery = people_gallery(np.random.default_rng(3), 3)
    good = tmp_path / "good.npz"
    gallery.save(good)
    data = good.read_bytes()
    cases = {
        "truncated.npz": data[: len(data) // 2],
        "empty.npz": b"",
        "text.npz": b"name,embedding\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    with zipfile.ZipFile(tmp_path / "no_meta.npz", "w") as archive:
        archive.writestr("embeddings.npy", b"")
    np.savez(tmp_path / "bad_meta.npz", embeddings=gallery.embeddings, meta=np.frombuffer(b"{not json", np.uint8))
    with np.load(good) as archive:
        meta = json.loads(archive["meta"].tobytes())
    flat_meta = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    meta["names"] = "person_0"  # a string, not a list
    np.savez(tmp_path / "wrong_type.npz", embeddings=gallery.embeddings,
             meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))  # fmt: skip
    np.savez(tmp_path / "flat.npz", embeddings=gallery.embeddings.ravel(), meta=flat_meta)
    for name in [*cases, "no_meta.npz", "bad_meta.npz", "wrong_type.npz", "flat.npz"]:
        with pytest.raises(GalleryError, match=rf"{name}"):
            Gallery.load(tmp_path / name)


def test_a_folder_given_as_gallery_is_called_a_folder(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=r"--gallery .* is a folder; expected a gallery \.npz file"):
        Gallery.load(tmp_path)


def test_a_gallery_of_another_embedding_size_is_refused(tmp_path: Path) -> None:
    gallery = people_gallery(np.random.default_rng(4), 3, dim=8)
    with pytest.raises(GalleryError, match=r"8-d embeddings.*this model's are 16-d"):
        gallery.check_model(embedder(dim=16), tmp_path / "g.npz")
    with pytest.raises(GalleryError, match=r"the probes have shape \(2, 16\), but the gallery holds 8-d"):
        gallery.identify(unit_rows(np.random.default_rng(5), 2, dim=16))


def test_folder_errors_name_the_flag_that_gave_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^--unknown "):
        person_folders(tmp_path / "missing", flag="--unknown")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^--known "):
        person_folders(tmp_path / "empty", flag="--known")

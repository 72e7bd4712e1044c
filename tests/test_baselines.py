"""Tests for facetorch.baselines: easy synthetic problems, input handling, optional real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetorch.baselines.classical import (
    EigenfaceEmbedder,
    EigenfacesSvm,
    HogSvmClassifier,
    LbpNearestNeighbour,
    chi_square_distances,
    eigenface_embeddings,
    prepare_images,
)
from facetorch.evaluation import binary_auc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _stripes(rng: np.random.Generator, vertical: bool, size: int = 40) -> np.ndarray:
    """A uint8 stripe pattern (random period and phase) plus noise."""
    period = rng.integers(6, 12)
    ramp = np.sin(2 * np.pi * (np.arange(size) + rng.integers(0, period)) / period)
    img = np.tile(ramp, (size, 1)) if vertical else np.tile(ramp[:, None], (1, size))
    img = 0.5 + 0.3 * img + rng.normal(scale=0.1, size=(size, size))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _identities(
    rng: np.random.Generator, n_ids: int, per_id: int, size: int = 32
) -> tuple[list, np.ndarray]:
    """Per identity a smooth random template; its images are the template plus noise."""
    images, labels = [], []
    for identity in range(n_ids):
        coarse = rng.random((4, 4))
        template = np.kron(coarse, np.ones((size // 4, size // 4)))
        for _ in range(per_id):
            img = np.clip(template + rng.normal(scale=0.05, size=template.shape), 0, 1)
            images.append(img.astype(np.float32))
            labels.append(f"id{identity}")
    return images, np.array(labels)


def _split(images: list, labels: np.ndarray) -> tuple[list, np.ndarray, list, np.ndarray]:
    """Even positions train, odd positions test."""
    return images[::2], labels[::2], images[1::2], labels[1::2]


def test_prepare_images_handles_dtypes_colour_and_sizes() -> None:
    grey = np.full((50, 40), 255, dtype=np.uint8)
    colour = np.zeros((30, 30, 3), dtype=np.uint8)
    floats = np.full((20, 20), 0.5, dtype=np.float64)
    out = prepare_images([grey, colour, floats], size=(16, 12))
    assert out.shape == (3, 16, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.0, 0.5])

    framed = np.zeros((40, 40), dtype=np.uint8)
    framed[10:30, 10:30] = 255
    assert prepare_images([framed], size=(8, 8), center_crop=0.5).min() == pytest.approx(1.0)

    with pytest.raises(ValueError, match=r"images\[1\]: expected a greyscale"):
        prepare_images([grey, np.zeros((2, 3, 4, 5))], size=(8, 8))
    with pytest.raises(ValueError, match="center_crop"):
        prepare_images([grey], size=(8, 8), center_crop=0.0)


def test_hog_svm_separates_stripe_orientations() -> None:
    rng = np.random.default_rng(0)
    images = [_stripes(rng, vertical=bool(i % 2)) for i in range(80)]
    labels = np.array([i % 2 for i in range(80)])
    train_x, train_y, test_x, test_y = images[:40], labels[:40], images[40:], labels[40:]
    model = HogSvmClassifier().fit(train_x, train_y)
    scores = model.decision_function(test_x)
    assert scores.shape == (40,)
    assert model.score(test_x, test_y) >= 0.95
    assert binary_auc(scores, test_y) >= 0.99
    assert set(model.predict(test_x)) <= {0, 1}


def test_eigenfaces_svm_learns_identities() -> None:
    images, labels = _identities(np.random.default_rng(1), n_ids=5, per_id=8)
    train_x, train_y, test_x, test_y = _split(images, labels)
    model = EigenfacesSvm(n_components=10, size=(16, 16)).fit(train_x, train_y)
    assert model.score(test_x, test_y) == 1.0
    assert model.decision_function(test_x).shape == (20, 5)
    assert model.predict(test_x).dtype.kind == "U"  # original label values come back


def test_lbp_nearest_neighbour_learns_identities() -> None:
    images, labels = _identities(np.random.default_rng(2), n_ids=5, per_id=6, size=48)
    train_x, train_y, test_x, test_y = _split(images, labels)
    model = LbpNearestNeighbour(grid=(4, 4), size=(48, 48)).fit(train_x, train_y)
    scores = model.decision_function(test_x)
    assert scores.shape == (15, 5) and np.all(scores <= 0)
    assert model.score(test_x, test_y) >= 0.9


def test_lbp_rejects_unknown_method() -> None:
    images, labels = _identities(np.random.default_rng(3), n_ids=2, per_id=2)
    with pytest.raises(ValueError, match="method"):
        LbpNearestNeighbour(method="var").fit(images, labels)


def test_fit_checks_labels() -> None:
    images, labels = _identities(np.random.default_rng(4), n_ids=2, per_id=2)
    with pytest.raises(ValueError, match="one label per image"):
        EigenfacesSvm().fit(images, labels[:3])
    with pytest.raises(ValueError, match="at least 2 classes"):
        EigenfacesSvm().fit(images, np.zeros(4))


def test_chi_square_matches_naive() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random((7, 6)), rng.random((4, 6))
    a[0] = 0  # zero bins on both sides contribute nothing
    b[1] = 0
    expected = np.array(
        [
            [np.sum(np.divide((x - y) ** 2, x + y, where=(x + y) > 0, out=np.zeros(6))) for y in b]
            for x in a
        ]
    )
    np.testing.assert_allclose(chi_square_distances(a, b, chunk=3), expected, rtol=1e-5)


def test_eigenface_embeddings_are_unit_and_closer_within_identity() -> None:
    images, labels = _identities(np.random.default_rng(6), n_ids=6, per_id=4)
    z = eigenface_embeddings(images[::2], images[1::2], n_components=8, size=(16, 16))
    assert z.shape == (12, 8)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    sim = z @ z.T
    same = labels[1::2][:, None] == labels[1::2][None, :]
    off_diagonal = ~np.eye(12, dtype=bool)
    assert sim[same & off_diagonal].min() > sim[~same].max()
    assert EigenfaceEmbedder(n_components=500).fit(images).pca_.n_components_ == len(images) - 1


def test_hog_svm_on_skimage_faces() -> None:
    """Real faces shipped with scikit-image (offline): 100 faces + 100 non-faces, 25x25."""
    from skimage.data import lfw_subset

    x = lfw_subset()
    y = np.r_[np.ones(100, int), np.zeros(100, int)]
    order = np.random.default_rng(0).permutation(200)
    train, test = order[:140], order[140:]
    model = HogSvmClassifier().fit(x[train], y[train])
    assert model.score(x[test], y[test]) >= 0.9
    assert binary_auc(model.decision_function(x[test]), y[test]) >= 0.97


@pytest.mark.skipif(not (DATA / "orl_faces" / "s1").is_dir(), reason="shared ORL faces not present")
def test_lbp_on_orl_faces() -> None:
    cv2 = pytest.importorskip("cv2")
    folders = sorted((DATA / "orl_faces").glob("s*"), key=lambda p: int(p.name[1:]))[:10]
    images, labels = [], []
    for folder in folders:
        for path in sorted(folder.glob("*.pgm")):
            images.append(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
            labels.append(folder.name)
    labels = np.array(labels)
    train_x, train_y, test_x, test_y = _split(images, labels)
    assert LbpNearestNeighbour().fit(train_x, train_y).score(test_x, test_y) >= 0.9

"""Tests for facetorch.data.pairs (LFW pairs.txt reader) on generated files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetorch.data.pairs import Pair, lfw_image_path, pair_fold_ids, read_lfw_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _touch_images(root: Path, names: dict[str, int]) -> None:
    """Create empty image files images/<name>/<name>_0001.jpg ... (only existence matters)."""
    for name, count in names.items():
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            (folder / f"{name}_{i:04d}.jpg").touch()


@pytest.fixture()
def lfw_root(tmp_path: Path) -> Path:
    _touch_images(tmp_path, {"Ann_Lee": 3, "Bob_Ray": 12, "Cy_Twombly": 1})
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_view1_format(lfw_root: Path) -> None:
    pairs_file = _write(
        lfw_root / "pairs.txt",
        "2\nAnn_Lee\t1\t3\nBob_Ray 2   12\nAnn_Lee\t2\tCy_Twombly\t1\nBob_Ray\t10\tAnn_Lee\t1\n\n",
    )
    pairs = read_lfw_pairs(pairs_file)
    images = lfw_root / "images"
    assert pairs == [
        Pair(images / "Ann_Lee/Ann_Lee_0001.jpg", images / "Ann_Lee/Ann_Lee_0003.jpg", True),
        Pair(images / "Bob_Ray/Bob_Ray_0002.jpg", images / "Bob_Ray/Bob_Ray_0012.jpg", True),
        Pair(images / "Ann_Lee/Ann_Lee_0002.jpg", images / "Cy_Twombly/Cy_Twombly_0001.jpg", False),
        Pair(images / "Bob_Ray/Bob_Ray_0010.jpg", images / "Ann_Lee/Ann_Lee_0001.jpg", False),
    ]
    assert all(p.fold is None for p in pairs)
    assert pair_fold_ids(pairs, n_folds=2).tolist() == [0, 1, 0, 1]


def test_view2_format_has_folds(lfw_root: Path) -> None:
    pairs_file = _write(
        lfw_root / "pairs.txt",
        "2\t1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBob_Ray\t1\nBob_Ray\t1\t2\nBob_Ray\t3\tCy_Twombly\t1\n",
    )
    pairs = read_lfw_pairs(pairs_file)
    assert [p.same for p in pairs] == [True, False, True, False]
    assert [p.fold for p in pairs] == [0, 0, 1, 1]
    assert pair_fold_ids(pairs).tolist() == [0, 0, 1, 1]


def test_image_path_padding() -> None:
    assert lfw_image_path(Path("imgs"), "Ann_Lee", 7) == Path("imgs/Ann_Lee/Ann_Lee_0007.jpg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBob_Ray\t1\n", r"announces 4 pair lines .* got 2"),
        (
            "1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBob_Ray\t1\nBob_Ray\t1\t2\n",
            r"announces 2 pair lines .* got 3",
        ),
        ("1\nAnn_Lee\t1\tBob_Ray\t1\nAnn_Lee\t1\t2\n", r"pairs\.txt:2: expected a matched pair"),
        ("1\nAnn_Lee\t1\t2\nAnn_Lee\t1\t2\n", r"pairs\.txt:3: expected a mismatched pair"),
        (
            "1\nAnn_Lee\tone\t2\nAnn_Lee\t1\tBob_Ray\t1\n",
            r"pairs\.txt:2: expected a positive image index, got 'one'",
        ),
        (
            "1\nAnn_Lee\t0\t2\nAnn_Lee\t1\tBob_Ray\t1\n",
            r"pairs\.txt:2: expected a positive image index",
        ),
        ("pairs\nAnn_Lee\t1\t2\n", r"pairs\.txt:1: expected a header"),
        ("", "empty file"),
    ],
)
def test_malformed_files(lfw_root: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_lfw_pairs(_write(lfw_root / "pairs.txt", text))


def test_missing_image_is_listed(lfw_root: Path) -> None:
    pairs_file = _write(lfw_root / "pairs.txt", "1\nAnn_Lee\t1\t4\nAnn_Lee\t1\tBob_Ray\t1\n")
    with pytest.raises(FileNotFoundError, match=r"(?s)1 image\(s\).*line 2: .*Ann_Lee_0004\.jpg"):
        read_lfw_pairs(pairs_file)
    assert len(read_lfw_pairs(pairs_file, check_files=False)) == 2


def test_missing_pairs_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        read_lfw_pairs(tmp_path / "nope.txt")


def test_custom_images_dir(tmp_path: Path) -> None:
    _touch_images(tmp_path / "elsewhere", {"Ann_Lee": 2, "Bob_Ray": 1})
    pairs_file = _write(tmp_path / "pairs.txt", "1\nAnn_Lee\t1\t2\nAnn_Lee\t1\tBob_Ray\t1\n")
    pairs = read_lfw_pairs(pairs_file, images_dir=tmp_path / "elsewhere" / "images")
    assert pairs[0].path1 == tmp_path / "elsewhere/images/Ann_Lee/Ann_Lee_0001.jpg"


def test_pair_fold_ids_needs_file_order(tmp_path: Path) -> None:
    pairs = [Pair(Path("a"), Path("b"), same) for same in (True, False, True, False)]
    with pytest.raises(ValueError, match="matched pairs before"):
        pair_fold_ids(pairs, n_folds=2)


@pytest.mark.skipif(
    not (DATA / "lfw_pairs_dev" / "pairs.txt").is_file(), reason="shared LFW pairs not present"
)
def test_real_lfw_dev_pairs() -> None:
    pairs = read_lfw_pairs(DATA / "lfw_pairs_dev" / "pairs.txt")
    same = np.array([p.same for p in pairs])
    assert len(pairs) == 400 and same[:200].all() and not same[200:].any()
    assert np.bincount(pair_fold_ids(pairs)).tolist() == [40] * 10

"""Reader for LFW ``pairs.txt`` files (face verification pairs).

Two headers are accepted:

- ``N`` (View 1, e.g. ``pairsDevTest.txt``): N matched lines ``name i j`` then N mismatched
  lines ``name1 i name2 j``.
- ``F N`` (View 2, ``pairs.txt``): F folds, each N matched then N mismatched lines.

Images live at ``images/<name>/<name>_<iiii>.jpg`` beside the pairs file (index zero padded to
4 digits). Fields are tab-separated in LFW; any whitespace is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Pair", "PairsFileError", "balanced_label_pairs", "lfw_image_path", "pair_fold_ids", "read_lfw_pairs"]

_MAX_LISTED_MISSING = 10


class PairsFileError(ValueError):
    """A pairs file that cannot be read: its header, a line, or an index is not what LFW writes."""


@dataclass(frozen=True)
class Pair:
    """Two face images and whether they show the same person.

    ``fold`` is the fold (block) index for a View 2 file (``F N`` header) and None for a
    single-block file, whose folds follow from the order (see :func:`pair_fold_ids`).
    """

    path1: Path
    path2: Path
    same: bool
    fold: int | None = None


def lfw_image_path(images_dir: Path, name: str, index: int) -> Path:
    """Path of image ``index`` of person ``name``: ``images_dir/name/name_0001.jpg``."""
    return Path(images_dir) / name / f"{name}_{index:04d}.jpg"


def _parse_header(line: str, where: str) -> tuple[int, int]:
    """Return (folds, pairs of each kind per fold) from the first line."""
    fields = line.split()
    try:
        numbers = [int(f) for f in fields]
    except ValueError:
        numbers = []
    if len(numbers) == 1 and numbers[0] > 0:
        return 1, numbers[0]
    if len(numbers) == 2 and min(numbers) > 0:
        return numbers[0], numbers[1]
    raise PairsFileError(
        f"{where}: expected a header 'N' or 'FOLDS N' with positive integers, got {line.strip()!r}"
    )


def _index(field: str, where: str) -> int:
    try:
        value = int(field)
    except ValueError:
        value = 0
    if value < 1:
        raise PairsFileError(f"{where}: expected a positive image index, got {field!r}")
    return value


def _parse_pair(line: str, same: bool, images_dir: Path, fold: int | None, where: str) -> Pair:
    """One pair line: ``name i j`` when ``same``, else ``name1 i name2 j``."""
    fields = line.split()
    expected = "a matched pair 'name i j'" if same else "a mismatched pair 'name1 i name2 j'"
    if len(fields) != (3 if same else 4):
        raise PairsFileError(
            f"{where}: expected {expected}, got {len(fields)} fields: {line.strip()!r}"
        )
    name1, i, name2, j = (fields[0], fields[1], fields[0], fields[2]) if same else fields
    return Pair(
        path1=lfw_image_path(images_dir, name1, _index(i, where)),
        path2=lfw_image_path(images_dir, name2, _index(j, where)),
        same=same,
        fold=fold,
    )


def read_lfw_pairs(
    pairs_file: str | Path, images_dir: str | Path | None = None, check_files: bool = True
) -> list[Pair]:
    """Read an LFW pairs file.

    Args:
        pairs_file: the ``pairs.txt``.
        images_dir: folder of ``<name>/<name>_<iiii>.jpg``; default ``images/`` beside the file.
        check_files: raise if an image does not exist.

    Returns:
        The pairs in file order (matched then mismatched, per fold).

    Raises:
        FileNotFoundError: the pairs file or (with ``check_files``) an image is missing.
        PairsFileError: a malformed header or line, or a line count that does not match the header;
            the message names the file and line number.
    """
    pairs_file = Path(pairs_file)
    if not pairs_file.is_file():
        raise FileNotFoundError(f"LFW pairs file not found: {pairs_file}")
    images_dir = pairs_file.parent / "images" if images_dir is None else Path(images_dir)
    # Keep original line numbers; blank lines (e.g. a trailing newline) carry no pair.
    try:
        text = pairs_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PairsFileError(f"{pairs_file}: expected a text pairs file (UTF-8), got bytes that are not text ({error})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise PairsFileError(
            f"{pairs_file}: expected a header line 'N' or 'FOLDS N', got an empty file"
        )

    header_no, header = lines[0]
    folds, per_kind = _parse_header(header, f"{pairs_file}:{header_no}")
    body = lines[1:]
    expected = folds * 2 * per_kind
    if len(body) != expected:
        raise PairsFileError(
            f"{pairs_file}: header {header.strip()!r} announces {expected} pair lines "
            f"({folds} fold(s) x {per_kind} matched + {per_kind} mismatched), got {len(body)}"
        )

    pairs: list[Pair] = []
    for k, (line_no, text) in enumerate(body):
        fold, offset = divmod(k, 2 * per_kind)
        pairs.append(
            _parse_pair(
                text,
                same=offset < per_kind,
                images_dir=images_dir,
                fold=fold if folds > 1 else None,
                where=f"{pairs_file}:{line_no}",
            )
        )
    if check_files:
        _check_images_exist(pairs, [line_no for line_no, _ in body], pairs_file)
    return pairs


def _check_images_exist(pairs: list[Pair], line_numbers: list[int], pairs_file: Path) -> None:
    """Raise FileNotFoundError listing each missing image with the first line that names it."""
    missing: dict[Path, int] = {}
    for pair, line_no in zip(pairs, line_numbers, strict=True):
        for path in (pair.path1, pair.path2):
            if path not in missing and not path.is_file():
                missing[path] = line_no
    if missing:
        listed = "\n  ".join(
            f"line {n}: {p}" for p, n in list(missing.items())[:_MAX_LISTED_MISSING]
        )
        more = (
            f"\n  ... and {len(missing) - _MAX_LISTED_MISSING} more"
            if len(missing) > _MAX_LISTED_MISSING
            else ""
        )
        raise FileNotFoundError(
            f"{pairs_file}: {len(missing)} image(s) listed but not found:\n  {listed}{more}"
        )


def pair_fold_ids(pairs: list[Pair], n_folds: int = 10) -> np.ndarray:
    """Fold index per pair for :func:`facetorch.evaluation.verification_metrics`.

    The file's own folds for a View 2 file; otherwise the LFW convention of
    :func:`facetorch.evaluation.lfw_fold_ids` (``n_folds`` contiguous chunks of the matched and of
    the mismatched pairs), which needs the pairs in file order.
    """
    # Imported here: keeps this reader light to import (evaluation pulls in scikit-learn).
    from facetorch.evaluation import lfw_fold_ids

    if pairs and all(p.fold is not None for p in pairs):
        return np.array([p.fold for p in pairs], dtype=np.int64)
    same = np.array([p.same for p in pairs], dtype=bool)
    num_matched = int(same.sum())
    if not (same[:num_matched].all() and not same[num_matched:].any()):
        raise ValueError(
            "pairs: expected all matched pairs before all mismatched pairs (file order)"
        )
    return lfw_fold_ids(num_matched, len(pairs) - num_matched, n_folds)


def balanced_label_pairs(labels: Sequence[int], max_per_kind: int = 3000, seed: int = 0) -> np.ndarray:
    """Verification pairs among labelled images: as many "same" as "different" pairs, in LFW order.

    Every same-identity pair is used (a seeded sample of ``max_per_kind`` when there are more),
    then as many different-identity pairs drawn uniformly, without repeats. Used to verify on the
    identity-disjoint validation and test splits.

    Args:
        labels: (N,) identity label per image.
        max_per_kind: Cap on the pairs of each kind.
        seed: Seed of the sampling (the same pairs every epoch).

    Returns:
        (M, 3) int64 rows ``(i, j, same)``: all matched pairs first, then the mismatched ones, so
        :func:`facetorch.evaluation.lfw_fold_ids` gives their folds.

    Raises:
        ValueError: no identity has two images, or there is only one identity.
    """
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    # Matched pairs: all index pairs inside each identity (i < j).
    groups = [np.flatnonzero(y == label) for label in np.unique(y)]
    matched = [np.stack(np.triu_indices(len(g), k=1)).T for g in groups]
    matched = np.concatenate([g[m] for g, m in zip(groups, matched) if len(m)]) if any(len(m) for m in matched) else None
    if matched is None or len(groups) < 2:
        raise ValueError(
            f"Verification pairs need an identity with two images and two identities; got {len(y)} images "
            f"of {len(groups)} identities"
        )
    count = min(len(matched), max_per_kind)
    matched = matched[np.sort(rng.choice(len(matched), count, replace=False))]
    # Mismatched pairs: drawn at random (rejecting same-identity and repeated pairs); the pool of
    # different-identity pairs is far larger than ``count`` whenever there are several identities.
    pool = len(y) * (len(y) - 1) // 2 - sum(len(g) * (len(g) - 1) // 2 for g in groups)
    count = min(count, pool)
    seen: set[tuple[int, int]] = set()
    while len(seen) < count:
        a, b = rng.integers(len(y), size=(2, 2 * count))
        for first, second in zip(a.tolist(), b.tolist()):
            if y[first] != y[second] and len(seen) < count:
                seen.add((min(first, second), max(first, second)))
    mismatched = np.array(sorted(seen), dtype=np.int64).reshape(-1, 2)
    matched = matched[: len(mismatched)]
    rows = np.concatenate([matched, mismatched])
    same = np.r_[np.ones(len(matched)), np.zeros(len(mismatched))].astype(np.int64)
    return np.column_stack([rows, same]).astype(np.int64)

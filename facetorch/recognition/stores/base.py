"""What every gallery store keeps and answers: settings, people, image rows, and a change log by version.

A store is the durable half of a gallery (:mod:`facetorch.recognition.database` is the other:
the vector index and the matching). It holds one row per enrolled image (the person, a file
key, the float32 embedding) and the gallery's settings. Every write bumps one version counter,
and every row added or removed is tagged with the version that did it, so a reader's index can
catch up with ``changes_since(version)`` instead of reading everything again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

import numpy as np

from facetorch.recognition.gallery import UNKNOWN, GalleryError

__all__ = ["MAX_NAME", "GallerySettings", "NoGalleryError", "Rows", "Store", "check_name", "group_rows"]

MAX_NAME = 200  # characters in a person's name


class NoGalleryError(GalleryError):
    """A database that answers but holds no gallery yet (enrolment makes one there)."""


@dataclass(frozen=True)
class GallerySettings:
    """What a gallery records beside its rows (the ``meta`` of a gallery)."""

    model_fingerprint: str
    dim: int
    threshold: float = float("nan")  # the model's pair threshold (is this pair the same person?)
    open_set_fpir: float = 0.05
    open_set_threshold: float = float("nan")  # calibrated on the enrolled people; NaN: not calibrated
    calibrated_people: int = 0  # how many people the open-set threshold was calibrated on
    model: str = ""  # ckpt:<path> or config:<path>, which recognize can load again
    detector: Optional[str] = None  # how faces were found: haar, dlib_cnn, ckpt:<fingerprint>, whole, haar_largest
    alignment: Optional[str] = None  # five_point or none

    def to_record(self) -> dict[str, Any]:
        """JSON-ready values (NaN as None)."""
        return {f.name: _json_number(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str) -> GallerySettings:
        """Settings from stored values; unknown keys are refused (a gallery of a newer facetorch)."""
        known = {f.name for f in fields(cls)}
        unexpected = sorted(set(record) - known)
        if unexpected:
            raise GalleryError(f"{where}: unexpected gallery settings {unexpected}; written by a newer facetorch?")
        missing = sorted({"model_fingerprint", "dim"} - set(record))
        if missing:
            raise GalleryError(f"{where}: the gallery settings lack {missing}; the store is damaged")
        values = dict(record)
        for key in ("threshold", "open_set_fpir", "open_set_threshold"):
            if key in values and values[key] is None:
                values[key] = float("nan")
        return cls(**values)

    def updated(self, **changes: Any) -> GallerySettings:
        """A copy with ``changes``."""
        return replace(self, **changes)


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class Rows:
    """Image rows: store ids, person ids and the embeddings (N, D) float32."""

    ids: np.ndarray
    people: np.ndarray
    embeddings: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> Rows:
        """No rows."""
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, dim), np.float32))

    def __len__(self) -> int:
        return len(self.ids)


def check_name(name: Any, what: str = "name") -> str:
    """A person's name as a gallery takes it: text, no path separator, no control character, not ``unknown``.

    Raises:
        ValueError: with one line that says what was wrong.
    """
    if not isinstance(name, str):
        raise ValueError(f"a person's {what} must be text, got {type(name).__name__} {name!r}")
    if not name.isprintable():
        bad = next(c for c in name if not c.isprintable())
        raise ValueError(f"a person's {what} must not hold control characters, got {name!r} (with {bad!r})")
    if not name.strip():
        raise ValueError(f"a person's {what} must not be empty, got {name!r}")
    if name != name.strip():
        raise ValueError(f"a person's {what} must not start or end with spaces, got {name!r}")
    if "/" in name or "\\" in name:
        raise ValueError(f"a person's {what} must not hold a path separator ('/' or '\\'), got {name!r}: "
                         "it names a folder of photos and a file key")  # fmt: skip
    if len(name) > MAX_NAME:
        raise ValueError(f"a person's {what} must be at most {MAX_NAME} characters, got {len(name)}")
    if name.casefold() == UNKNOWN:
        raise ValueError(f"{name!r} is what recognition answers for a stranger; enrol the person under another {what}")
    return name


def group_rows(names: list[str], embeddings: np.ndarray, files: list[str]) -> dict[str, tuple[list[int], list[str]]]:
    """{name: (row indices, file keys)} in first-seen order; a file given twice is kept once."""
    seen: set[str] = set()
    groups: dict[str, tuple[list[int], list[str]]] = {}
    for i, (name, key) in enumerate(zip(names, files)):
        if key in seen:
            continue
        seen.add(key)
        rows, keys = groups.setdefault(name, ([], []))
        rows.append(i)
        keys.append(key)
    return groups


class Store:
    """The interface every store implements; :class:`~facetorch.recognition.database.FaceGallery` drives it.

    ``target`` names the store in messages; ``read_only`` stores refuse every write with one line
    saying what to do instead. ``index_path`` is where a persisted vector index lives (None: kept
    in memory only).
    """

    target: str = ""
    read_only: bool = False
    index_path: Optional[str] = None
    uid: str = ""  # changes when the store is made anew, so an index of an older store is never reused

    def settings(self) -> GallerySettings:
        """The stored settings."""
        raise NotImplementedError

    def update_settings(self, **changes: Any) -> GallerySettings:
        """Store ``changes`` (one transaction, a version bump) and return the new settings."""
        raise NotImplementedError

    def version(self) -> int:
        """The version counter: it grows with every committed write."""
        raise NotImplementedError

    def add(self, names: list[str], embeddings: np.ndarray, files: list[str]) -> int:
        """Add rows (one name and one file key per row) in one transaction; files already enrolled are skipped.

        Returns:
            How many rows were added.
        """
        raise NotImplementedError

    def remove_person(self, name: str) -> int:
        """Remove a person and their rows; returns how many rows. KeyError when there is no such person."""
        raise NotImplementedError

    def remove_file(self, file: str) -> str:
        """Remove one enrolled image by its file key; returns the person's name (removed too when it was the last)."""
        raise NotImplementedError

    def rename(self, old: str, new: str) -> None:
        """Rename a person. KeyError when ``old`` is not there, ValueError when ``new`` already is."""
        raise NotImplementedError

    def counts(self) -> list[tuple[str, int]]:
        """(name, image count) of every person, sorted by name."""
        raise NotImplementedError

    def num_people(self) -> int:
        """People enrolled."""
        raise NotImplementedError

    def num_rows(self) -> int:
        """Image rows enrolled."""
        raise NotImplementedError

    def all_rows(self, chunk: int = 65536) -> Any:
        """Every row, as :class:`Rows` chunks in id order (an iterator)."""
        raise NotImplementedError

    def records(self, chunk: int = 65536) -> Any:
        """Every row as (names, file keys, embeddings) chunks in id order (an iterator), for a migration."""
        raise NotImplementedError

    def changes_since(self, version: int) -> tuple[Any, np.ndarray, int]:
        """Rows added after ``version`` (still there), the ids removed after it, and the version they reach.

        The rows come as an iterator of :class:`Rows` pages.
        """
        raise NotImplementedError

    def rows_of_people(self, person_ids: np.ndarray) -> Rows:
        """Every row of these people."""
        raise NotImplementedError

    def names_of(self, person_ids: np.ndarray) -> dict[int, str]:
        """{person id: name} of these people (people removed meanwhile are left out)."""
        raise NotImplementedError

    def person_ids(self, names: list[str]) -> dict[str, int]:
        """{name: person id} of these names (names not enrolled are left out)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

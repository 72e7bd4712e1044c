"""A ``.npz`` gallery (format 2) behind the store interface: read-only from facetorch 0.2.0 on.

The file is read whole, as before; every write is refused with the command that converts it
(``gallery.py migrate --gallery OLD.npz --to NEW.db``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facetorch.recognition.gallery import Gallery, GalleryError
from facetorch.recognition.stores.base import GallerySettings, Rows, Store

__all__ = ["NpzStore", "read_only_message"]


def read_only_message(target: str) -> str:
    """What to do instead of writing into a ``.npz`` gallery."""
    new = str(Path(target).with_suffix(".db"))
    return (f"{target}: .npz galleries are read-only from facetorch 0.2.0; convert it with `gallery.py migrate --gallery "
            f"{target} --to {new}` and enrol into {new}")  # fmt: skip


class NpzStore(Store):
    """An ``.npz`` gallery's rows in memory; ids are row numbers + 1, person ids ranks in the sorted names + 1."""

    read_only = True

    def __init__(self, path: str | Path, flag: str = "--gallery") -> None:
        self.path = Path(path)
        self.target = f"{flag} {str(self.path)!r}"
        self.gallery = Gallery.load(self.path, flag=flag)
        meta = self.gallery.meta
        self._settings = GallerySettings(
            model_fingerprint=meta.model_fingerprint, dim=int(self.gallery.embeddings.shape[1]), threshold=meta.threshold,
            open_set_fpir=meta.open_set_fpir, open_set_threshold=meta.open_set_threshold,
            calibrated_people=len(self.gallery.people), model=meta.model, detector=meta.detector, alignment=meta.alignment,
        )  # fmt: skip
        self.names = self.gallery.people
        rank = {name: k + 1 for k, name in enumerate(self.names)}
        self._people = np.array([rank[name] for name in meta.names], np.int64)
        self._rows = Rows(np.arange(1, len(meta.names) + 1, dtype=np.int64), self._people, self.gallery.embeddings)
        stat = self.path.stat()
        self.uid = f"npz:{stat.st_size}:{stat.st_mtime_ns}"
        self.dim = self._settings.dim

    def settings(self) -> GallerySettings:
        """The file's meta, as settings."""
        return self._settings

    def version(self) -> int:
        """Always 0: the file does not change under a reader."""
        return 0

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise GalleryError(read_only_message(str(self.path)))

    add = remove_person = remove_file = rename = _refuse

    def update_settings(self, **changes: Any) -> GallerySettings:
        """Change the settings in memory only (a calibration of a read-only file is not kept)."""
        self._settings = self._settings.updated(**changes)
        return self._settings

    def counts(self) -> list[tuple[str, int]]:
        """(name, images), sorted by name."""
        counts = np.bincount(self._people, minlength=len(self.names) + 1)
        return [(name, int(counts[k + 1])) for k, name in enumerate(self.names)]

    def num_people(self) -> int:
        """People in the file."""
        return len(self.names)

    def num_rows(self) -> int:
        """Rows in the file."""
        return len(self._people)

    def all_rows(self, chunk: int = 65536) -> Iterator[Rows]:
        """Every row, ``chunk`` at a time."""
        for start in range(0, len(self._people), chunk):
            part = slice(start, start + chunk)
            yield Rows(self._rows.ids[part], self._rows.people[part], self._rows.embeddings[part])

    def records(self, chunk: int = 65536) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
        """Every row as (names, file keys, embeddings), ``chunk`` at a time."""
        meta = self.gallery.meta
        for start in range(0, len(meta.names), chunk):
            part = slice(start, start + chunk)
            yield meta.names[part], meta.files[part], self.gallery.embeddings[part]

    def changes_since(self, version: int) -> tuple[Iterator[Rows], np.ndarray, int]:
        """Nothing ever changes."""
        return iter(()), np.empty(0, np.int64), 0

    def rows_of_people(self, person_ids: np.ndarray) -> Rows:
        """Every row of these people."""
        keep = np.isin(self._people, np.asarray(person_ids, np.int64))
        return Rows(self._rows.ids[keep], self._people[keep], self._rows.embeddings[keep])

    def names_of(self, person_ids: np.ndarray) -> dict[int, str]:
        """{person id: name}."""
        return {int(p): self.names[int(p) - 1] for p in np.unique(person_ids) if 0 < int(p) <= len(self.names)}

    def person_ids(self, names: list[str]) -> dict[str, int]:
        """{name: person id} of the names in the file."""
        rank = {name: k + 1 for k, name in enumerate(self.names)}
        return {name: rank[name] for name in names if name in rank}

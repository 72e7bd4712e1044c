"""Which files are images, fast folder listings, and a compact list of many paths (a light module: no torch).

Listings use ``os.scandir``, whose entries carry the file type the kernel returned with the
names (``d_type``), so a folder of 10^5-10^6 files is indexed without one ``stat`` call per file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union, overload

import numpy as np

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp", ".gif",  # a GIF: its first frame
)  # fmt: skip


def is_image_name(name: str) -> bool:
    """Whether a file name is visible and ends with one of :data:`IMAGE_EXTENSIONS` (no file system access)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with one of :data:`IMAGE_EXTENSIONS`."""
    return is_image_name(path.name) and path.is_file()


def image_names(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the image files directly inside ``folder``, sorted (one ``scandir``, no ``stat`` per file)."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if is_image_name(entry.name) and entry.is_file())


def class_folder_listing(folder: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """The image files directly inside a class folder, and what it holds that is not read.

    Returns:
        ``(images, skipped)``, both sorted: image file names, and the names of visible entries
        that are not read (sub-folders, with a trailing ``/``, and files that are not images).
    """
    images, skipped = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files (.DS_Store, editors' files) are not data
            if entry.is_dir():
                skipped.append(entry.name + "/")
            elif is_image_name(entry.name) and entry.is_file():
                images.append(entry.name)
            else:
                skipped.append(entry.name)
    return sorted(images), sorted(skipped)


def subfolder_names(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if not entry.name.startswith(".") and entry.is_dir())


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return [folder / name for name in image_names(folder)]


class FileList(Sequence[Path]):
    """An immutable list of many file paths under one root, stored as one byte buffer and offsets.

    A Python list of 10^6 ``Path`` objects costs about 200-300 MB, and every DataLoader worker
    forked from the process ends up with its own copy (reading an object writes its reference
    count, which un-shares its memory page). Here the relative paths are one ``uint8`` array and
    one ``int64`` array of offsets: about 25 bytes a file, never touched by reference counting.
    Items are ``Path(root, relative)``, made when asked for.

    Args:
        root: The folder the relative paths start from.
        relative: Relative paths (``"<identity>/<file>"``), in order.
    """

    def __init__(self, root: str | os.PathLike[str], relative: Iterable[str] = ()) -> None:
        encoded = [name.encode("utf-8", "surrogateescape") for name in relative]
        lengths = np.fromiter((len(name) for name in encoded), dtype=np.int64, count=len(encoded))
        self._init(str(root), np.frombuffer(b"".join(encoded), dtype=np.uint8), np.concatenate([[0], np.cumsum(lengths)]))

    def _init(self, root: str, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.root = root
        self._root_path = Path(root)
        self._blob = blob
        self._offsets = offsets.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def relative(self, i: int) -> str:
        """The i-th path relative to :attr:`root`."""
        return self._blob[self._offsets[i] : self._offsets[i + 1]].tobytes().decode("utf-8", "surrogateescape")

    @overload
    def __getitem__(self, i: int) -> Path: ...

    @overload
    def __getitem__(self, i: slice) -> FileList: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[Path, FileList]:
        if isinstance(i, slice):
            return self.take(range(*i.indices(len(self))))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"FileList index {i} out of range for {n} files")
        return self._root_path / self.relative(i % n)

    def __iter__(self) -> Iterator[Path]:
        return (self._root_path / self.relative(i) for i in range(len(self)))

    def take(self, indices: Sequence[int] | np.ndarray) -> FileList:
        """The files at ``indices``, as a new FileList (vectorised: no Python loop over the files)."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        starts, ends = self._offsets[index], self._offsets[index + 1]
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        # byte j of the new buffer comes from starts[k] + (j - offsets[k]) for the k whose segment holds j
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        out = FileList.__new__(FileList)
        out._init(self.root, self._blob[gather], offsets)
        return out

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, FileList):
            return (
                self.root == other.root
                and np.array_equal(self._offsets, other._offsets)
                and np.array_equal(self._blob, other._blob)
            )
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal by content, like a list

    def __repr__(self) -> str:
        return f"FileList({self.root!r}, {len(self)} files)"

    @property
    def nbytes(self) -> int:
        """Memory held by the paths (buffer and offsets)."""
        return int(self._blob.nbytes + self._offsets.nbytes)

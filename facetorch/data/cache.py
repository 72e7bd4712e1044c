"""A byte-bounded image cache that DataLoader workers share: one anonymous shared mapping, filled lazily.

Why this form. A Python dict of decoded images lives in one process: each DataLoader worker
fills its own copy, and a folder larger than memory exhausts it. Instead, before the workers
start, :class:`ImageCache` maps one region of anonymous shared memory (``mmap(-1, n)``, i.e.
``MAP_SHARED | MAP_ANONYMOUS``) that is at most the byte budget, and gives each cached sample a
fixed slot in it. Workers are forked on Linux, so every worker inherits the same mapping: an
image decoded by one worker is served from memory to all of them. Pages are committed only when
written, so a large budget costs nothing until it fills. Samples beyond the budget get no slot and
are read from disk every time: a data set larger than the budget still trains, at disk speed.

Each slot's size is known before any image is read (the model's input size for prepared images,
or the photo size recorded in an annotation), so slots are assigned once, in sample order, by
every process alike: there is no allocator to lock. A slot is marked full only after its pixels
are written; two workers that fill the same slot write the same pixels.

Not chosen: ``/dev/shm`` files (containers often limit it to 64 MB, and a write beyond that
kills the process with SIGBUS), a memory-mapped file on disk (writes back to disk), and a
``multiprocessing.Manager`` (a server process and a pickle per image).

When a DataLoader does not fork (``multiprocessing_context="spawn"``, macOS, Windows, and the
ranks of a DDP run, whose workers start from a fork server), the
dataset is pickled into each worker; the cache then starts empty and private in each worker,
with ``private_bytes`` (the budget divided among the workers).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["ImageCache", "available_memory", "default_cache_bytes"]

DEFAULT_MEMORY_FRACTION = 0.25  # of the memory available when the DataModule starts


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> Optional[int]:
    """Memory left under a container's limit (cgroup v2, then v1), if there is one."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge number: no limit
            return max(0, int(limit) - usage)
    return None


def available_memory() -> Optional[int]:
    """Bytes this process could still use: the machine's available memory, or a container limit's rest if lower."""
    values = [value for value in (_meminfo_available(), _cgroup_available()) if value is not None]
    return min(values) if values else None


def default_cache_bytes(processes: int = 1) -> int:
    """The default cache budget: a quarter of the available memory, divided among ``processes`` (ranks on this machine).

    Falls back to 2 GiB per process when the available memory cannot be read.
    """
    available = available_memory()
    total = int(available * DEFAULT_MEMORY_FRACTION) if available is not None else 2 * 2**30 * processes
    return max(0, total // max(1, processes))


class ImageCache:
    """uint8 images (H, W) or (H, W, C) in fixed slots of one shared, lazily filled mapping.

    Args:
        slot_bytes: The largest image size in bytes of each sample (N,). Samples get slots in
            order while they fit in ``budget``; later ones are never cached.
        budget: Most bytes of pixels the cache holds (its table adds 16 bytes a slot).
        private_bytes: Budget of the private copy each worker builds when the cache is pickled
            (a worker that was not forked); default: ``budget``.
    """

    _FIELDS = 4  # per slot: state (0 empty, 1 full), height, width, channels (0: a 2-D image)

    def __init__(self, slot_bytes: Sequence[int] | np.ndarray, budget: int, private_bytes: Optional[int] = None) -> None:
        sizes = np.asarray(slot_bytes, dtype=np.int64).reshape(-1)
        if len(sizes) and sizes.min() < 0:
            raise ValueError("ImageCache: slot sizes must be >= 0 bytes")
        self._all_sizes = sizes
        self.budget = max(0, int(budget))
        self.private_bytes = self.budget if private_bytes is None else max(0, int(private_bytes))
        ends = np.cumsum(sizes)
        self.slots = int(np.searchsorted(ends, self.budget, side="right"))  # samples 0 .. slots - 1 are cached
        self._offsets = (ends - sizes)[: self.slots]
        self._sizes = sizes[: self.slots]
        self.nbytes = int(ends[self.slots - 1]) if self.slots else 0
        header = self.slots * self._FIELDS * 4
        # Anonymous and MAP_SHARED (Python's default for fileno -1 on Unix): inherited by forked workers.
        self._map = mmap.mmap(-1, max(1, header + self.nbytes))
        self._table = np.frombuffer(self._map, dtype=np.int32, count=self.slots * self._FIELDS).reshape(-1, self._FIELDS)
        self._pixels = np.frombuffer(self._map, dtype=np.uint8, count=self.nbytes, offset=header)
        self.shared = True

    def __len__(self) -> int:
        """Number of samples that have a slot."""
        return self.slots

    @property
    def filled(self) -> int:
        """Number of slots filled so far (in this mapping: by every worker that shares it)."""
        return int(np.count_nonzero(self._table[:, 0] == 1))

    @property
    def filled_bytes(self) -> int:
        """Bytes of pixels held now."""
        full = self._table[:, 0] == 1
        rows = self._table[full]
        return int(np.sum(rows[:, 1].astype(np.int64) * rows[:, 2] * np.maximum(rows[:, 3], 1)))

    def get(self, i: int) -> Optional[np.ndarray]:
        """A copy of the image of sample ``i``, or ``None`` when it has no slot or the slot is still empty."""
        if i >= self.slots:
            return None
        state, height, width, channels = (int(v) for v in self._table[i])
        if state != 1:
            return None
        start = int(self._offsets[i])
        pixels = self._pixels[start : start + height * width * max(channels, 1)]
        # a copy: the caller's augmentation may write into it, and the slot must stay as read
        return pixels.reshape((height, width, channels) if channels else (height, width)).copy()

    def put(self, i: int, image: np.ndarray) -> bool:
        """Keep ``image`` (uint8, 2-D or 3-D) for sample ``i`` if it has a slot large enough; whether it was kept."""
        if i >= self.slots or image.dtype != np.uint8 or image.ndim not in (2, 3) or image.nbytes > self._sizes[i]:
            return False
        start = int(self._offsets[i])
        self._pixels[start : start + image.nbytes] = np.ascontiguousarray(image).reshape(-1)
        height, width = image.shape[:2]
        self._table[i, 1:] = (height, width, image.shape[2] if image.ndim == 3 else 0)
        self._table[i, 0] = 1  # last: the slot counts as full only once its pixels are there
        return True

    def __getstate__(self) -> dict[str, Any]:
        # A mapping cannot be pickled: a worker that was not forked builds its own, empty and private.
        return {"slot_bytes": self._all_sizes, "budget": self.private_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["slot_bytes"], state["budget"])  # type: ignore[misc]
        self.shared = False

    def __repr__(self) -> str:
        return (
            f"ImageCache({self.slots} of {len(self._all_sizes)} samples, {self.nbytes / 2**20:.1f} MiB of slots, "
            f"{'shared' if self.shared else 'private'})"
        )

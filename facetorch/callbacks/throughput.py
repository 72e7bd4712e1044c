"""TrainThroughput: training images per second and peak memory of a run, logged each epoch.

Add it to a run from the command line::

    python tools/train.py --config CFG --trainer.callbacks+=facetorch.callbacks.TrainThroughput

Logged per epoch (``metrics.csv``), and printed at the end of fitting:

- ``train_img_per_s``: images of the epoch's training batches over the time from the epoch's start
  to its last batch (data loading, forward, backward and step; validation excluded), per rank;
- ``train_loader_wait``: the share of that time spent between batches, waiting for the next one
  (the loader, plus Lightning's own bookkeeping): near 0 when the loader keeps the model busy;
- ``peak_rss_mb``: the training process's peak resident memory (the kernel's ``VmHWM``);
- ``peak_tree_pss_mb``: the largest total proportional set size (PSS) seen, over the process and its
  loader workers, sampled every ``every_n_batches`` batches. PSS counts a page shared by n processes
  as 1/n in each, so memory that workers share (the image cache, the forked parent) counts once;
  adding the workers' RSS would count it once per worker.

Linux only (``/proc``); elsewhere the memory keys are left out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["TrainThroughput", "process_tree_pss", "peak_rss"]


def _status_kb(pid: int | str, field: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def peak_rss(pid: int | str = "self") -> Optional[int]:
    """Peak resident set size of a process in bytes (``VmHWM``), or ``None`` off Linux."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb * 1024


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def process_tree_pss(pid: Optional[int] = None) -> Optional[int]:
    """Total PSS in bytes of a process and all its descendants (loader workers), or ``None`` off Linux."""
    root = os.getpid() if pid is None else pid
    if not Path(f"/proc/{root}/smaps_rollup").exists():
        return None
    total, todo, seen = 0, [root], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _pss(current)
        todo += _children(current)
    return total


class TrainThroughput(pl.Callback):
    """Log training images per second and peak memory each epoch (see the module docstring).

    Args:
        every_n_batches: How often the process tree's PSS is sampled.
    """

    def __init__(self, every_n_batches: int = 20) -> None:
        super().__init__()
        self.every_n_batches = max(1, int(every_n_batches))
        self._start = 0.0
        self._last = 0.0
        self._images = 0
        self._wait = 0.0
        self.peak_tree_pss = 0
        self.history: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.perf_counter()
        self._images = 0
        self._wait = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._wait += time.perf_counter() - self._last  # since the previous batch ended: fetching this one

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self._images += _batch_images(batch)
        self._last = time.perf_counter()
        if batch_idx % self.every_n_batches == 0:
            self._sample()

    def _sample(self) -> None:
        pss = process_tree_pss()
        if pss is not None:
            self.peak_tree_pss = max(self.peak_tree_pss, pss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sample()
        seconds = max(self._last - self._start, 1e-9)
        values = {"train_img_per_s": self._images / seconds, "train_loader_wait": self._wait / seconds}
        rss = peak_rss()
        if rss is not None:
            values["peak_rss_mb"] = rss / 2**20
            values["peak_tree_pss_mb"] = self.peak_tree_pss / 2**20
        self.history.append({**values, "images": float(self._images), "seconds": seconds, "wait": self._wait})
        for key, value in values.items():
            pl_module.log(key, value, on_step=False, on_epoch=True, rank_zero_only=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.history:
            return
        later = self.history[1:] or self.history  # the first epoch also starts the loader workers
        images, seconds = sum(h["images"] for h in later), sum(h["seconds"] for h in later)
        wait = sum(h["wait"] for h in later) / max(seconds, 1e-9)
        last = self.history[-1]
        memory = ""
        if "peak_rss_mb" in last:
            memory = f", peak RSS {last['peak_rss_mb']:.0f} MB, peak PSS with loader workers {last['peak_tree_pss_mb']:.0f} MB"
        rank_zero_info(
            f"TrainThroughput: {images / max(seconds, 1e-9):.1f} img/s per rank over epochs "
            f"{len(self.history) - len(later)}..{len(self.history) - 1} ({wait:.0%} of it waiting for batches){memory}"
        )


def _batch_images(batch: Any) -> int:
    """Images in a training batch: (images, labels), or (img1, img2, same, ...) pairs (two images each)."""
    if isinstance(batch, (list, tuple)) and batch and hasattr(batch[0], "shape"):
        pairs = len(batch) >= 3 and hasattr(batch[1], "shape") and getattr(batch[1], "ndim", 0) == batch[0].ndim
        return int(batch[0].shape[0]) * (2 if pairs else 1)
    if hasattr(batch, "shape"):
        return int(batch.shape[0])
    return 0

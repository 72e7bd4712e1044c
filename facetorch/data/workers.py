"""The DataModule's loaders: worker processes that persist across epochs, and how they start (``data.worker_start``)."""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["WorkerStart", "worker_loader", "worker_start_method"]

WorkerStart = Literal["auto", "fork", "forkserver", "spawn"]


def worker_start_method(num_workers: int, choice: WorkerStart = "auto") -> Optional[str]:
    """How loader workers start: ``choice``, or for ``"auto"``, ``"forkserver"`` in a rank of a multi-process run.

    Why: a DDP rank already runs other threads when its loaders start their workers (gloo's or
    NCCL's, the validation loader's queue feeder), and a process forked while one of them holds
    CPython's thread-state lock waits for it for ever, inside ``os.fork`` (Python 3.11,
    ``PyOS_AfterFork_Child``; 3 of 707 two-rank CPU runs here, the training stopped with it). The
    fork server is a fresh process without those threads, and forks the workers from there. The
    price: workers get a pickled copy of the dataset (the image cache is then private to each
    worker, see :mod:`facetorch.data.cache`) and the server starts once per rank (a few seconds).
    ``None``: the platform's default (fork on Linux).
    """
    if num_workers == 0:
        return None
    if choice != "auto":
        return choice
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return "forkserver" if distributed and torch.distributed.get_world_size() > 1 else None


def worker_loader(dataset: Dataset, num_workers: int, worker_start: WorkerStart = "auto", **options: Any) -> DataLoader:
    """A ``DataLoader`` of ``dataset`` whose workers persist across epochs and start as :func:`worker_start_method` says.

    Args:
        dataset: The samples.
        num_workers: Worker processes (0: load in this process).
        worker_start: ``data.worker_start``.
        **options: The other ``DataLoader`` arguments (batch size or batch sampler, shuffling, ...).
    """
    return DataLoader(
        dataset,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU without waiting
        multiprocessing_context=worker_start_method(num_workers, worker_start),
        **options,
    )

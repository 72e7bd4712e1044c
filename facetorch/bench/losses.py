"""Speed and peak memory of facetorch's triplet losses against pytorch-metric-learning's.

``python tools/benchmark.py --task losses`` runs :func:`run_losses`. Each row is one batch size
and one mining rule that both libraries define the same way:

- ``batch_all``: facetorch ``TripletLoss(mining="batch_all")`` against pytorch-metric-learning's
  ``TripletMarginLoss`` over all triplets (its default ``AvgNonZeroReducer``: the mean of the
  non-zero triplet losses, as facetorch);
- ``batch_hard``: ``TripletLoss(mining="batch_hard")`` against ``BatchHardMiner`` +
  ``TripletMarginLoss`` with a ``MeanReducer`` (the mean over anchors);
- ``semi_hard`` (FaceNet's rule, as TF-addons' ``triplet_semihard_loss``) has no equivalent in
  pytorch-metric-learning, so its row times facetorch alone.

Both use squared Euclidean distances, margin 0.2, unit embeddings of 128 dimensions and
P x K labels (K = 4). A step is the forward and the backward pass from fixed embeddings.

Time: the two libraries alternate step by step in one process (order reversed every round),
and the medians are reported with their ratio.

Peak memory, two measures (``tracemalloc`` does not see torch's allocations, and torch's CPU
allocator keeps no statistics):

- ``*_peak_mb``: the peak of the bytes held by live tensors during one step (forward, saved
  activations, backward), tracked tensor by tensor by torch's ``MemTracker`` (a dispatch mode
  that follows every storage until it is freed); on CUDA, ``torch.cuda.max_memory_allocated``.
- ``*_rss_mb`` (CPU): each (library, mining, batch) runs once in a fresh Python process; the
  kernel's peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) after one
  step, minus the resident size just before it (embeddings, code and a small warm-up step already
  in place): what the step costs the machine, allocator caching included. It is coarse for small
  batches (the allocator serves them from memory it already holds: 0 MB).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from facetorch.losses import TripletLoss

BATCH_SIZES = (64, 256, 1024, 4096)
MARGIN = 0.2
DIM = 128
K = 4  # images per identity in a P x K batch
COMPARED = ("batch_all", "batch_hard")  # the rules both libraries define the same way
LossFn = Callable[[Tensor, Tensor], Tensor]


def pk_batch(batch: int, dim: int = DIM, seed: int = 0, device: str = "cpu") -> tuple[Tensor, Tensor]:
    """Unit embeddings (batch, dim) and P x K labels (K = 4), fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    labels = torch.arange(batch) // K
    return x.to(device), labels.to(device)


def loss_fn(library: str, mining: str) -> LossFn:
    """The triplet loss of ``library`` (``facetorch`` or ``pml``) for ``mining``, as a function."""
    if library == "facetorch":
        return TripletLoss(MARGIN, mining, squared=True)  # type: ignore[arg-type]
    from pytorch_metric_learning import distances, losses, miners, reducers

    distance = distances.LpDistance(normalize_embeddings=False, power=2)
    if mining == "batch_all":
        return losses.TripletMarginLoss(margin=MARGIN, distance=distance)
    if mining == "batch_hard":
        miner = miners.BatchHardMiner(distance=distance)
        loss = losses.TripletMarginLoss(margin=MARGIN, distance=distance, reducer=reducers.MeanReducer())
        return lambda x, labels: loss(x, labels, miner(x, labels))
    raise ValueError(f"pytorch-metric-learning has no triplet rule equal to facetorch's {mining!r}")


def step(fn: LossFn, x: Tensor, labels: Tensor) -> float:
    """One forward + backward from the fixed embeddings ``x``; returns the loss value."""
    embeddings = x.detach().clone().requires_grad_(True)
    loss = fn(embeddings, labels)
    loss.backward()
    return float(loss.detach())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_alternating(fns: dict[str, LossFn], x: Tensor, labels: Tensor, rounds: int, device: str) -> dict[str, float]:
    """Median ms per step of each function, alternating them step by step (order reversed each round)."""
    names = list(fns)
    for name in names:  # warm-up: kernels, thread pools, allocator
        step(fns[name], x, labels)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            start = time.perf_counter()
            step(fns[name], x, labels)
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in times.items()}


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field} line")


def live_tensor_peak_bytes(library: str, mining: str, batch: int, device: str = "cpu") -> int | None:
    """Peak bytes of live tensors during one step: the CUDA allocator's peak, or torch's ``MemTracker`` on a CPU.

    ``None`` when ``MemTracker`` (a private torch tool) is missing in this torch version.
    """
    x, labels = pk_batch(batch, device=device)
    fn = loss_fn(library, mining)
    step(fn, x[: 4 * K], labels[: 4 * K])
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(fn, x, labels)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:
        return None
    tracker = MemTracker()
    with tracker:
        step(fn, x, labels)
    return int(sum(kinds.get("Total", 0) for kinds in tracker.get_tracker_snapshot("peak").values()))


def probe_rss_bytes(library: str, mining: str, batch: int) -> int:
    """The rise of this process's resident set over one step on a CPU (run it in a fresh process)."""
    x, labels = pk_batch(batch)
    fn = loss_fn(library, mining)
    step(fn, x[: 4 * K], labels[: 4 * K])  # loads the code paths, so only the step itself is measured
    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
    before = _status_kb("VmRSS")
    step(fn, x, labels)
    return (_status_kb("VmHWM") - before) * 1024


def rss_bytes(library: str, mining: str, batch: int, timeout: float = 900.0) -> int | None:
    """:func:`probe_rss_bytes` in a fresh process; ``None`` when that process failed (e.g. out of memory)."""
    code = (
        "import json; from facetorch.bench.losses import probe_rss_bytes; "
        f"print(json.dumps(probe_rss_bytes({library!r}, {mining!r}, {batch})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    return int(json.loads(result.stdout.strip().splitlines()[-1]))


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def _rounds_for(ms: float, rounds: int) -> int:
    """Fewer rounds for slow steps (at least 3), so a 4096 batch does not take minutes."""
    return max(3, min(rounds, int(20_000 / max(ms, 1.0))))


def run_losses(
    batch_sizes: Sequence[int] = BATCH_SIZES, rounds: int = 7, accelerator: str = "cpu", memory: bool = True
) -> dict[str, Any]:
    """Time (and measure the memory of) facetorch's and pytorch-metric-learning's triplet losses.

    Args:
        batch_sizes: Batch sizes B (multiples of 4: P x 4 labels).
        rounds: Timed steps per library and row, at most (fewer for slow rows, at least 3).
        accelerator: ``cpu`` or ``gpu`` (CUDA).
        memory: Also measure peak memory (on a CPU, one fresh process per library, mining and batch).

    Returns:
        ``{"device", "rows": [...]}``; each row has ``batch``, ``mining``, the ms per step of each
        library and ``speedup`` (pml ms / facetorch ms), the live-tensor peak MB of each and
        ``memory_ratio`` (pml / facetorch), the resident-set rise of each (CPU), and ``abs_diff``
        of the two loss values.
    """
    device = "cuda" if accelerator == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--accelerator gpu: no CUDA device is available here")
    rows: list[dict[str, Any]] = []
    for batch in batch_sizes:
        if batch % K:
            raise ValueError(f"--batch_sizes: expected multiples of {K} (P x {K} labels), got {batch}")
        x, labels = pk_batch(batch, device=device)
        for mining in (*COMPARED, "semi_hard"):
            fns = {"facetorch": loss_fn("facetorch", mining)}
            if mining in COMPARED:
                fns["pml"] = loss_fn("pml", mining)
            values = {name: step(fn, x, labels) for name, fn in fns.items()}
            first = time_alternating(fns, x, labels, 1, device)  # a rough time, to size the rounds
            ms = time_alternating(fns, x, labels, _rounds_for(max(first.values()), rounds), device)
            row: dict[str, Any] = {"batch": batch, "mining": mining, "facetorch_ms": round(ms["facetorch"], 2)}
            if "pml" in ms:
                row.update(pml_ms=round(ms["pml"], 2), speedup=round(ms["pml"] / ms["facetorch"], 2),
                           abs_diff=abs(values["pml"] - values["facetorch"]))  # fmt: skip
            if memory:
                peaks = {name: live_tensor_peak_bytes(name, mining, batch, device) for name in fns}
                for name, value in peaks.items():
                    row[f"{name}_peak_mb"] = _mb(value)
                if peaks.get("pml") and peaks["facetorch"]:
                    row["memory_ratio"] = round(peaks["pml"] / peaks["facetorch"], 2)
                if device == "cpu":
                    for name in fns:
                        row[f"{name}_rss_mb"] = _mb(rss_bytes(name, mining, batch))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {"task": "losses", "device": name, "dim": DIM, "k": K, "margin": MARGIN, "rows": rows}

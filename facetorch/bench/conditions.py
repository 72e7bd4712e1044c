"""The conditions a benchmark ran in, recorded beside its numbers.

Throughput on a shared machine moves by 2x or more with the load of other jobs, so every
benchmark result carries the machine's state at its start and end, and a warning when the machine
was busy: then its ratios are doubtful and its absolute numbers meaningless.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Optional

import torch

# CPU features that decide bf16 speed on x86 (AMX tiles and AVX-512 BF16) and fp32 vector width.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
BUSY_LOAD_PER_CORE = 0.5  # 1-minute load average per core above which the machine counts as busy


def _cpuinfo_field(name: str) -> Optional[str]:
    """The value of the first ``name`` line of /proc/cpuinfo (Linux), or ``None``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the platform's processor string."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is not readable)."""
    present = set((_cpuinfo_field("flags") or "").split())
    return [flag for flag in CPU_FLAGS if flag in present]


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def start_conditions(accelerator: str = "cpu") -> dict[str, Any]:
    """The machine's state before a benchmark: what ran it, on how many threads, and how loaded."""
    conditions: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_start": load_average(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        conditions["gpu"] = torch.cuda.get_device_name(0)
        conditions["gpu_count"] = torch.cuda.device_count()
        conditions["cuda"] = torch.version.cuda
    return conditions


def finish_conditions(conditions: dict[str, Any]) -> dict[str, Any]:
    """``conditions`` with the load at the end and, when other work shared the machine, a ``warning``.

    The load at the end includes the benchmark's own threads, so only what exceeds them counts.
    """
    done = dict(conditions, load_average_end=load_average())
    cores = done.get("cores") or 1
    allowance = BUSY_LOAD_PER_CORE * cores
    start, end = done.get("load_average_start"), done["load_average_end"]
    others = [value for value in (start, None if end is None else end - done["torch_threads"]) if value is not None]
    if others and max(others) > allowance:
        done["warning"] = (
            f"other work shared the machine (1-minute load average {start} at the start, {end} at the end, "
            f"on {cores} cores, {done['torch_threads']} of them this benchmark's threads): treat these numbers "
            "as doubtful and measure again on an idle machine"
        )
    return done

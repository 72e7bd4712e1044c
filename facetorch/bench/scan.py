"""How fast a folder of many files is indexed: facetorch's scanner against the per-entry ``stat`` listing it replaced.

``python tools/benchmark.py --task scan --data_root DIR`` runs :func:`run_scan` on an
``identity_folders`` tree (make a large one with ``tools/synthetic_faces.py --empty``). The two
variants alternate (order reversed each round) and the medians are reported:

- ``facetorch``: :func:`facetorch.data.datasets.scan_identity_folders`: one ``os.scandir`` per
  folder, file types from the directory listing (``d_type``), the paths kept as one byte buffer;
- ``per_entry_stat``: the listing facetorch used before, ``Path.iterdir()`` with ``is_file()`` (a
  ``stat`` call) on every entry and a list of ``Path`` objects.

Both see the same files from the operating system's cache after the first round; a cold scan
(after a reboot, or on network storage) is slower for both.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

from facetorch.data.datasets import scan_identity_folders
from facetorch.data.files import IMAGE_EXTENSIONS


def per_entry_stat_scan(root: Path) -> list[Path]:
    """The previous listing: ``iterdir`` and one ``is_file`` (``stat``) per entry, sorted ``Path`` lists."""
    def is_image(path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")

    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    return [path for folder in folders for path in sorted(p for p in folder.iterdir() if is_image(p))]


def run_scan(root: str, rounds: int = 3) -> dict[str, Any]:
    """Seconds to index ``root`` with each variant (medians of ``rounds``), files per second and index memory."""
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data_root {root!r} is not a folder (make one with tools/synthetic_faces.py --empty)")
    variants = {"facetorch": lambda: scan_identity_folders(folder), "per_entry_stat": lambda: per_entry_stat_scan(folder)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, int] = {}
    for r in range(max(1, rounds)):
        for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            start = time.perf_counter()
            result = variants[name]()
            times[name].append(time.perf_counter() - start)
            sizes[name] = len(result)
    if len(set(sizes.values())) != 1:
        raise RuntimeError(f"the two scans found different numbers of files: {sizes}")
    tracemalloc.start()
    index = scan_identity_folders(folder)
    ours = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    paths = per_entry_stat_scan(folder)
    theirs = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del paths
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "task": "scan", "root": str(folder), "files": len(index), "identities": len(index.class_names), "rounds": rounds,
        "facetorch_s": round(medians["facetorch"], 3), "per_entry_stat_s": round(medians["per_entry_stat"], 3),
        "speedup": round(medians["per_entry_stat"] / medians["facetorch"], 2),
        "facetorch_files_per_s": round(len(index) / medians["facetorch"]),
        "index_mb": round(ours / 2**20, 1), "path_list_mb": round(theirs / 2**20, 1),
    }  # fmt: skip

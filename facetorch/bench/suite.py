"""Everything worth measuring on a GPU machine, in one command and one JSON.

``python tools/benchmark.py --accelerator gpu --all --output gpu.json`` runs the CUDA tests
(``pytest -m cuda``, in a subprocess) and then every task's training and inference throughput,
with torch.compile for two of them, and the Grad-CAM benchmark with its peers. Data comes from
``../shared/data`` where it exists, else from small generated sets (:mod:`facetorch.data.synthetic`),
so that a bare GPU machine with only the repository can run it. It is sized for a short slot:
about 8 minutes on one GPU.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from facetorch.bench.gradcam import run_gradcam
from facetorch.bench.training import run
from facetorch.data.synthetic import write_identity_folders, write_labelme_folder

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_DATA = {"identity": "orl_faces", "embedding": "lfw_devtrain/images", "detector": "face_boxes_dev"}
COMPILED = ("face_vgg", "embedding")  # torch.compile costs a minute per task: measured on two


def cuda_tests(timeout: int = 300) -> dict[str, Any]:
    """Run ``pytest -m cuda`` in a subprocess; the counts from its summary line and its exit code."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs"],
            cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"returncode": None, "error": f"pytest -m cuda ran past {timeout} s", "seconds": timeout}
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {key: int(value) for value, key in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    report: dict[str, Any] = {"returncode": done.returncode, "summary": summary, **counts,
                              "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    if done.returncode not in (0, 5):  # 5: nothing collected
        report["output_tail"] = (done.stdout + done.stderr)[-4000:]
    return report


def _data_roots(work: Path) -> dict[str, Optional[str]]:
    """A data folder per task: the real one from ../shared/data when present, else a generated one."""
    roots: dict[str, Optional[str]] = {"face_vgg": None}  # face_vgg has built-in data
    for task, folder in REAL_DATA.items():
        if (SHARED_DATA / folder).is_dir():
            roots[task] = str(SHARED_DATA / folder)
        elif task == "detector":
            roots[task] = str(write_labelme_folder(work / "boxes", count=64, size=(160, 160), negatives=8))
        elif not (work / "ids").is_dir():  # identity and embedding share 40 generated people of 10 images
            roots[task] = str(write_identity_folders(work / "ids", identities=40, per_identity=10, size=(96, 96)))
        else:
            roots[task] = str(work / "ids")
    return roots


def run_all(
    accelerator: str = "gpu",
    repeats: int = 3,
    batch_size: int = 64,
    with_tests: bool = True,
    tasks: Sequence[str] = ("face_vgg", "identity", "embedding", "detector"),
    steps: int = 12,
    inference_batch_sizes: tuple[int, ...] = (1, 64),
    compiled: Sequence[str] = COMPILED,
    gradcam: tuple[int, int] = (32, 224),
) -> dict[str, Any]:
    """The CUDA tests and every task's numbers, as one flat-per-task dict.

    Args:
        accelerator: ``gpu`` (the point of it) or ``cpu`` (to try the command here).
        repeats: Alternating rounds per measurement.
        batch_size: Training batch size of every task.
        with_tests: Run ``pytest -m cuda`` first.
        tasks: The training setups to measure (with their inference rows).
        steps: Training steps per measurement (3 of them warm-up).
        inference_batch_sizes: Batch sizes of the inference rows.
        compiled: Tasks also measured with ``torch.compile``.
        gradcam: Batch size and image size of the Grad-CAM benchmark (``(0, 0)`` leaves it out).

    Returns:
        ``{"task": "all", "cuda_tests": {...}, "face_vgg": {...}, ..., "gradcam": {...}}``; a task that
        fails records its error instead of stopping the others.
    """
    result: dict[str, Any] = {"task": "all", "accelerator": accelerator}
    if with_tests:
        result["cuda_tests"] = cuda_tests()
    with tempfile.TemporaryDirectory(prefix="facetorch_bench_") as work:
        roots = _data_roots(Path(work))
        for task in tasks:
            root = roots[task]
            start = time.perf_counter()
            try:
                result[task] = run(task, batch_size, steps=steps, warmup=min(3, steps - 1), repeats=repeats,
                                   accelerator=accelerator, data_root=root, compile=task in compiled,
                                   inference_batch_sizes=inference_batch_sizes)  # fmt: skip
            except Exception as error:  # one failed task must not lose the numbers of the others
                result[task] = {"error": f"{type(error).__name__}: {error}"}
            result[task]["seconds"] = round(time.perf_counter() - start, 1)
            result[task]["data_root"] = root or "built-in"
    if gradcam[0] > 0:
        start = time.perf_counter()
        try:
            result["gradcam"] = run_gradcam(gradcam[0], gradcam[1], repeats, 1, accelerator)
        except Exception as error:  # as above
            result["gradcam"] = {"error": f"{type(error).__name__}: {error}"}
        result["gradcam"]["seconds"] = round(time.perf_counter() - start, 1)
    return result

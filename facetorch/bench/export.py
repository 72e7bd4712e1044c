"""Exported models against PyTorch eager: onnxruntime on the CPU vs fp32 and bf16 + channels-last.

For each task, the network of its config (random weights, seed 0) runs the same fixed batch of
random images three ways, alternately in this process: the exported ONNX file in onnxruntime's
CPU provider (as many intra-op threads as torch uses), the same graph in PyTorch eager fp32, and
in PyTorch eager with bf16 autocast and channels-last memory. The graph is the export's own
(normalisation and output heads included), so all three compute the same thing. Reported: the
medians in images/s, their ratios, and the largest output difference of onnxruntime and bf16
from fp32.

The exporter is handed in (``prepare``) because ``facetorch.inference`` is a room on this floor:
``tools/benchmark.py --task export`` passes :func:`facetorch.inference.export.export_graph` and
:func:`~facetorch.inference.export.export_onnx`.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from facetorch.bench.training import CONFIGS, config_section, device_name
from facetorch.data.transforms import InputSpec
from facetorch.tasks import EmbeddingTask, FaceClassifierTask, FaceDetectorTask, FaceTask, IdentityTask

# name -> (config, task class, classes the head is built for: ORL's 40 people for identity)
EXPORT_TASKS: dict[str, tuple[str, type[FaceTask], int]] = {
    "face_vgg": ("face_vgg.yaml", FaceClassifierTask, 2),
    "identity": ("identity_resnet50.yaml", IdentityTask, 40),
    "embedding": ("embedding_triplet.yaml", EmbeddingTask, 2),
    "detector": ("detector_vgg16.yaml", FaceDetectorTask, 2),
}
# prepare(task, spec, folder) -> (the export's graph as an nn.Module, the ONNX file written in folder)
Prepare = Callable[[FaceTask, InputSpec, Path], tuple[nn.Module, Path]]


def task_from_config(config: str | Path, task_class: type[FaceTask], num_classes: int) -> tuple[FaceTask, InputSpec]:
    """The task of a config's ``model`` section with random weights (seed 0), and the input of its ``data`` section."""
    model_args = config_section(config, "model")
    data_args = config_section(config, "data")
    spec = InputSpec.from_hparams(data_args)
    model_args.update(num_classes=num_classes, in_channels=spec.channels, channels_last=False)
    for key in ("pretrained", "weights_path"):  # a benchmark of speed needs no trained weights
        model_args.pop(key, None)
    torch.manual_seed(0)
    return task_class(**model_args).eval(), spec


def _outputs(result: Any) -> list[np.ndarray]:
    items = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(t.float().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32) for t in items]


def _timed(run: Callable[[], Any], steps: int) -> float:
    """Seconds per call of ``run``, over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - start) / steps


def measure_task(
    name: str,
    task: FaceTask,
    spec: InputSpec,
    prepare: Prepare,
    folder: Path,
    batch_size: int = 32,
    steps: int = 12,
    warmup: int = 2,
    repeats: int = 3,
) -> dict[str, Any]:
    """One task's images/s for onnxruntime, eager fp32 and eager bf16 + channels-last, and their ratios."""
    import onnxruntime as ort

    graph, onnx_path = prepare(task, spec, folder)
    graph = graph.eval()
    bf16 = copy.deepcopy(graph).to(memory_format=torch.channels_last).eval()
    generator = torch.Generator().manual_seed(0)
    height, width = spec.image_size
    images = torch.randint(0, 256, (batch_size, spec.channels, height, width), generator=generator).float()
    images_cl = images.contiguous(memory_format=torch.channels_last)
    feed = {"images": images.numpy()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # onnxruntime's workers spin-wait after each run by default, which would steal the cores from the
    # PyTorch variant timed right after it: off, so each variant has the machine to itself.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run_ort() -> Any:
        return session.run(None, feed)

    def run_fp32() -> Any:
        with torch.inference_mode():
            return graph(images)

    def run_bf16() -> Any:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return bf16(images_cl)

    variants = {"onnxruntime": run_ort, "eager_fp32": run_fp32, "eager_bf16_channels_last": run_bf16}
    reference = _outputs(run_fp32())
    differences = {}
    for key, run in (("onnxruntime", run_ort), ("eager_bf16_channels_last", run_bf16)):
        got = _outputs(run())
        differences[key] = max(float(np.abs(a - b).max()) for a, b in zip(got, reference))
    for run in variants.values():  # untimed: onnxruntime's first runs and oneDNN's kernel choice
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {key: [] for key in variants}
    order = list(variants)
    for repeat in range(repeats):  # alternate, reversing the order every other round
        for key in order if repeat % 2 == 0 else order[::-1]:
            samples[key].append(batch_size / _timed(variants[key], steps))
    median = {key: statistics.median(values) for key, values in samples.items()}
    return {
        f"{name}_onnxruntime_img_s": round(median["onnxruntime"], 2),
        f"{name}_eager_fp32_img_s": round(median["eager_fp32"], 2),
        f"{name}_eager_bf16_channels_last_img_s": round(median["eager_bf16_channels_last"], 2),
        f"{name}_onnxruntime_vs_fp32": round(median["onnxruntime"] / median["eager_fp32"], 3),
        f"{name}_onnxruntime_vs_bf16": round(median["onnxruntime"] / median["eager_bf16_channels_last"], 3),
        f"{name}_bf16_vs_fp32": round(median["eager_bf16_channels_last"] / median["eager_fp32"], 3),
        f"{name}_onnxruntime_max_abs_diff": differences["onnxruntime"],
        f"{name}_bf16_max_abs_diff": differences["eager_bf16_channels_last"],
        f"{name}_input": [spec.channels, height, width],
    }


def run_export(
    prepare: Prepare,
    tasks: Optional[Sequence[str]] = None,
    batch_size: int = 32,
    steps: int = 12,
    warmup: int = 2,
    repeats: int = 3,
    configs: str | Path = CONFIGS,
    setups: Optional[dict[str, tuple[str, type[FaceTask], int]]] = None,
) -> dict[str, Any]:
    """Measure every task (or ``tasks``) of ``setups`` (default :data:`EXPORT_TASKS`, from ``configs``).

    Returns:
        A flat dict: per task ``<task>_onnxruntime_vs_fp32``, ``<task>_onnxruntime_vs_bf16``,
        ``<task>_bf16_vs_fp32`` (> 1: the first is faster), the images/s medians, the output
        differences from fp32, and the device.
    """
    setups = dict(EXPORT_TASKS if setups is None else setups)
    names = list(setups) if tasks is None else list(tasks)
    unknown = sorted(set(names) - set(setups))
    if unknown:
        raise ValueError(f"Unknown export benchmark tasks {unknown}; expected names from {sorted(setups)}")
    import onnxruntime

    result: dict[str, Any] = {
        "task": "export", "device": device_name("cpu"), "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__, "batch_size": batch_size, "steps": steps, "warmup": warmup, "repeats": repeats,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="facetorch-bench-export-") as folder:
        for name in names:
            config, task_class, num_classes = setups[name]
            task, spec = task_from_config(Path(configs) / config, task_class, num_classes)
            result.update(measure_task(name, task, spec, prepare, Path(folder), batch_size, steps, warmup, repeats))
    return result

"""Inference throughput of a task against a plain PyTorch eval loop over the same network.

For each batch size (1, a video stream's case, and 64) and precision (fp32, and bf16 autocast
with channels-last memory), facetorch's path (the task in eval mode, as the gallery, detection
and export call it) and a plain loop over the bare ``nn.Module`` run alternately in one process,
with the order reversed every other round. With ``compile``, the task's ``torch.compile`` path is
timed too, and its outputs are checked against eager.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from facetorch.bench.setup import BenchmarkSetup


def _first_tensor(output: Any) -> Tensor:
    """The main output of a forward: the tensor itself, or the first of a tuple (the detector's logit)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _images(setup: BenchmarkSetup, count: int) -> Tensor:
    """``count`` images from the setup's fixed batches (repeated when there are fewer)."""
    pool = torch.cat([batch[0] for batch in setup.batches])
    repeats = -(-count // len(pool))
    return pool.repeat(repeats, 1, 1, 1)[:count].contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[Tensor], Any], images: Tensor, calls: int, device: torch.device) -> float:
    """Images/s of ``calls`` calls of ``fn`` on ``images`` (after one untimed call)."""
    fn(images)
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn(images)
    _sync(device)
    return calls * len(images) / (time.perf_counter() - start)


def _call(model: nn.Module, images: Tensor, bf16: bool, channels_last: bool = False) -> Any:
    """One inference call: no autograd, bf16 autocast when asked."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(images)


def inference_throughput(
    setup: BenchmarkSetup,
    accelerator: str = "cpu",
    batch_sizes: tuple[int, ...] = (1, 64),
    repeats: int = 3,
    calls: dict[int, int] | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """Images/s of the task's inference and of a plain eval loop, per batch size and precision.

    Args:
        setup: A training benchmark setup (its task and plain model, and its images).
        accelerator: ``cpu`` or ``gpu``.
        batch_sizes: Batch sizes to time.
        repeats: Alternating rounds; medians are reported.
        calls: Timed calls per round for each batch size (default: 40 at batch 1, 4 at batch 64).
        compile: Also time the task with ``compile: true`` and check its outputs against eager.

    Returns:
        A flat dict: ``infer_<precision>_b<batch>_{facetorch,plain}_img_s`` and
        ``infer_<precision>_b<batch>_facetorch_vs_plain`` (1.0: no overhead); with ``compile``,
        ``infer_fp32_b<batch>_compiled_img_s``, ``..._compiled_vs_eager`` and
        ``compiled_max_abs_diff``.
    """
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else "cpu")
    calls = calls or {batch: max(2, 64 // batch) if batch < 64 else 4 for batch in batch_sizes}
    result: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
        torch.manual_seed(0)
        task = setup.make_task(bf16).to(device).eval()  # channels-last weights with bf16, as configs train
        if bf16:
            task.to(memory_format=torch.channels_last)
        plain = task.model  # the bare network the task wraps
        variants: dict[str, Callable[[Tensor], Any]] = {
            "facetorch": lambda images, bf16=bf16, task=task: _call(task, images, bf16),
            "plain": lambda images, bf16=bf16, plain=plain: _call(plain, images, bf16, channels_last=bf16),
        }
        if compile and not bf16:
            compiled = setup.make_task(False)
            compiled.load_state_dict(task.state_dict())
            compiled = compiled.to(device).eval()
            compiled.compile_model = True
            variants["compiled"] = lambda images, model=compiled: _call(model, images, False)
        for batch in batch_sizes:
            images = _images(setup, batch).to(device)
            rates: dict[str, list[float]] = {key: [] for key in variants}
            for i in range(repeats):
                order = list(variants.items()) if i % 2 == 0 else list(variants.items())[::-1]
                for key, fn in order:
                    rates[key].append(_rate(fn, images, calls.get(batch, 4), device))
            medians = {key: statistics.median(values) for key, values in rates.items()}
            prefix = f"infer_{precision}_b{batch}"
            result[f"{prefix}_facetorch_img_s"] = round(medians["facetorch"], 2)
            result[f"{prefix}_plain_img_s"] = round(medians["plain"], 2)
            result[f"{prefix}_facetorch_vs_plain"] = round(medians["facetorch"] / medians["plain"], 3)
            if "compiled" in medians:
                result[f"{prefix}_compiled_img_s"] = round(medians["compiled"], 2)
                result[f"{prefix}_compiled_vs_eager"] = round(medians["compiled"] / medians["facetorch"], 3)
                eager_out = _first_tensor(variants["facetorch"](images)).float()
                compiled_out = _first_tensor(variants["compiled"](images)).float()
                diff = float((eager_out - compiled_out).abs().max())
                result["compiled_max_abs_diff"] = max(diff, result.get("compiled_max_abs_diff", 0.0))
    return result

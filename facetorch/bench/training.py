"""Throughput measurements as ratios against a baseline run in the same process.

This machine (and most shared machines) is noisy, so absolute images/s mean little across runs;
each measurement alternates the compared variants several times and reports medians and ratios.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from facetorch.bench.setup import BenchmarkSetup
from facetorch.bench.task_setups import (  # noqa: F401  (re-exported: the benchmark's tasks are named here)
    CONFIGS,
    SETUPS,
    config_callbacks,
    config_path,
    config_section,
    detector_setup,
    embedding_setup,
    face_vgg_setup,
    identity_setup,
)
from facetorch.data import FaceDataModule
from facetorch.tasks import EmbeddingTask


def device_name(accelerator: str) -> str:
    """A human name of the device that ran the benchmark."""
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _to(target: Any, device: torch.device) -> Any:
    if isinstance(target, dict):
        return {key: value.to(device, non_blocking=True) for key, value in target.items()}
    return target.to(device, non_blocking=True)


class _StepTimer(pl.Callback):
    """Wall time of training steps after ``warmup`` steps (synchronising CUDA before reading the clock)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: Optional[float] = None
        self.end: Optional[float] = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            _sync()
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        _sync()
        self.end = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _loader(batches: list[Any]) -> DataLoader:
    images = torch.cat([b[0] for b in batches])
    if isinstance(batches[0][1], dict):  # the detector: (images, {"label", "box"})
        keys = list(batches[0][1])
        columns = [torch.cat([b[1][key] for b in batches]) for key in keys]
        items = [(images[i], {key: column[i] for key, column in zip(keys, columns)}) for i in range(len(images))]
        return DataLoader(items, batch_size=len(batches[0][0]), shuffle=False)
    labels = torch.cat([b[1] for b in batches])
    return DataLoader(TensorDataset(images, labels), batch_size=len(batches[0][0]), shuffle=False)


def trainer_throughput(
    setup: BenchmarkSetup, accelerator: str, precision: str, channels_last: bool, warmup: int, compile: bool = False
) -> float:
    """Images/s of ``Trainer.fit`` on the fixed batches (no logging, checkpoints or progress bar)."""
    torch.manual_seed(0)
    task = setup.make_task(channels_last, compile=compile)
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer, *setup.make_callbacks()],
    )
    trainer.fit(task, train_dataloaders=_loader(setup.batches))
    timed = len(setup.batches) - warmup
    return timed * len(setup.batches[0][0]) / (timer.end - timer.start)


def plain_throughput(setup: BenchmarkSetup, device: torch.device, warmup: int) -> float:
    """Images/s of a plain PyTorch loop (forward, loss, backward, step) on the same model and batches."""
    from pytorch_lightning.callbacks import BaseFinetuning

    torch.manual_seed(0)
    task = setup.make_task(False)
    for callback in setup.make_callbacks():  # freeze what the config's fine-tuning freezes
        if isinstance(callback, BaseFinetuning):
            callback.freeze_before_training(task)
    model = setup.plain_model(task).to(device).train()
    optimizer = task.build_optimizer([p for p in model.parameters() if p.requires_grad])
    start = 0.0
    for i, batch in enumerate(_loader(setup.batches)):  # the same DataLoader the Trainer gets
        if i == warmup:
            _sync()
            start = time.perf_counter()
        batch = [batch[0].to(device, non_blocking=True), _to(batch[1], device)]
        loss = setup.plain_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync()
    timed = len(setup.batches) - warmup
    return timed * len(setup.batches[0][0]) / (time.perf_counter() - start)


def loader_throughput(data: FaceDataModule, batches: int) -> float:
    """Images/s the training DataLoader delivers (decode, augment, collate), without a model."""
    loader = data.train_dataloader()
    seen, start, iterator = 0, time.perf_counter(), _cycle(loader)
    for _ in range(batches):
        seen += len(next(iterator)[0])
    return seen / (time.perf_counter() - start)


def batch1_inference_fps(setup: BenchmarkSetup, device: torch.device, frames: int = 50, warmup: int = 5) -> float:
    """Images/s of the plain model in eval mode, one image at a time (a video stream's case)."""
    torch.manual_seed(0)
    model = setup.plain_model(setup.make_task(False)).to(device).eval()
    images = torch.cat([b[0] for b in setup.batches])
    with torch.inference_mode():
        for i in range(warmup + frames):
            if i == warmup:
                _sync()
                start = time.perf_counter()
            model(images[i % len(images)][None].to(device))
    _sync()
    return frames / (time.perf_counter() - start)


def _cycle(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def compiled_output_difference(setup: BenchmarkSetup, device: torch.device) -> float:
    """Max abs difference between the eager and the ``torch.compile`` forward of one task on a batch."""
    torch.manual_seed(0)
    eager = setup.make_task(False).to(device).eval()
    compiled = setup.make_task(False, compile=True).to(device).eval()
    compiled.load_state_dict(eager.state_dict())
    images = setup.batches[0][0].to(device)
    with torch.inference_mode():
        first, second = eager(images), compiled(images)
    if isinstance(first, (tuple, list)):  # the detector: (logit, box)
        return max(float((a.float() - b.float()).abs().max()) for a, b in zip(first, second))
    return float((first.float() - second.float()).abs().max())


def _chips(data: FaceDataModule, count: int) -> list[Any]:
    """``count`` prepared training images (aligned chips with ``data.align``), uint8, as the model's loader sees them."""
    dataset = data.datasets["train"]
    return [dataset.load(i % len(dataset)) for i in range(count)]


def _embed_rate(model: nn.Module, batches: list[torch.Tensor], bf16: bool, channels_last: bool) -> float:
    """Faces/s of ``model`` (eval, inference mode) over ``batches``: fp32 or bf16 autocast, channels-last or not."""
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in batches:
            model(batch.contiguous(memory_format=torch.channels_last) if channels_last else batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def _dlib_network(task: EmbeddingTask) -> Optional[Any]:
    """The network of the dlib library on the file the task was built from, when dlib (dlib-bin) is installed."""
    weights = task.hparams.get("weights_path")
    if task.hparams.get("backbone") != "dlib_resnet" or not (task.hparams.get("pretrained") or weights):
        return None
    try:
        import dlib
    except ImportError:
        return None
    from facetorch.models.dlib_files import RESNET_FILE, find_model_file

    return dlib.face_recognition_model_v1(str(find_model_file(RESNET_FILE, weights)))


def embedding_inference(setup: BenchmarkSetup, batch_size: int, batches: int, repeats: int) -> dict[str, Any]:
    """Faces/s of the embedding network on the same chips: fp32 (plain, channels-last), bf16 + channels-last, dlib's.

    The variants alternate (the order reversed every other round); medians are reported. dlib is
    timed only for ``backbone: dlib_resnet`` with pretrained weights, when ``import dlib`` works;
    the largest difference between the two networks' 128-d outputs on these chips comes with it.
    """
    torch.manual_seed(0)
    task = setup.make_task(False).eval()
    chips = _chips(setup.data, batch_size * batches)
    transform = setup.data.transform(train=False).finish  # the chips are prepared already
    tensors = torch.stack([transform(chip) for chip in chips])
    split = list(torch.split(tensors, batch_size))
    fp32 = task.model.eval()
    fast = copy.deepcopy(task.model).to(memory_format=torch.channels_last).eval()
    network = _dlib_network(task)
    samples: dict[str, list[float]] = {"fp32": [], "fp32_cl": [], "bf16": [], "dlib": []}
    for round_ in range(repeats + 1):  # the first round warms up
        order = ["fp32", "fp32_cl", "bf16", "dlib"][:: -1 if round_ % 2 else 1]
        for name in order:
            if name == "dlib":
                if network is None:
                    continue
                start = time.perf_counter()
                for i in range(0, len(chips), batch_size):
                    network.compute_face_descriptor(chips[i : i + batch_size])
                rate = len(chips) / (time.perf_counter() - start)
            else:
                rate = _embed_rate(fp32 if name == "fp32" else fast, split, bf16=name == "bf16", channels_last=name != "fp32")
            if round_:
                samples[name].append(rate)
    result: dict[str, Any] = {
        "embed_batch_size": batch_size,
        "embed_faces": len(chips),
        "embed_fp32_faces_s": round(statistics.median(samples["fp32"]), 2),
        "embed_fp32_channels_last_faces_s": round(statistics.median(samples["fp32_cl"]), 2),
        "embed_bf16_channels_last_faces_s": round(statistics.median(samples["bf16"]), 2),
    }
    result["embed_bf16_vs_fp32"] = round(result["embed_bf16_channels_last_faces_s"] / result["embed_fp32_faces_s"], 3)
    if samples["dlib"]:
        dlib_rate = statistics.median(samples["dlib"])
        result["dlib_faces_s"] = round(dlib_rate, 2)
        result["fp32_vs_dlib"] = round(result["embed_fp32_faces_s"] / dlib_rate, 2)
        result["fp32_channels_last_vs_dlib"] = round(result["embed_fp32_channels_last_faces_s"] / dlib_rate, 2)
        result["bf16_vs_dlib"] = round(result["embed_bf16_channels_last_faces_s"] / dlib_rate, 2)
        theirs = np.array([np.array(network.compute_face_descriptor(chip)) for chip in chips[:8]])
        with torch.inference_mode():
            pooled = fp32.backbone(tensors[:8]).mean(dim=(2, 3))
            ours = fp32.head.embedding(pooled).numpy()
        result["max_abs_diff_vs_dlib"] = float(np.abs(ours - theirs).max())
    return result


def run(
    task: str,
    batch_size: int = 32,
    steps: int = 12,
    warmup: int = 2,
    repeats: int = 3,
    accelerator: str = "cpu",
    data_root: Optional[str] = None,
    config: Optional[str] = None,
    compile: bool = False,
    inference_batch_sizes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Measure one task; every ratio compares variants measured alternately in this process.

    Args:
        task: A name in :data:`SETUPS`.
        batch_size: Training batch size.
        steps: Training steps per measurement, warm-up included.
        warmup: Untimed steps first (with ``compile``, they hold the compilation).
        repeats: Alternating rounds; medians are reported.
        accelerator: ``cpu`` or ``gpu``.
        data_root: The task's data folder (``None``: built-in data where the task has some).
        config: A config file whose model and data sections replace the task's own (``--config``).
        compile: Also train with ``compile: true`` (fp32) and check its outputs against eager.
        inference_batch_sizes: Also time inference at these batch sizes
            (:func:`facetorch.bench.inference.inference_throughput`); empty: no inference rows.

    Returns:
        A flat dict: ``trainer_vs_plain`` (Lightning overhead; 1.0 means none), ``bf16_speedup``
        (bf16-mixed + channels_last over fp32, both through the Trainer), ``loader_vs_model``
        (> 1 means the loader outpaces training), the medians in images/s, and the device; with
        ``compile``, ``compile_speedup`` and ``compiled_max_abs_diff``; with inference batch
        sizes, the ``infer_*`` keys.
    """
    if task not in SETUPS:
        raise ValueError(f"--task must be one of {sorted(SETUPS)}, got {task!r}")
    setup = SETUPS[task](batch_size, steps, data_root, config)
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else "cpu")
    variants: dict[str, Callable[[], float]] = {
        "plain_fp32": lambda: plain_throughput(setup, device, warmup),
        "trainer_fp32": lambda: trainer_throughput(setup, accelerator, "32-true", False, warmup),
        "trainer_bf16_cl": lambda: trainer_throughput(setup, accelerator, "bf16-mixed", True, warmup),
    }
    if compile:
        variants["trainer_compiled_fp32"] = lambda: trainer_throughput(setup, accelerator, "32-true", False, warmup, True)
    samples: dict[str, list[float]] = {key: [] for key in variants}
    for i in range(repeats):  # alternate, so slow phases of a noisy machine hit every variant
        order = list(variants.items()) if i % 2 == 0 else list(variants.items())[::-1]
        for key, measure in order:
            samples[key].append(measure())
    medians = {key: statistics.median(values) for key, values in samples.items()}
    loader = loader_throughput(setup.data, max(4, steps))
    extra: dict[str, Any] = {}
    if setup.batch1_inference:
        extra["inference_batch1_fps"] = round(batch1_inference_fps(setup, device), 2)
    if compile:
        extra["trainer_compiled_fp32_img_s"] = round(medians["trainer_compiled_fp32"], 2)
        extra["compile_speedup"] = round(medians["trainer_compiled_fp32"] / medians["trainer_fp32"], 3)
        extra["compiled_max_abs_diff"] = compiled_output_difference(setup, device)
    if inference_batch_sizes:
        from facetorch.bench.inference import inference_throughput

        extra.update(inference_throughput(setup, accelerator, inference_batch_sizes, repeats=repeats, compile=compile))
    if setup.embedding_inference and accelerator == "cpu":
        extra.update(embedding_inference(setup, batch_size, max(1, (steps - warmup) // 2), repeats))
    return {
        "task": task,
        "config": str(config_path(config)) if config else None,
        "device": device_name(accelerator),
        "batch_size": batch_size,
        "timed_steps": steps - warmup,
        "repeats": repeats,
        "plain_fp32_img_s": round(medians["plain_fp32"], 2),
        "trainer_fp32_img_s": round(medians["trainer_fp32"], 2),
        "trainer_bf16_channels_last_img_s": round(medians["trainer_bf16_cl"], 2),
        "trainer_vs_plain": round(medians["trainer_fp32"] / medians["plain_fp32"], 3),
        "bf16_speedup": round(medians["trainer_bf16_cl"] / medians["trainer_fp32"], 3),
        "loader_img_s": round(loader, 1),
        "loader_vs_model": round(loader / max(medians.values()), 2),
        **extra,
    }

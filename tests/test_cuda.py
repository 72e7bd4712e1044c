"""The CUDA path, provable: every config trains on a GPU in bf16 with channels-last, the explainers
and samplers run there, a GPU checkpoint loads on the CPU, and DDP uses every visible GPU.

All tests here are marked ``cuda`` and skip without a GPU: ``pytest -m cuda`` runs only them.
``python tools/benchmark.py --accelerator gpu --all`` runs them and every task's throughput in one go.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from facetorch import cli
from facetorch.explain import ClassTarget, GradCAM, GuidedBackprop
from facetorch.inference.checkpoint import load_task
from facetorch.tasks import FaceTask
from tests.conftest import CONFIGS, FIXTURE_FOR_LAYOUT, REPO, SHRINK, run_training_processes

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False here)"),
]
ON_GPU = ["--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed",
          "--model.init_args.channels_last=true", "--trainer.enable_progress_bar=false"]  # fmt: skip
FEW_STEPS = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3"]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_trains_on_cuda_in_bf16_channels_last(config: Path, request: pytest.FixtureRequest, in_tmp: Path) -> None:
    layout = yaml.safe_load(config.read_text())["data"].get("layout", "face_crops")
    data_root = request.getfixturevalue(FIXTURE_FOR_LAYOUT[layout])
    report = cli.train(["--config", str(config), "--data.root", str(data_root), *ON_GPU, *FEW_STEPS,
                        *SHRINK.get(config.name, [])])  # fmt: skip
    assert report["num_samples"] > 0
    assert all(v == v for v in report.values() if isinstance(v, float)), report  # no NaN from bf16


@pytest.mark.parametrize("config, fixture", [("embedding_tiny.yaml", "identity_dir"), ("face_vgg.yaml", "face_crops_dir")])
def test_a_gpu_checkpoint_loads_on_the_cpu_and_agrees(config: str, fixture: str, request: pytest.FixtureRequest,
                                                       in_tmp: Path) -> None:  # fmt: skip
    data_root = request.getfixturevalue(fixture)
    cli.train(["--config", str(REPO / "tests" / "configs" / config), "--data.root", str(data_root), *ON_GPU[:2],
               "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
    ckpt = next(in_tmp.rglob("best.ckpt"))
    on_cpu = load_task(ckpt, FaceTask, "cpu")
    on_gpu = load_task(ckpt, FaceTask, "cuda")
    assert next(on_cpu.task.parameters()).device.type == "cpu"
    images = torch.rand(3, on_cpu.input.channels, *on_cpu.input.image_size)
    with torch.inference_mode():
        cpu_out, gpu_out = on_cpu.task(images), on_gpu.task(images.cuda())
    assert torch.allclose(cpu_out.float(), gpu_out.float().cpu(), atol=1e-3)


def test_pk_and_pair_samplers_feed_gpu_training(identity_dir: Path, in_tmp: Path) -> None:
    # P x K batches (triplet) and balanced pairs (contrastive), the samplers of configs/embedding_*.yaml.
    for config, extra in (("embedding_triplet.yaml", SHRINK["embedding_triplet.yaml"]),
                          ("embedding_contrastive.yaml", SHRINK["embedding_contrastive.yaml"])):  # fmt: skip
        report = cli.train(["--config", str(REPO / "configs" / config), "--data.root", str(identity_dir), *ON_GPU,
                            *FEW_STEPS, *extra])  # fmt: skip
        accuracy = report.get("pair_acc", report.get("val_pair_acc"))  # test split, else validation
        assert accuracy is not None and 0.0 <= accuracy <= 1.0, report


def test_gradcam_and_guided_backprop_on_cuda_match_the_cpu() -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    images = torch.rand(4, 3, 96, 96)
    with GradCAM(model, "layer4") as cam:
        on_cpu = cam(images, ClassTarget(None))
    model.cuda()
    with GradCAM(model, "layer4") as cam:
        on_gpu = cam(images.cuda(), ClassTarget(None))
    assert on_gpu.is_cuda and torch.allclose(on_cpu, on_gpu.cpu(), atol=1e-3)
    with GuidedBackprop(model) as guided:
        grads = guided(images.cuda(), ClassTarget(None))
    assert grads.is_cuda and grads.shape == images.shape
    assert all(p.grad is None for p in model.parameters())  # autograd.grad: parameter .grad untouched


def test_ddp_on_every_visible_gpu(face_crops_dir: Path, in_tmp: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = run_training_processes(
        [str(REPO / "tools" / "train.py"), "--config", str(REPO / "tests" / "configs" / "face_vgg.yaml"),
         "--data.root", str(face_crops_dir), "--trainer.accelerator=gpu", "--trainer.devices=-1", "--trainer.strategy=ddp",
         "--trainer.precision=bf16-mixed", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"],
        cwd=in_tmp, timeout=130, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next(in_tmp.rglob("metrics.json")).read_text())
    assert metrics["num_samples"] == 6  # every test image once, whatever the number of GPUs

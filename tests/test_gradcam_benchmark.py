"""The Grad-CAM benchmark on tiny settings: keys, positive rates, and facetorch == hand-written maps."""

from __future__ import annotations

import pytest
import torch

from facetorch.bench.gradcam import manual_gradcam, run_gradcam

MODELS = ("vgg16", "resnet50")


@pytest.fixture(scope="module")
def result() -> dict:
    return run_gradcam(batch_size=2, image_size=64, repeats=1, warmup=0, models=MODELS)


def test_reports_every_model(result: dict) -> None:
    assert result["task"] == "gradcam" and result["device"]
    assert (result["batch_size"], result["image_size"], result["repeats"]) == (2, 64, 1)
    for name in MODELS:
        for key in (
            f"gradcam_{name}_img_s",
            f"manual_gradcam_{name}_img_s",
            f"gradcam_vs_manual_{name}",
            f"guided_backprop_{name}_img_s",
            f"input_grad_{name}_img_s",
            f"guided_vs_input_grad_{name}",
        ):
            assert result[key] > 0, key


@pytest.mark.parametrize("name", MODELS)
def test_facetorch_and_manual_maps_agree(result: dict, name: str) -> None:
    assert 0.0 <= result[f"gradcam_max_abs_diff_{name}"] < 1e-4


def test_manual_gradcam_is_a_normalised_map() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    heat = manual_gradcam(model, model[0], torch.rand(2, 3, 8, 8), clone=True)
    assert heat.shape == (2, 8, 8) and heat.min() >= 0 and heat.max() <= 1


def test_unknown_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown models"):
        run_gradcam(batch_size=1, image_size=32, repeats=1, warmup=0, models=("alexnet",))


@pytest.mark.parametrize("name", MODELS)
def test_peers_are_timed_on_the_same_batch_and_agree_where_they_compute_the_same(result: dict, name: str) -> None:
    for peer in ("pytorch_grad_cam", "captum_gradcam", "captum_guided"):
        assert result[f"{peer}_{name}_img_s"] > 0
    assert result[f"gradcam_vs_pytorch_grad_cam_{name}"] > 0 and result[f"guided_vs_captum_guided_{name}"] > 0
    assert result[f"captum_gradcam_max_abs_diff_{name}"] < 1e-4
    assert result[f"captum_guided_max_abs_diff_{name}"] < 1e-4
    if name == "resnet50":  # VGG16's features.28 feeds an in-place ReLU, which pytorch-grad-cam's stored activation sees
        assert result[f"pytorch_grad_cam_max_abs_diff_{name}"] < 1e-4

"""Tests for facetorch.explain.gradcam: sanity checks, hook hygiene, guided ReLU rule, real backbones."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor, nn

from facetorch.explain.gradcam import (
    ClassTarget,
    DetectorTarget,
    DissimilarityTarget,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    PredictedClassTarget,
    SimilarityTarget,
    normalize_guided,
    overlay_heatmap,
)

IMAGE_SIZE = 32
SQUARE = 8


# --------------------------------------------------------------------------------------------
# Tiny models
# --------------------------------------------------------------------------------------------


class SquareNet(nn.Module):
    """Conv net with plain ReLUs; says whether a bright square is in a 1-channel image."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def tiny_vgg(num_classes: int = 3) -> nn.Module:
    """VGG-like: conv / ReLU(inplace=True) / maxpool, like torchvision's VGG."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )  # fmt: skip


class Block(nn.Module):
    """Residual block using functional ReLUs (F.relu and torch.relu)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.conv2(F.relu(self.conv1(x))))


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = Block(8)
        self.layer2 = Block(8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer2(self.layer1(F.relu(self.bn(self.stem(x)))))
        return self.fc(x.mean(dim=(2, 3)))


class TinyDetector(nn.Module):
    """Returns (logit (B, 1), boxes (B, 4)) or the same as a dict."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Linear(8, 1)
        self.box = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor] | dict[str, Tensor]:
        pooled = self.features(x).amax(dim=(2, 3))  # (B, 8)
        logit, boxes = self.cls(pooled), self.box(pooled)
        return {"logit": logit, "boxes": boxes} if self.as_dict else (logit, boxes)


class TinyEmbedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.proj = nn.Linear(8, 6)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.proj(self.features(x).mean(dim=(2, 3))), dim=1)  # (B, 6)


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


def square_images(
    n: int, present: Tensor, generator: torch.Generator
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Noise images (n, 1, S, S); where `present`, a bright square at a random place."""
    images = torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 0.6
    corners = torch.randint(0, IMAGE_SIZE - SQUARE + 1, (n, 2), generator=generator).tolist()
    for image, (row, col), has_square in zip(images, corners, present.tolist(), strict=True):
        if has_square:
            image[:, row : row + SQUARE, col : col + SQUARE] = 1.0
    return images, [tuple(corner) for corner in corners]


@pytest.fixture(scope="module")
def square_net() -> SquareNet:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = SquareNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with single_thread():
        for _ in range(200):
            labels = torch.randint(0, 2, (32,), generator=generator)
            images, _ = square_images(32, labels, generator)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    # Tiny convs gain nothing from 2 threads, and on a busy 2-core machine the OpenMP threads
    # spin against other processes: measured 10x slower than 1 thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def positives() -> tuple[Tensor, list[tuple[int, int]]]:
    generator = torch.Generator().manual_seed(1)
    return square_images(100, torch.ones(100, dtype=torch.bool), generator)


def hook_state(model: nn.Module) -> dict[tuple[str, str], tuple]:
    """Every hook dict of every submodule, plus the global module hooks."""
    state = {}
    for name, module in model.named_modules():
        for attr in dir(module):
            if attr.startswith("_") and "hooks" in attr and isinstance(getattr(module, attr), dict):
                state[(name, attr)] = tuple(getattr(module, attr).items())
    globals_ = torch.nn.modules.module
    for attr in dir(globals_):
        if (
            attr.startswith("_global")
            and "hook" in attr
            and isinstance(getattr(globals_, attr), dict)
        ):
            state[("<global>", attr)] = tuple(getattr(globals_, attr).items())
    return state


def training_flags(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def check_maps(maps: Tensor, shape: tuple[int, ...]) -> None:
    assert maps.shape == shape
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def peak_hits(heat: Tensor, corners: list[tuple[int, int]]) -> list[bool]:
    peak = heat.flatten(1).argmax(dim=1)
    rows, cols = (peak // heat.shape[-1]).tolist(), (peak % heat.shape[-1]).tolist()
    return [
        r0 <= row < r0 + SQUARE and c0 <= col < c0 + SQUARE
        for row, col, (r0, c0) in zip(rows, cols, corners, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# 1-2. Sanity checks on a trained model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["features.6", "features.3"])
def test_gradcam_peak_falls_inside_the_square(square_net: SquareNet, positives, layer: str) -> None:
    images, corners = positives
    assert (square_net(images).argmax(dim=1) == 1).float().mean() >= 0.95  # the model learned it
    with GradCAM(square_net, layer) as cam:
        heat = cam(images, ClassTarget(1))
    check_maps(heat, (len(images), IMAGE_SIZE, IMAGE_SIZE))
    assert np.mean(peak_hits(heat, corners)) >= 0.9


def mean_spearman(first: Tensor, second: Tensor) -> float:
    # A constant (e.g. all-zero) map has no ranking; it counts as no agreement (0) rather than NaN.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input
        values = [
            spearmanr(a.flatten().numpy(), b.flatten().numpy())[0]
            for a, b in zip(first, second, strict=True)
        ]
    return float(np.mean(np.nan_to_num(values, nan=0.0)))


def test_cascading_randomisation_changes_the_maps(square_net: SquareNet, positives) -> None:
    images, _ = positives
    images = images[:40]
    with GradCAM(square_net, "features.6") as cam:
        original = cam(images, ClassTarget(1))
        assert mean_spearman(original, cam(images, ClassTarget(1))) > 0.99  # deterministic

    torch.manual_seed(2)
    model = copy.deepcopy(square_net)
    convs = [module for module in model.features if isinstance(module, nn.Conv2d)]
    correlations = []
    for module in [model.head[2], *reversed(convs)]:  # cascading, from the top layer down
        module.reset_parameters()
        with GradCAM(model, "features.6") as cam:
            correlations.append(mean_spearman(original, cam(images, ClassTarget(1))))
    assert correlations[-1] < 0.5, correlations


# --------------------------------------------------------------------------------------------
# 3. Hook hygiene and state restoration
# --------------------------------------------------------------------------------------------


def _prepare_state(model: nn.Module) -> None:
    """Mixed training flags, a frozen conv and a pre-existing gradient."""
    model.train()
    model[1].eval()  # a single submodule in eval while the rest trains
    for param in model[0].parameters():
        param.requires_grad_(False)
    model[3].weight.grad = torch.full_like(model[3].weight, 0.5)


def _failing_target(output: Tensor) -> Tensor:
    raise RuntimeError("target failed")


@pytest.mark.parametrize("explainer_cls", [GradCAM, GuidedBackprop, GuidedGradCAM])
def test_no_hook_or_state_left_after_exceptions(explainer_cls: type) -> None:
    torch.manual_seed(0)
    model = tiny_vgg()
    _prepare_state(model)
    hooks, flags = hook_state(model), training_flags(model)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    grads = {
        name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()
    }
    args = (model,) if explainer_cls is GuidedBackprop else (model, "3")
    images = torch.rand(2, 3, 16, 16)

    def assert_restored() -> None:
        assert training_flags(model) == flags
        assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad
        for name, param in model.named_parameters():
            if grads[name] is None:
                assert param.grad is None, name
            else:
                assert torch.equal(param.grad, grads[name]), name
        assert torch._C._len_torch_function_stack() == 0  # guided ReLU mode not left active

    with pytest.raises(RuntimeError, match="inside the block"), explainer_cls(*args) as explainer:
        if explainer_cls is not GuidedBackprop:  # guided backprop needs no module hook
            assert hook_state(model) != hooks  # the snapshot does see the hook
        explainer(images, 1)  # a successful call first
        assert_restored()
        raise RuntimeError("inside the block")
    assert hook_state(model) == hooks

    with explainer_cls(*args) as explainer:
        with pytest.raises(RuntimeError, match="target failed"):
            explainer(images, _failing_target)
        assert_restored()
        with pytest.raises(RuntimeError):  # the forward itself fails: wrong channel count
            explainer(torch.rand(2, 5, 16, 16), 1)
        assert_restored()
    assert hook_state(model) == hooks
    assert_restored()


@pytest.mark.parametrize("explainer_cls", [GradCAM, GuidedBackprop, GuidedGradCAM])
def test_model_is_in_eval_mode_during_the_call(explainer_cls: type) -> None:
    model = TinyResNet().train()
    seen_training: list[bool] = []

    def target(output: Tensor) -> Tensor:
        seen_training.append(any(module.training for module in model.modules()))
        return output[:, 0]

    args = (model,) if explainer_cls is GuidedBackprop else (model, "layer1")
    with explainer_cls(*args) as explainer:
        explainer(torch.rand(2, 3, 16, 16), target)
    assert seen_training and not any(seen_training)
    assert all(module.training for module in model.modules())


def test_explainer_outside_with_block_raises() -> None:
    cam = GradCAM(tiny_vgg(), "3")
    with pytest.raises(RuntimeError, match="context manager"):
        cam(torch.rand(1, 3, 16, 16))


def test_model_forward_inside_block_is_unchanged() -> None:
    torch.manual_seed(0)
    model = tiny_vgg().eval()
    images = torch.rand(2, 3, 16, 16)
    expected = model(images)
    with GradCAM(model, "3"):
        assert torch.equal(model(images), expected)


# --------------------------------------------------------------------------------------------
# 4. All methods on VGG-like and ResNet-like nets; the guided ReLU rule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_model", "layer"), [(tiny_vgg, "6"), (TinyResNet, "layer2")], ids=["vgg", "resnet"]
)
@pytest.mark.parametrize("batch_size", [1, 5])
def test_all_methods_shapes_and_ranges(
    make_model: Callable[[], nn.Module], layer: str, batch_size: int
) -> None:
    torch.manual_seed(0)
    model = make_model()
    images = torch.rand(batch_size, 3, 20, 20)
    with GradCAM(model, layer) as cam:
        heat = cam(images)
    with GuidedBackprop(model) as guided_backprop:
        guided = guided_backprop(images)
    with GuidedGradCAM(model, layer) as guided_cam:
        combined = guided_cam(images)

    check_maps(heat, (batch_size, 20, 20))
    assert guided.shape == combined.shape == (batch_size, 3, 20, 20)
    assert torch.isfinite(guided).all() and torch.isfinite(combined).all()
    assert torch.allclose(combined, guided * heat[:, None])
    check_maps(normalize_guided(guided), (batch_size, 3, 20, 20))
    check_maps(normalize_guided(combined, reduce_channels=True), (batch_size, 20, 20))
    check_maps(GuidedGradCAM.normalize(combined), (batch_size, 3, 20, 20))

    inputs = images.clone().requires_grad_(True)
    plain = torch.autograd.grad(PredictedClassTarget()(model.eval()(inputs)).sum(), inputs)[0]
    assert not torch.allclose(guided, plain)  # the guided rule changed the gradient


class ElementwiseRelu(nn.Module):
    """score = sum(b * relu(x)) over a (1, 1, 1, 4) input; the ReLU is given as a callable."""

    def __init__(self, relu: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.relu = relu
        self.b = nn.Parameter(torch.tensor([1.0, 1.0, -1.0, 2.0]).reshape(1, 1, 1, 4))

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.relu(x * 1.0)  # * 1.0: a non-leaf, so in-place ReLUs are allowed
        return (hidden * self.b).sum(dim=(1, 2, 3))[:, None]  # (B, 1)


RELUS: dict[str, Callable[[Tensor], Tensor]] = {
    "nn.ReLU": nn.ReLU(),
    "nn.ReLU(inplace=True)": nn.ReLU(inplace=True),
    "F.relu": F.relu,
    "F.relu(inplace=True)": lambda x: F.relu(x, inplace=True),
    "torch.relu": torch.relu,
    "torch.relu_": torch.relu_,
    "Tensor.relu": Tensor.relu,
    "Tensor.relu_": lambda x: x.relu_(),
}


@pytest.mark.parametrize("relu_name", list(RELUS))
def test_guided_relu_rule_on_hand_made_example(relu_name: str) -> None:
    model = ElementwiseRelu(RELUS[relu_name])
    images = torch.tensor([1.0, -1.0, 2.0, 3.0]).reshape(1, 1, 1, 4)
    # Plain gradient: b * (x > 0) = [1, 0, -1, 2]. Guided: the negative upstream gradient at the
    # third ReLU is dropped -> [1, 0, 0, 2].
    inputs = images.clone().requires_grad_(True)
    plain = torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)[0]
    assert plain.flatten().tolist() == [1.0, 0.0, -1.0, 2.0]
    with GuidedBackprop(model) as guided_backprop:
        guided = guided_backprop(images, ClassTarget(0))
    assert guided.flatten().tolist() == [1.0, 0.0, 0.0, 2.0]
    assert images.flatten().tolist() == [1.0, -1.0, 2.0, 3.0]  # caller's tensor untouched


def test_inplace_relu_gives_same_gradcam_as_out_of_place() -> None:
    """The forward-hook clone keeps the conv output intact when a ReLU(inplace=True) follows."""
    torch.manual_seed(0)
    inplace = tiny_vgg()
    out_of_place = copy.deepcopy(inplace)
    for module in out_of_place.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    images = torch.rand(3, 3, 20, 20)
    maps = []
    for model in (inplace, out_of_place):
        with GradCAM(model, "6") as cam:  # conv "6" is followed by ReLU "7"
            maps.append(cam(images))
    assert torch.allclose(maps[0], maps[1], atol=1e-6)


# --------------------------------------------------------------------------------------------
# 5. torchvision backbones, layer names
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_models() -> dict[str, nn.Module]:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return {
        "vgg16": torchvision.models.vgg16(weights=None),
        "resnet50": torchvision.models.resnet50(weights=None),
    }


@pytest.mark.parametrize(("name", "layer"), [("vgg16", "features.28"), ("resnet50", "layer4")])
def test_torchvision_backbones(
    torchvision_models: dict[str, nn.Module], name: str, layer: str
) -> None:
    model = torchvision_models[name]
    images = torch.rand(1, 3, 64, 64)
    with GradCAM(model, layer) as cam:
        heat = cam(images)
    check_maps(heat, (1, 64, 64))
    assert heat.max() > heat.min()  # not constant
    with GuidedGradCAM(model, layer) as guided_cam:
        combined = guided_cam(images)
    assert combined.shape == (1, 3, 64, 64) and torch.isfinite(combined).all()
    assert combined.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "layer", "expected"),
    [("vgg16", "features.99", "features.28"), ("resnet50", "layer5", "layer4")],
)
def test_unknown_layer_lists_candidates(
    torchvision_models, name: str, layer: str, expected: str
) -> None:
    with pytest.raises(ValueError, match=rf"Unknown layer '{layer}'.*'{expected}'"):
        GradCAM(torchvision_models[name], layer)


# --------------------------------------------------------------------------------------------
# 6. inference_mode, frozen parameters, targets, overlay
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("explainer_cls", [GradCAM, GuidedBackprop, GuidedGradCAM])
def test_works_under_inference_mode_and_with_frozen_params(explainer_cls: type) -> None:
    torch.manual_seed(0)
    model = TinyResNet()
    args = (model,) if explainer_cls is GuidedBackprop else (model, "layer1")
    images = torch.rand(4, 3, 16, 16)
    with explainer_cls(*args) as explainer:
        expected = explainer(images, ClassTarget([0, 1, 2, 0]))
        with torch.inference_mode():  # as in a Lightning validation callback
            inference_images = images.clone()
            inference_target = ClassTarget(torch.tensor([0, 1, 2, 0]))
            result = explainer(inference_images, inference_target)
        assert torch.allclose(result, expected)

        model.requires_grad_(False)
        assert torch.allclose(explainer(images, ClassTarget([0, 1, 2, 0])), expected)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("part", ["score", "x1", "y1", "x2", "y2"])
def test_detector_target(as_dict: bool, part: str) -> None:
    torch.manual_seed(0)
    model = TinyDetector(as_dict)
    images = torch.rand(3, 3, 12, 12)
    assert DetectorTarget(part)(model(images)).shape == (3,)
    with GradCAM(model, "features.0") as cam:
        check_maps(cam(images, DetectorTarget(part)), (3, 12, 12))


def test_detector_target_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="part"):
        DetectorTarget("width")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"boxes of shape \(B, 4\)"):
        DetectorTarget("x1")((torch.zeros(2, 1), torch.zeros(2, 3)))


def test_similarity_targets() -> None:
    torch.manual_seed(0)
    model = TinyEmbedder()
    images = torch.rand(3, 3, 12, 12)
    embeddings = model(images).detach()
    for reference in (embeddings[0], embeddings.flip(0)):
        score = SimilarityTarget(reference)(model(images))
        assert score.shape == (3,)
        assert torch.allclose(DissimilarityTarget(reference)(model(images)), -score)
    assert torch.allclose(SimilarityTarget(embeddings)(model(images)), torch.ones(3), atol=1e-5)
    with torch.inference_mode():
        reference = model(images[:1])[0]
    with GradCAM(model, "features.0") as cam, torch.inference_mode():
        check_maps(cam(images, SimilarityTarget(reference)), (3, 12, 12))
    with pytest.raises(ValueError, match="reference"):
        SimilarityTarget(embeddings[:2])(model(images))


def test_class_targets() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert ClassTarget(2)(logits).tolist() == [1.0, 1.0]
    assert ClassTarget([1, 0])(logits).tolist() == [2.0, 3.0]
    assert PredictedClassTarget()(logits).tolist() == [2.0, 3.0]
    assert ClassTarget(None)(logits).tolist() == [2.0, 3.0]
    with pytest.raises(IndexError, match="3 classes"):
        ClassTarget(5)(logits)
    with pytest.raises(ValueError, match="2 class indices"):
        ClassTarget([0, 1, 2])(logits)


def test_target_with_wrong_shape_raises() -> None:
    with GradCAM(tiny_vgg(), "3") as cam, pytest.raises(ValueError, match=r"per sample.*\(2,\)"):
        cam(torch.rand(2, 3, 16, 16), lambda output: output)


def test_all_zero_cam_stays_zero() -> None:
    model = tiny_vgg()
    nn.init.zeros_(model[-1].weight)  # the score no longer depends on the features
    with GradCAM(model, "6") as cam:
        heat = cam(torch.rand(2, 3, 16, 16), 0)
    assert torch.equal(heat, torch.zeros(2, 16, 16))


@pytest.mark.parametrize(
    "image",
    [
        np.full((10, 12), 128, dtype=np.uint8),
        np.full((10, 12, 1), 0.5, dtype=np.float32),
        np.random.default_rng(0).random((10, 12, 3)),
    ],
    ids=["gray-uint8", "gray1-float", "rgb-float"],
)
def test_overlay_heatmap(image: np.ndarray) -> None:
    heat = np.linspace(0, 1, 120).reshape(10, 12)
    overlay = overlay_heatmap(image, heat, alpha=0.4)
    assert overlay.shape == (10, 12, 3) and overlay.dtype == np.uint8
    assert not np.array_equal(overlay[0, 0], overlay[-1, -1])  # the colormap shows through
    with pytest.raises(ValueError, match="heatmap of shape"):
        overlay_heatmap(image, heat[:5])

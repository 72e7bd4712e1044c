"""What a number may be: one check per kind of number, for command-line flags and config values alike.

A count of frames, a batch size, a fraction of the data, a probability, a cosine threshold: each
kind is one :class:`Kind` here, so ``--max_frames -1`` and ``data.batch_size: 0`` are refused by
the same words (``must be an integer >= 1``) wherever they come from. The command lines use these
through the argparse types of :mod:`facetorch.cli.common`; the data module and the tasks check
their config sections with :func:`check_values`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

__all__ = [
    "COSINE",
    "FRACTION",
    "FRACTION_BELOW_ONE",
    "IMAGE_SIDE",
    "LAYER_WIDTH",
    "Kind",
    "NONNEGATIVE",
    "NONNEGATIVE_INT",
    "OPEN_FRACTION",
    "POSITIVE",
    "POSITIVE_FRACTION",
    "POSITIVE_INT",
    "PROBABILITY",
    "check_values",
]


@dataclass(frozen=True)
class Kind:
    """A kind of number: an interval, integers only or any finite number.

    Attributes:
        words: What the number is, for messages (``"a fraction"``).
        low: The smallest value (``-inf``: none).
        high: The largest value (``inf``: none).
        low_open: ``low`` itself is not allowed.
        high_open: ``high`` itself is not allowed.
        integer: Only whole numbers.
    """

    words: str
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """The allowed values in words: ``an integer >= 1``, ``a number in [0, 1)``."""
        what = "an integer" if self.integer else "a number"
        if math.isinf(self.low) and math.isinf(self.high):
            return f"{what} ({self.words})"
        if math.isinf(self.high):
            return f"{what} {'>' if self.low_open else '>='} {_plain(self.low)} ({self.words})"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{what} in {left}{_plain(self.low)}, {_plain(self.high)}{right} ({self.words})"

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a number of this kind (``bool``, NaN and infinities never are)."""
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        if self.integer and not isinstance(value, Integral):
            return False
        number = float(value) if not isinstance(value, Integral) else value
        if isinstance(number, float) and not math.isfinite(number):
            return False
        above = number > self.low if self.low_open else number >= self.low
        below = number < self.high if self.high_open else number <= self.high
        return above and below

    def check(self, value: Any, where: str) -> Any:
        """``value`` itself when it is of this kind.

        Args:
            value: The number to check.
            where: The flag or config key that gave it (``--max_frames``, ``data.batch_size``).

        Raises:
            ValueError: ``where must be <kind>, got <value>``.
        """
        if not self.contains(value):
            raise ValueError(f"{where} must be {self.describe()}, got {value!r}")
        return value


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


POSITIVE_INT = Kind("a count or a size", low=1, integer=True)
NONNEGATIVE_INT = Kind("a count that may be 0", low=0, integer=True)
POSITIVE = Kind("a rate, a scale or a size", low=0, low_open=True)
NONNEGATIVE = Kind("a weight, a margin or a decay", low=0)
FRACTION = Kind("a fraction", low=0, high=1)
FRACTION_BELOW_ONE = Kind("a fraction below 1", low=0, high=1, high_open=True)
POSITIVE_FRACTION = Kind("a fraction above 0", low=0, high=1, low_open=True)
OPEN_FRACTION = Kind("a fraction strictly between 0 and 1", low=0, high=1, low_open=True, high_open=True)
PROBABILITY = Kind("a probability", low=0, high=1)
# The side of a model input or a crop, in pixels: smaller gives nothing to see, larger does not fit in memory.
IMAGE_SIDE = Kind("pixels of an image side", low=8, high=4096, integer=True)
# The units of a layer a config chooses (a dense layer, an embedding): beyond this no layer fits in memory.
LAYER_WIDTH = Kind("units of a layer", low=1, high=65536, integer=True)
# A threshold on the cosine similarity of unit embeddings: below 0 every stranger would be someone.
COSINE = Kind("a cosine similarity threshold", low=0, high=1)


def check_values(section: str, values: Mapping[str, Any], kinds: Mapping[str, Kind]) -> None:
    """Check every value of ``values`` that ``kinds`` names (``None`` means "not set" and passes).

    Args:
        section: The config section, for the message (``data``, ``model``).
        values: Option name -> value.
        kinds: Option name -> its kind.

    Raises:
        ValueError: the first value outside its kind, as ``<section>.<name> must be ..., got ...``.
    """
    for name, kind in kinds.items():
        value = values.get(name)
        if value is not None:
            kind.check(value, f"{section}.{name}")

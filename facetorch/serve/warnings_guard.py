"""One lock around every ``warnings.catch_warnings`` of the service.

Before Python 3.14, ``catch_warnings`` swaps process-wide state (the filters, ``showwarning``) and
puts it back on exit; two request threads doing that at once can leave a stale filter or a stale
recorder behind for good. The service's threads take this lock for any code that uses it (image
decoding, the gallery's calibration).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LOCK", "recorded_warnings"]

LOCK = threading.Lock()


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record (instead of show) the warnings of the block, under :data:`LOCK`."""
    with LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught

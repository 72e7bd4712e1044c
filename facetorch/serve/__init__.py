"""The HTTP service over recognition, and its web page: ``facetorch serve`` (``tools/serve.py``).

``app``: the FastAPI routes (``/health``, ``/v1/recognize``, ``/v1/verify``, ``/v1/enroll``,
``/v1/people``, ``/metrics``, the page at ``/``); ``engine``: the detector, embedder and gallery of
a worker behind ``batching``'s queue; ``people``: the one module that opens the gallery; ``auth``:
API keys; ``inputs``: uploads and names checked; ``errors``: every refusal as one JSON line;
``limits``: the request body limit; ``metrics``: Prometheus; ``settings``: how each worker builds
the app; ``loadtest``: ``benchmark.py --task serve``; ``static/``: the page.

The names below are imported on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "app",
    "Engine": "engine",
    "People": "people",
    "Keys": "auth",
    "load_keys": "auth",
    "Settings": "settings",
    "build_app": "settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"facetorch.serve.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'facetorch.serve' has no attribute {name!r}")

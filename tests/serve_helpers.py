"""What the service's tests share: the toy app (coloured squares are faces), pictures as bytes, key files, a live server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from facetorch.recognition.enrollment import enroll_photos
from facetorch.serve.settings import Settings, build_app
from tests.test_recognition import COLOURS, STRANGER, ColourEmbedder, SquareDetector, people_folder, picture

__all__ = ["ADMIN_KEY", "COLOURS", "READ_KEY", "STRANGER", "encode", "free_port", "key_file", "live_server", "picture",
           "toy_app", "toy_gallery"]  # fmt: skip

READ_KEY = "read-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"


def encode(rgb: np.ndarray, suffix: str = ".png") -> bytes:
    """An RGB picture as the bytes of an image file."""
    ok, data = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def toy_gallery(root: Path) -> Path:
    """A gallery of red, green and blue (three photos each), enrolled the way ``gallery.py enroll`` does."""
    path = root / "people.db"
    enroll_photos(ColourEmbedder(), SquareDetector(), path, people_folder(root / "people"), progress=False)
    return path


def key_file(root: Path) -> Path:
    path = root / "keys.txt"
    path.write_text(f"# who may do what\nread {READ_KEY}\nadmin {ADMIN_KEY}\n", encoding="utf-8")
    return path


def toy_app(gallery: Path, keys: Optional[Path] = None, **settings: Any) -> Any:
    """The service over the toy detector and embedder."""
    return build_app(Settings(gallery=str(gallery), api_keys=str(keys) if keys else None, **settings), ColourEmbedder(),
                     SquareDetector())  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port, in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)



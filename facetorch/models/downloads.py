"""Is a download source reachable? A short check before a library's own downloader runs.

torchvision (torch hub) and timm (Hugging Face Hub) download pretrained weights themselves, but an
offline machine can keep them waiting: a firewall that drops packets lets a connection hang for
minutes. :func:`unreachable` asks for one TCP connection to the source (or to the proxy that
``urllib`` would use) and gives up after a few seconds, so a missing file is reported at once.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from typing import Optional

PROBE_TIMEOUT_S = 3.0


def unreachable(url: str, timeout: Optional[float] = None) -> Optional[str]:
    """``None`` when ``url``'s host (or its proxy) accepts a TCP connection in ``timeout`` seconds, else why not.

    ``timeout`` defaults to :data:`PROBE_TIMEOUT_S`. The name look-up runs in a daemon thread
    too, so a resolver that never answers cannot block the caller for longer than ``timeout``.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return f"{url!r} names no host"
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_parts.hostname:
            host, port = proxy_parts.hostname, proxy_parts.port or 80
    outcome: list[Optional[str]] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except Exception as error:  # any failure means "not reachable"
            outcome.append(f"{host}:{port} cannot be reached ({type(error).__name__}: {error})")

    thread = threading.Thread(target=connect, name="facetorch-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout:g} s"
    return outcome[0]

"""``benchmark.py --task serve``: K concurrent clients against a local server, and the same pictures in-process.

The server is ``facetorch serve`` started as a child process on 127.0.0.1 (never another address),
with the gallery and model given. Clients are threads of this process, each with one keep-alive
connection, posting group pictures to ``/v1/recognize`` for a fixed time (bounded in time and in
count). The in-process baseline is the pipeline ``gallery.py recognize`` runs (read the file,
detect, align, embed, match; no annotated files written) over the same pictures in this process,
while the server idles, twice: on a thread of its own (as the server runs its model) and on the
main thread (as ``gallery.py recognize`` does); the faster of the two is the baseline. Both use
the same torch threads as the server. Rounds alternate the three; medians are reported.

Reported: requests/s, faces/s, p50 / p95 / p99 latency, errors (unexpected statuses), the
server's memory (resident at the first and the last sample, every 10 s, and its peak), the ratio
of the service's faces/s to the in-process faces/s, and the per-request overhead: a single client's
median latency minus the in-process median time per picture (noisy: a difference of two model
times), and, cleaner, the medians of ``GET /health`` and of recognising a blank 32 x 32 picture.
``bad_every`` makes every N-th request of each client a bad upload (not an image, truncated, a
decompression bomb), which must be refused with 4xx; memory is sampled all along.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["percentile", "run_serve_load"]

HOST = "127.0.0.1"  # loopback only: the load never leaves this machine
MAX_REQUESTS = 100_000  # per client and phase, whatever the time


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q``-th percentile (0-100), or None without values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def _multipart(field: str, name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "facetorchloadtest"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _bad_uploads(good: bytes) -> list[bytes]:
    """Not an image, a truncated picture, and a PNG that declares 30000 x 30000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (30000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0]))
    bomb += chunk(b"IDAT", zlib.compress(b"\0" * 30001 * 8)) + chunk(b"IEND", b"")
    return [b"this is not an image", good[: len(good) // 2], bomb]


class _Client(threading.Thread):
    """One client: posts pictures in turn over one connection until ``stop_at`` (or :data:`MAX_REQUESTS`)."""

    def __init__(self, port: int, pictures: list[tuple[str, bytes]], start: int, stop_at: float, bad_every: int) -> None:
        super().__init__(daemon=True)
        self.port, self.pictures, self.next, self.stop_at, self.bad_every = port, pictures, start, stop_at, bad_every
        self.latencies: list[float] = []
        self.faces = self.errors = self.rejected = 0
        self.error_samples: list[str] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=300)
        bad = _bad_uploads(self.pictures[0][1])
        count = 0
        while time.monotonic() < self.stop_at and count < MAX_REQUESTS:
            count += 1
            is_bad = self.bad_every > 0 and count % self.bad_every == 0
            name, data = ("bad.png", bad[count % len(bad)]) if is_bad else self.pictures[self.next % len(self.pictures)]
            self.next += 0 if is_bad else 1
            body, content_type = _multipart("image", name, data)
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/recognize", body, {"Content-Type": content_type})
                response = connection.getresponse()
                payload = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = http.client.HTTPConnection(HOST, self.port, timeout=300)
                status, payload = 0, str(error).encode()
            elapsed = time.perf_counter() - started
            if is_bad and 400 <= status < 500:
                self.rejected += 1
            elif not is_bad and status == 200:
                self.latencies.append(elapsed)
                self.faces += len(json.loads(payload)["faces"])
            else:
                self.errors += 1
                if len(self.error_samples) < 3:
                    self.error_samples.append(f"{status}: {payload[:200]!r}")
        connection.close()


def _memory(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, in MB (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _load_phase(port: int, pid: int, pictures: list[tuple[str, bytes]], clients: int, seconds: float,
                bad_every: int = 0) -> dict[str, Any]:  # fmt: skip
    stop_at = time.monotonic() + seconds
    workers = [_Client(port, pictures, k * max(1, len(pictures) // max(1, clients)), stop_at, bad_every)
               for k in range(clients)]  # fmt: skip
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    samples = []
    while any(worker.is_alive() for worker in workers):
        samples.append(_memory(pid)["VmRSS"])
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    latencies = [value for worker in workers for value in worker.latencies]
    faces = sum(worker.faces for worker in workers)
    return {
        "clients": clients, "seconds": round(elapsed, 2), "requests": len(latencies),
        "requests_s": round(len(latencies) / elapsed, 3), "faces_s": round(faces / elapsed, 3), "faces": faces,
        "p50_ms": _ms(percentile(latencies, 50)), "p95_ms": _ms(percentile(latencies, 95)),
        "p99_ms": _ms(percentile(latencies, 99)), "errors": sum(worker.errors for worker in workers),
        "bad_rejected": sum(worker.rejected for worker in workers),
        "error_samples": [sample for worker in workers for sample in worker.error_samples][:3],
        "rss_mb_first": round(samples[0], 1) if samples else None, "rss_mb_last": round(samples[-1], 1) if samples else None,
        "rss_mb_every_10s": [round(value) for value in samples[::20]],
    }  # fmt: skip


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 1)


def _in_process(recognizer: Any, files: Sequence[Path], threads: int, on_thread: bool) -> dict[str, Any]:
    """The pipeline of ``gallery.py recognize`` over ``files`` (read, detect, embed, match), once each.

    ``on_thread``: on a thread of its own with ``threads`` torch threads, as the server's model
    runs; else on the main thread, as ``gallery.py recognize`` runs.
    """
    import torch

    from facetorch.data.images import read_image

    out: dict[str, Any] = {}

    def run() -> None:
        torch.set_num_threads(threads)
        times, faces = [], 0
        started = time.perf_counter()
        for file in files:
            one = time.perf_counter()
            faces += len(recognizer([read_image(file, 3)])[0])
            times.append(time.perf_counter() - one)
        elapsed = time.perf_counter() - started
        out.update(seconds=round(elapsed, 2), faces=faces, faces_s=round(faces / elapsed, 3), p50_ms=_ms(percentile(times, 50)))

    if on_thread:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    else:
        run()
    return out


def _start_server(args: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    """``facetorch serve`` of this very package on a free loopback port; returns once ``/health`` answers."""
    import socket

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = int(probe.getsockname()[1])
    root = str(Path(__file__).resolve().parents[2])  # this checkout, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with open(log, "w", encoding="utf-8") as output:
        process = subprocess.Popen([sys.executable, "-c", "from facetorch.cli.serve import main; main()", "--host", HOST,
                                    "--port", str(port), "--log_level", "warning", *args],
                                   stdout=output, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ValueError(f"the server did not start: {log.read_text(encoding='utf-8')[-600:]}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise ValueError("the server did not answer /health within 300 s")


def _overhead_ms(port: int, count: int = 50) -> dict[str, Optional[float]]:
    """Median latencies of what a request costs beyond the model: ``GET /health``, and recognising a blank picture.

    The blank 32 x 32 PNG pays for the multipart form, decoding, the batching window, the detector
    over 1024 pixels and the JSON, and for no face.
    """
    import cv2

    blank = cv2.imencode(".png", np.zeros((32, 32, 3), dtype=np.uint8))[1].tobytes()
    body, content_type = _multipart("image", "blank.png", blank)
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    times: dict[str, list[float]] = {"health": [], "blank": []}
    for _ in range(count):
        for kind in times:
            started = time.perf_counter()
            if kind == "health":
                connection.request("GET", "/health")
            else:
                connection.request("POST", "/v1/recognize", body, {"Content-Type": content_type})
            connection.getresponse().read()
            times[kind].append(time.perf_counter() - started)
    connection.close()
    return {"health_p50_ms": _ms(percentile(times["health"], 50)), "blank_picture_p50_ms": _ms(percentile(times["blank"], 50))}


def run_serve_load(recognizer: Any, files: Sequence[Path], server_args: list[str], clients: int = 4, seconds: float = 30.0,
                   rounds: int = 2, bad_every: int = 0, threads: Optional[int] = None) -> dict[str, Any]:  # fmt: skip
    """The load test: ``rounds`` of in-process then service (K clients for ``seconds``), then one client alone.

    Args:
        recognizer: The in-process pipeline (the same model, detector and gallery as the server's).
        files: The pictures.
        server_args: ``facetorch serve`` arguments (``--gallery``, ``--config`` / ``--ckpt_path``, ...).
        clients: Concurrent clients.
        seconds: How long each load phase lasts.
        rounds: Alternations of in-process and service.
        bad_every: Every N-th request of a client is a bad upload (0: none).
        threads: torch threads of the model, in the server (``--threads``) and in-process alike
            (default: torch's, one per core).
    """
    import torch

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    server_args = [*server_args, "--threads", str(threads)]
    if clients < 1 or seconds <= 0 or rounds < 1:
        raise ValueError(f"--clients and --repeats must be 1 or more and --seconds above 0, got {clients}, {rounds}, {seconds}")
    pictures = [(Path(file).name, Path(file).read_bytes()) for file in files]
    with tempfile.TemporaryDirectory() as work:
        process, port = _start_server(server_args, Path(work) / "server.log")
        try:
            for name, data in pictures:  # warm-up: every picture once (lazy model parts load on first use)
                body, content_type = _multipart("image", name, data)
                connection = http.client.HTTPConnection(HOST, port, timeout=300)
                connection.request("POST", "/v1/recognize", body, {"Content-Type": content_type})
                connection.getresponse().read()
                connection.close()
            _in_process(recognizer, files[:1], threads, on_thread=True)
            _in_process(recognizer, files[:1], threads, on_thread=False)
            local, main_thread, served = [], [], []
            for _ in range(rounds):  # alternating, so a change in the machine's load hits all three alike
                local.append(_in_process(recognizer, files, threads, on_thread=True))
                served.append(_load_phase(port, process.pid, pictures, clients, seconds, bad_every))
                main_thread.append(_in_process(recognizer, files, threads, on_thread=False))
            single = _load_phase(port, process.pid, pictures, 1, max(5.0, seconds / 3))
            overhead = _overhead_ms(port)
            memory = _memory(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    # the stricter baseline: the faster of the two ways of running the same pipeline in-process
    local_faces_s = max(statistics.median(r["faces_s"] for r in runs) for runs in (local, main_thread))
    service_faces_s = statistics.median(r["faces_s"] for r in served)
    local_p50 = min(statistics.median(r["p50_ms"] for r in runs) for runs in (local, main_thread))
    return {
        "task": "serve", "clients": clients, "seconds_per_phase": seconds, "rounds": rounds, "pictures": len(files),
        "service": served, "in_process": local, "in_process_main_thread": main_thread, "single_client": single,
        "service_faces_s": service_faces_s, "in_process_faces_s": local_faces_s,
        "ratio_service_to_in_process": round(service_faces_s / local_faces_s, 3) if local_faces_s else None,
        "errors": sum(r["errors"] for r in served) + single["errors"],
        "overhead_ms_per_request": round(single["p50_ms"] - local_p50, 1) if single["p50_ms"] is not None else None,
        **overhead, "server_rss_mb_end": round(memory["VmRSS"], 1),
        "server_peak_rss_mb": round(memory["VmHWM"], 1), "bad_every": bad_every, "model_threads": threads,
    }  # fmt: skip

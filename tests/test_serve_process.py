"""The service as a process: ``tools/serve.py`` started for real (uvicorn), and the real model through the API.

``test_the_real_command_serves_refuses_and_stops_cleanly`` starts the command with a tiny
untrained config and Haar faces (the model does not matter there): it answers, refuses an
oversized upload before its body is sent, still answers afterwards, and stops on SIGTERM. The slow
test enrols real LFW people with dlib's network and checks that the API names the faces of composed
group pictures exactly as ``gallery.py recognize`` does (skipped without dlib's files or the data).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, read_csv
from tests.serve_helpers import encode, free_port, picture
from tests.test_recognition import SHARED, needs_models


def _post(url: str, field: str, name: str, data: bytes, key: str = "") -> tuple[int, dict[str, Any]]:
    boundary = "facetorchtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **_auth(key)})
    try:
        with urllib.request.build_opener().open(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _get(url: str, key: str = "") -> tuple[int, Any]:
    with urllib.request.build_opener().open(urllib.request.Request(url, headers=_auth(key)), timeout=60) as response:
        body = response.read()
        return response.status, json.loads(body) if response.headers.get_content_type() == "application/json" else body.decode()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _start(args: list[str], port: int, log: Path) -> subprocess.Popen:
    """``tools/serve.py`` of this checkout on ``port``, its output in ``log``; returns once it answers /health."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log, "w", encoding="utf-8") as output:
        process = subprocess.Popen([sys.executable, str(REPO / "tools" / "serve.py"), "--port", str(port), *args], cwd=REPO,
                                   stdout=output, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(encoding="utf-8")
        try:
            if _get(f"http://127.0.0.1:{port}/health")[0] == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    process.wait()
    raise AssertionError(f"the service did not answer /health within 180 s: {log.read_text(encoding='utf-8')}")


def test_the_real_command_serves_refuses_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    tiny = str(REPO / "tests/configs/embedding_tiny.yaml")
    process = _start(["--gallery", str(tmp_path / "new.db"), "--config", tiny, "--detector", "haar", "--max_upload_mb", "1",
                      "--log_level", "warning"], port, tmp_path / "log")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        status, health = _get(f"{base}/health")
        assert health["people"] == 0 and health["detector"] == "haar" and health["auth"] is False
        status, answer = _post(f"{base}/v1/recognize", "image", "dark.png", encode(picture([])))
        assert status == 200 and answer == {"faces": [], "width": 128, "height": 96, "threshold": None}
        assert _post(f"{base}/v1/recognize", "image", "x.png", b"not an image")[0] == 415
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:  # declares 1 GB, sends 10 bytes
            raw.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        b"Content-Length: 1000000000\r\n\r\n0123456789")  # fmt: skip
            reply: Any = b""
            while b"}" not in reply:  # headers and body may come in separate packets
                chunk = raw.recv(65536)
                if not chunk:
                    break
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 413") and "over the limit of 1 MB" in reply
        assert _get(f"{base}/health")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    log = (tmp_path / "log").read_text(encoding="utf-8")
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in log, log  # uvicorn re-raises the signal it handled
    from facetorch.recognition import open_gallery

    with open_gallery(tmp_path / "new.db") as gallery:  # nothing enrolled: an empty gallery of the model
        assert len(gallery) == 0 and gallery.people == []


@pytest.mark.slow
@needs_models
@pytest.mark.skipif(not (SHARED / "lfw_devtrain" / "images").is_dir(), reason="../shared/data/lfw_devtrain is absent")
def test_the_real_model_names_group_pictures_as_gallery_recognize_does(tmp_path: Path) -> None:
    from facetorch.cli import gallery as gallery_cli

    config = str(REPO / "configs" / "embedding_dlib.yaml")
    gallery_cli.gallery(["compose", "--lfw", str(SHARED / "lfw_devtrain" / "images"), "--people", "4", "--per_person", "2",
                         "--scenes", "3", "--output", str(tmp_path / "set")])  # fmt: skip
    gallery = str(tmp_path / "people.db")
    gallery_cli.gallery(["enroll", "--config", config, "--images", str(tmp_path / "set" / "enrol"), "--gallery", gallery,
                         "--detector", "haar", "--quiet"])  # fmt: skip
    scenes = sorted((tmp_path / "set" / "scenes").glob("*"))
    gallery_cli.gallery(["recognize", "--config", config, "--gallery", gallery, "--source", str(tmp_path / "set" / "scenes"),
                         "--output", str(tmp_path / "out"), "--quiet"])  # fmt: skip
    rows = read_csv(tmp_path / "out" / "recognitions.csv")
    port = free_port()
    process = _start(["--gallery", gallery, "--config", config, "--log_level", "warning"], port, tmp_path / "log")
    try:
        for scene in scenes:
            status, answer = _post(f"http://127.0.0.1:{port}/v1/recognize", "image", scene.name, scene.read_bytes())
            assert status == 200
            api = sorted((*(f"{v:.1f}" for v in face["box"]), face["name"]) for face in answer["faces"])
            cli = sorted((row["x1"], row["y1"], row["x2"], row["y2"], row["name"]) for row in rows
                         if Path(row["source"]).name == scene.name)  # fmt: skip
            assert api == cli and len(api) > 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert {row["name"] for row in rows} - {"unknown"}, "nobody was named: the comparison would say little"


def _post_form(url: str, name: str, image: bytes, key: str) -> tuple[int, dict[str, Any]]:
    boundary = "facetorchtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}", **_auth(key)})
    with urllib.request.build_opener().open(request, timeout=60) as response:
        return response.status, json.loads(response.read())


@pytest.mark.slow
def test_two_workers_share_the_gallery_and_add_up_their_metrics(tmp_path: Path, tiny_checkpoints: dict) -> None:
    """One worker enrols; every answer after that, from either worker, names the person; /metrics counts both.

    A trained checkpoint, not the tiny config: each worker must load the same model (an untrained
    config would draw other weights in each process, and the gallery would refuse the other's).
    """
    import skimage.data

    astronaut = encode(skimage.data.astronaut())  # scikit-image's own photo: Haar finds her face
    key = "admin-key-0123456789abcdef"
    (tmp_path / "keys.txt").write_text(f"admin {key}\n", encoding="utf-8")
    port = free_port()
    checkpoint = str(tiny_checkpoints["embedding_tiny.yaml"][0])
    process = _start(["--gallery", str(tmp_path / "people.db"), "--ckpt_path", checkpoint, "--detector", "haar",
                      "--workers", "2", "--api_keys", str(tmp_path / "keys.txt"), "--threshold", "0.5",
                      "--log_level", "warning"], port, tmp_path / "log")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        status, enrolled = _post_form(f"{base}/v1/enroll", "Eileen Collins", astronaut, key)
        assert status == 200 and enrolled["added"] == 1
        names = [_post(f"{base}/v1/recognize", "image", "a.png", astronaut, key)[1]["faces"][0]["name"] for _ in range(12)]
        assert names == ["Eileen Collins"] * 12
        metrics = _get(f"{base}/metrics", key)[1]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    counted = [line for line in metrics.splitlines()
               if line.startswith('facetorch_requests_total{method="POST",route="/v1/recognize",status="200"}')]  # fmt: skip
    assert counted and float(counted[0].split()[-1]) == 12.0  # both workers' requests, whichever answered the scrape

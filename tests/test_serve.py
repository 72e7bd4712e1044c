"""The HTTP service: the contract's routes, the same names as ``gallery.py recognize``, every bad input, the keys.

Fast: the toy detector (coloured squares on black are faces) and embedder (a square's colour is
its identity) of ``tests/test_recognition.py`` behind FastAPI's ``TestClient``. The real model
runs in ``tests/test_serve_process.py`` (slow).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from facetorch.cli import gallery as gallery_cli
from facetorch.serve.auth import Keys, check_bind, load_keys
from facetorch.serve.batching import BatchQueue
from facetorch.serve.people import People
from tests.conftest import read_csv
from tests.serve_helpers import ADMIN_KEY, COLOURS, READ_KEY, STRANGER, encode, key_file, picture, toy_app, toy_gallery
from tests.test_recognition import ColourEmbedder, SquareDetector, write_rgb

GROUP = picture([(COLOURS["red"], 8, 8, 30), (COLOURS["blue"], 60, 50, 34), (STRANGER, 90, 6, 26)])
YELLOW = picture([(STRANGER, 20, 20, 40)])


def png_file(field: str, rgb: np.ndarray = GROUP, name: str = "group.png") -> dict[str, Any]:
    return {field: (name, encode(rgb), "image/png")}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    with TestClient(toy_app(toy_gallery(tmp_path))) as test_client:
        yield test_client


@pytest.fixture
def keyed(tmp_path: Path) -> TestClient:
    with TestClient(toy_app(toy_gallery(tmp_path), key_file(tmp_path))) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: Any, status: int) -> str:
    """The one-line error of a refused request (and the service still answers /health)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert list(body) == ["error"] and body["error"] and "\n" not in body["error"], body
    return body["error"]


# ------------------------------------------------------------------ the routes


def test_recognize_boxes_and_names_every_face_in_pixels_of_the_picture(client: TestClient) -> None:
    answer = client.post("/v1/recognize", files=png_file("image")).json()
    assert (answer["width"], answer["height"]) == (128, 96)
    found = {tuple(face["box"]): (face["name"], face["score"]) for face in answer["faces"]}
    assert found[(8.0, 8.0, 38.0, 38.0)] == ("red", 1.0)
    assert found[(60.0, 50.0, 94.0, 84.0)] == ("blue", 1.0)
    assert found[(90.0, 6.0, 116.0, 32.0)][1] < answer["threshold"] or found[(90.0, 6.0, 116.0, 32.0)][0] != "yellow"
    assert client.get("/health").json()["people"] == 3


def test_the_same_names_through_the_api_as_through_gallery_recognize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery_cli, "_embedder", lambda args, gallery=None, faces="whole", aligned=False: ColourEmbedder())
    monkeypatch.setattr(gallery_cli, "_detector", lambda args, recorded: SquareDetector())
    gallery = toy_gallery(tmp_path)
    rng = np.random.default_rng(0)
    colours = [*COLOURS.values(), STRANGER, (200, 60, 160)]
    for k in range(6):  # group pictures: 1-4 squares of random colours at separate places
        squares = [(colours[rng.integers(len(colours))], 4 + 40 * (i % 3), 4 + 48 * (i // 3), 28 + int(rng.integers(6)))
                   for i in range(1 + k % 4)]  # fmt: skip
        write_rgb(tmp_path / "scenes" / f"{k}.png", picture(squares))
    gallery_cli.gallery(["recognize", "--gallery", str(gallery), "--source", str(tmp_path / "scenes"),
                         "--output", str(tmp_path / "out"), "--threshold", "0.95", "--quiet"])  # fmt: skip
    cli_rows = read_csv(tmp_path / "out" / "recognitions.csv")
    with TestClient(toy_app(gallery, threshold=0.95)) as client:
        for k in range(6):
            file = tmp_path / "scenes" / f"{k}.png"
            api = client.post("/v1/recognize", files={"image": (file.name, file.read_bytes(), "image/png")}).json()["faces"]
            ours = sorted([f"{b:.1f}" for b in face["box"]] for face in api)
            theirs = sorted([row["x1"], row["y1"], row["x2"], row["y2"]] for row in cli_rows if Path(row["source"]) == file)
            assert ours == theirs
            by_box = {tuple(f"{b:.1f}" for b in face["box"]): face for face in api}
            for row in (r for r in cli_rows if Path(r["source"]) == file):
                face = by_box[(row["x1"], row["y1"], row["x2"], row["y2"])]
                assert face["name"] == row["name"] and f"{face['score']:.4f}" == row["score"]
    assert {row["name"] for row in cli_rows} >= {"red", "green", "blue", "unknown"}


def test_enrol_then_recognise_then_remove(client: TestClient, tmp_path: Path) -> None:
    answer = client.post("/v1/recognize", files=png_file("image", YELLOW)).json()
    assert answer["faces"][0]["name"] != "yellow"
    enrolled = client.post("/v1/enroll", data={"name": " yellow "},
                           files=[("images", ("y1.png", encode(YELLOW), "image/png")),
                                  ("images", ("two.png", encode(picture([(STRANGER, 5, 5, 30), (STRANGER, 60, 40, 30)])),
                                              "image/png")),
                                  ("images", ("none.png", encode(picture([])), "image/png"))]).json()  # fmt: skip
    # two.png: two faces alike, one of them matching the person's clear photo, which is taken (--pick's matching)
    assert enrolled["name"] == "yellow" and enrolled["added"] == 2 and enrolled["people"] == 4
    assert {s["image"] for s in enrolled["skipped"]} == {"none.png"}
    faces = client.post("/v1/recognize", files=png_file("image")).json()["faces"]
    assert sorted(face["name"] for face in faces) == ["blue", "red", "yellow"]
    assert client.get("/v1/people").json() == {"people": ["blue", "green", "red", "yellow"], "total": 4, "offset": 0}
    assert client.get("/v1/people", params={"limit": 1, "offset": 3}).json()["people"] == ["yellow"]
    again = error_of(client.post("/v1/enroll", data={"name": "someone"}, files=png_file("images", YELLOW)), 422)
    assert "enrolled already" in again
    assert client.delete("/v1/people/yellow").json() == {"name": "yellow", "removed": 2, "people": 3}
    assert "yellow" not in client.get("/v1/people").json()["people"]
    assert "not enrolled" in error_of(client.delete("/v1/people/yellow"), 404)
    from facetorch.recognition import open_gallery

    with open_gallery(tmp_path / "people.db") as gallery:  # written through
        assert gallery.people == ["blue", "green", "red"]


def test_verify_says_same_for_one_colour_and_names_its_threshold(client: TestClient) -> None:
    other = picture([(STRANGER, 70, 30, 30)])
    same = client.post("/v1/verify", files={**png_file("image1", YELLOW), **png_file("image2", other)}).json()
    assert same["same"] is True and same["score"] == pytest.approx(1.0) and same["threshold"] == 0.9
    assert same["threshold_kind"] == "pair" and same["boxes"] == [[20.0, 20.0, 60.0, 60.0], [70.0, 30.0, 100.0, 60.0]]
    red = picture([(COLOURS["red"], 10, 10, 30)])
    assert client.post("/v1/verify", files={**png_file("image1", YELLOW), **png_file("image2", red)}).json()["same"] is False
    blank = {**png_file("image1", YELLOW), **png_file("image2", picture([]))}
    assert "image2: no face found" in error_of(client.post("/v1/verify", files=blank), 422)


def test_health_metrics_page_and_openapi(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["auth"] is False and health["detector"] == "squares"
    client.post("/v1/recognize", files=png_file("image"))
    client.post("/v1/recognize", files={"image": ("x.png", b"not an image", "image/png")})
    text = client.get("/metrics").text
    assert 'facetorch_requests_total{method="POST",route="/v1/recognize",status="200"} 1.0' in text
    assert 'facetorch_errors_total{route="/v1/recognize",status="415"} 1.0' in text
    assert 'facetorch_faces_total{result="known"} 3.0' in text  # the toy gallery's threshold names all three
    assert "facetorch_request_seconds_bucket" in text and "facetorch_batch_images_count 1.0" in text
    page = client.get("/")
    assert page.status_code == 200 and 'id="photo"' in page.text and "getUserMedia" in client.get("/static/app.js").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/v1/recognize", "/v1/verify", "/v1/enroll", "/v1/people", "/v1/people/{name}", "/metrics"} <= set(paths)
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------ bad input


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height grey pixels (all zero, compressed to almost nothing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = zlib.compress(b"\0" * (width + 1) * 64)  # a few rows only: the decoder would fail late, the header is enough
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.parametrize("case, status, words", [
    ("not an image", 415, "is not an image"),
    ("truncated", 400, "cannot be decoded"),
    ("empty", 400, "is empty (0 bytes)"),
    ("bomb", 413, "over the limit"),
    ("huge bomb", 413, "pixels"),
    ("json body", 415, "takes multipart/form-data"),
    ("no image field", 422, "missing form field 'image'"),
    ("text instead of a file", 422, "form field 'image'"),
])  # fmt: skip
def test_every_bad_upload_gets_its_status_and_one_line_and_the_service_goes_on(client: TestClient, case: str, status: int,
                                                                               words: str) -> None:  # fmt: skip
    good = encode(GROUP)
    requests = {
        "not an image": {"files": {"image": ("a.png", b"GIF89a? no, just text", "image/png")}},
        "truncated": {"files": {"image": ("a.png", good[: len(good) // 2], "image/png")}},
        "empty": {"files": {"image": ("a.png", b"", "image/png")}},
        "bomb": {"files": {"image": ("bomb.png", bomb_png(8000, 8000), "image/png")}},
        "huge bomb": {"files": {"image": ("bomb.png", bomb_png(60000, 60000), "image/png")}},
        "json body": {"json": {"image": "x"}},
        "no image field": {"files": {"picture": ("a.png", good, "image/png")}},
        "text instead of a file": {"files": {"image": (None, "hello")}},
    }
    assert words in error_of(client.post("/v1/recognize", **requests[case]), status)
    assert client.get("/health").status_code == 200
    assert client.post("/v1/recognize", files=png_file("image")).status_code == 200


def test_an_upload_over_the_limit_is_refused_with_413_declared_or_streamed(tmp_path: Path) -> None:
    with TestClient(toy_app(toy_gallery(tmp_path), max_upload_mb=0.01)) as client:
        big = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)  # ~19 KB as PNG
        declared = client.post("/v1/recognize", files=png_file("image", big))
        assert "over the limit of 0.01 MB" in error_of(declared, 413)
        body = encode(big)
        streamed_chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
        streamed = client.post("/v1/recognize", content=streamed_chunks,
                               headers={"content-type": "multipart/form-data; boundary=xyz"})  # fmt: skip
        assert "more than 10,485 bytes" in error_of(streamed, 413)
        assert client.post("/v1/recognize", files=png_file("image")).status_code == 200


@pytest.mark.parametrize("name, words", [
    ("", "name is empty"), ("   ", "name is empty"), ("x" * 101, "101 characters"), ("a/b", "path separator"),
    ("..", "path separator"), ("a\\b", "path separator"), ("tab\there", "control"), ("nul\x00", "control"),
    ("zero\u200bwidth", "invisible"), ("Unknown", "unrecognised face"),
])  # fmt: skip
def test_bad_names_get_422(client: TestClient, name: str, words: str) -> None:
    assert words in error_of(client.post("/v1/enroll", data={"name": name}, files=png_file("images", YELLOW)), 422)
    assert client.get("/health").json()["people"] == 3


def test_enrolment_refusals(client: TestClient) -> None:
    assert "shows one clear face" in error_of(client.post("/v1/enroll", data={"name": "nobody"},
                                                          files=png_file("images", picture([]))), 422)  # fmt: skip
    assert "missing form field 'images'" in error_of(client.post("/v1/enroll", files={"name": (None, "x")}), 422)
    many = [("images", (f"{i}.png", encode(YELLOW), "image/png")) for i in range(21)]
    assert "at most 20" in error_of(client.post("/v1/enroll", data={"name": "many"}, files=many), 422)
    assert "control" in error_of(client.delete("/v1/people/tab%09name"), 422)
    assert "no such route" in error_of(client.delete("/v1/people/a%2Fb"), 404)  # a separator never reaches the route
    assert "no such route" in error_of(client.get("/v2/nothing"), 404)
    assert "does not take GET" in error_of(client.get("/v1/recognize"), 405)
    assert "query parameter 'limit'" in error_of(client.get("/v1/people", params={"limit": 0}), 422)


# ------------------------------------------------------------------ keys


@pytest.mark.parametrize("method, path, kind", [
    ("get", "/v1/people", "read"), ("post", "/v1/recognize", "read"), ("post", "/v1/verify", "read"),
    ("get", "/metrics", "read"), ("post", "/v1/enroll", "admin"), ("delete", "/v1/people/red", "admin"),
])  # fmt: skip
def test_the_key_matrix(keyed: TestClient, method: str, path: str, kind: str) -> None:
    body = {"/v1/recognize": {"files": png_file("image")}, "/v1/verify": {"files": {**png_file("image1", YELLOW),
                                                                                    **png_file("image2", YELLOW)}},
            "/v1/enroll": {"data": {"name": "yellow"}, "files": png_file("images", YELLOW)}}.get(path, {})  # fmt: skip
    call = getattr(keyed, method)
    missing = call(path, **body)
    assert "Authorization: Bearer KEY" in error_of(missing, 401) and missing.headers["www-authenticate"] == "Bearer"
    assert "not valid" in error_of(call(path, headers=bearer("wrong-key-0123456789abcdef"), **body), 401)
    assert error_of(call(path, headers={"Authorization": f"Basic {ADMIN_KEY}"}, **body), 401)
    if kind == "admin":
        assert "needs an admin key" in error_of(call(path, headers=bearer(READ_KEY), **body), 403)
    else:
        assert call(path, headers=bearer(READ_KEY), **body).status_code == 200
    assert call(path, headers=bearer(ADMIN_KEY), **body).status_code == 200
    assert keyed.get("/health").status_code == 200 and keyed.get("/").status_code == 200  # open: no key needed


def test_keys_never_reach_a_log_or_an_answer(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "not-a-key-but-a-secret-0123456789"
    answers = [keyed.get("/v1/people", headers=bearer(secret)).text, keyed.get("/v1/people", headers=bearer(READ_KEY)).text,
               keyed.post("/v1/enroll", headers=bearer(READ_KEY), data={"name": "x"}, files=png_file("images")).text,
               keyed.get("/metrics", headers=bearer(ADMIN_KEY)).text]  # fmt: skip
    logged = caplog.text + "".join(answers)
    assert secret not in logged and READ_KEY not in logged and ADMIN_KEY not in logged


def test_key_files_and_the_loopback_rule(tmp_path: Path) -> None:
    keys = load_keys(key_file(tmp_path))
    assert keys.role_of(READ_KEY) == "read" and keys.role_of(ADMIN_KEY) == "admin" and keys.role_of("nope") is None
    for text, words in [("read short\n", "at least 16"), ("reader 0123456789abcdef0123\n", "expected 'read KEY'"),
                        ("read 0123456789abcdef\nadmin 0123456789abcdef\n", "one role"), ("# nothing\n", "holds no key")]:
        (tmp_path / "bad.txt").write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=words) as raised:
            load_keys(tmp_path / "bad.txt")
        assert "0123456789abcdef" not in str(raised.value)  # the line is named, the key never
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_keys(tmp_path / "missing.txt")
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, Keys(None))
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.org"):
        with pytest.raises(ValueError, match="not a loopback address"):
            check_bind(host, Keys(None))
        check_bind(host, keys)


# ------------------------------------------------------------------ batching and the gallery


def test_concurrent_requests_share_one_batch_and_a_bad_item_fails_alone() -> None:
    seen: list[list[int]] = []
    release = threading.Event()

    def work(items: list[int]) -> list[int]:
        release.wait(5)
        seen.append(list(items))
        if 13 in items:
            raise ValueError("thirteen")
        return [item * 10 for item in items]

    queue: BatchQueue[int, int] = BatchQueue(work, window_s=0.05, max_batch=8)

    async def many() -> list[Any]:
        tasks = [asyncio.ensure_future(queue.submit(i)) for i in (1, 2, 13, 4)]
        await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(many())
    queue.close()
    assert results[:2] == [10, 20] and results[3] == 40 and isinstance(results[2], ValueError)
    assert seen[0] == [1, 2, 13, 4] and [1] in seen and [13] in seen  # one batch, then each alone


def test_two_workers_see_each_others_enrolments(tmp_path: Path) -> None:
    path = toy_gallery(tmp_path)
    first, second = (People(path, ColourEmbedder(), "squares") for _ in range(2))
    yellow = ColourEmbedder().embed_faces(YELLOW, np.array([[20, 20, 60, 60]]))
    added, notes = first.add("yellow", yellow, ["upload:yellow"])
    assert added == 1 and notes == []
    assert second.identify(yellow) == [("yellow", pytest.approx(1.0))]  # read again: the file changed
    assert second.remove("red") == 3
    assert first.people == ["blue", "green", "yellow"]
    notes = first.add("red", ColourEmbedder().embed_faces(GROUP, np.array([[8, 8, 38, 38]])), ["upload:red"])[1]
    assert second.people == ["blue", "green", "red", "yellow"] and notes == []


def test_a_large_picture_is_scaled_down_for_the_detector_alone_and_boxed_in_its_own_pixels(tmp_path: Path) -> None:
    from facetorch.serve.engine import ScaledDetector

    big = np.zeros((960, 1280, 3), dtype=np.uint8)
    big[100:400, 200:500] = COLOURS["red"]
    seen: list[tuple[int, ...]] = []

    class Recording(SquareDetector):
        def detect_batch(self, images: Any) -> Any:
            seen.extend(image.shape for image in images)
            return super().detect_batch(images)

    (boxes, _), = ScaledDetector(Recording(), max_side=320).detect_batch([big])
    assert seen == [(240, 320, 3)] and np.allclose(boxes, [[200, 100, 500, 400]], atol=4)
    with TestClient(toy_app(toy_gallery(tmp_path), max_side=320)) as client:
        face, = client.post("/v1/recognize", files=png_file("image", big)).json()["faces"]
    assert face["name"] == "red" and np.allclose(face["box"], [200, 100, 500, 400], atol=4)


def test_a_crowded_photo_is_matched_within_its_own_request_never_against_another(tmp_path: Path) -> None:
    """Verify chooses each photo's face alone; an enrolment matches its crowded photos against its own clear ones."""
    crowded = picture([(COLOURS["red"], 48, 32, 32), (COLOURS["blue"], 2, 2, 32)])  # red central, blue in a corner, alike
    clear_blue = picture([(COLOURS["blue"], 40, 30, 36)])
    with TestClient(toy_app(toy_gallery(tmp_path))) as client:
        verdict = client.post("/v1/verify", files={**png_file("image1", clear_blue), **png_file("image2", crowded)}).json()
        assert verdict["same"] is False and verdict["boxes"][1] == [48.0, 32.0, 80.0, 64.0]  # red: not blue by matching
        enrolled = client.post("/v1/enroll", data={"name": "bluish"},
                               files=[("images", ("clear.png", encode(clear_blue), "image/png")),
                                      ("images", ("crowded.png", encode(crowded), "image/png"))]).json()  # fmt: skip
        assert enrolled["added"] == 2  # the crowded photo's blue face: it matches this enrolment's clear photo

    from facetorch.serve.engine import Engine, Job

    engine = Engine(ColourEmbedder(), SquareDetector(), People(tmp_path / "people.db", ColourEmbedder(), "squares"))
    try:
        enrolment, other = object(), object()
        subjects = engine._run([Job("subject", crowded, enrolment), Job("subject", clear_blue, other)])
        assert list(subjects[0].box) == [48.0, 32.0, 80.0, 64.0]  # one batch, two requests: blue is not borrowed
    finally:
        engine.close()

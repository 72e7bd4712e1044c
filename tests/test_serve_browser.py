"""The web page in a real browser: Playwright drives Debian's Chromium against a live server on loopback.

Upload a picture and see the names; enrol a person from the page with the admin key; the new
person is named in the next upload. The server runs the toy models (coloured squares are faces).
Skipped where Playwright or ``/usr/bin/chromium`` is missing (``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.serve_helpers import ADMIN_KEY, COLOURS, STRANGER, encode, key_file, live_server, picture, toy_app, toy_gallery

CHROMIUM = Path(os.environ.get("FACETORCH_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


def test_upload_see_names_enrol_from_the_page_and_be_named_next(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    group = tmp_path / "group.png"
    group.write_bytes(encode(picture([(COLOURS["red"], 8, 8, 30), (COLOURS["blue"], 60, 50, 34), (STRANGER, 90, 6, 26)])))
    yellow = tmp_path / "yellow.png"
    yellow.write_bytes(encode(picture([(STRANGER, 20, 20, 40)])))
    app = toy_app(toy_gallery(tmp_path), key_file(tmp_path), threshold=0.95)
    with live_server(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#status")).to_contain_text("3 people")
            page.fill("#key", ADMIN_KEY)
            page.locator("#key").dispatch_event("change")
            expect(page.locator("#people li")).to_have_count(3)

            page.set_input_files("#photo", str(group))
            expect(page.locator("#faces li")).to_have_count(3)
            assert sorted(page.locator("#faces li").all_inner_texts()) == ["blue 1.00", "red 1.00", "unknown 0.33"]

            page.fill("#enrol-name", "yellow")
            page.set_input_files("#enrol-files", str(yellow))
            page.click("#enrol-button")
            expect(page.locator("#enrol-result")).to_contain_text("enrolled yellow: 1 photo(s)")
            expect(page.locator("#people li")).to_have_count(4)

            page.set_input_files("#photo", str(group))
            expect(page.locator("#faces li.known")).to_have_count(3)
            assert sorted(page.locator("#faces li").all_inner_texts()) == ["blue 1.00", "red 1.00", "yellow 1.00"]
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert (tmp_path / "page.png").stat().st_size > 5000

            page.fill("#key", "wrong-key-0123456789abcdef")
            page.set_input_files("#photo", str(group))
            expect(page.locator("#message")).to_contain_text("the API key is not valid")
        finally:
            browser.close()


def test_the_camera_takes_a_picture_and_sends_it(tmp_path: Path) -> None:
    """Chromium's fake camera (a generated test pattern) stands in for a webcam: the shot is recognised like a photo."""
    from playwright.sync_api import expect, sync_playwright

    app = toy_app(toy_gallery(tmp_path))
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    with live_server(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*ARGS, *fake_camera])
        try:
            page = browser.new_page()
            page.goto(url)  # http://127.0.0.1 is a secure context: getUserMedia is allowed
            page.click("#camera-start")
            expect(page.locator("#camera-shot")).to_be_visible()
            page.wait_for_function("document.getElementById('video').videoWidth > 0")
            page.click("#camera-shot")
            expect(page.locator("#faces li").first).to_be_visible()
            assert page.locator("#message").inner_text() == ""
            assert page.evaluate("document.getElementById('canvas').width") > 0
            page.click("#camera-stop")
            expect(page.locator("#video")).to_be_hidden()
        finally:
            browser.close()

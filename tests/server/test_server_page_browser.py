"""The chat page in a real browser: Playwright drives the distribution's Chromium, headless.

Chromium comes from Debian (`.ci/run` installs it); Playwright's own browser downloads are
never used. Without Chromium these tests skip on a developer's machine and fail in CI.
Screenshots are saved in test-artifacts/ at the repository root.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from rlchat.server import create_app
from rlchat.server.storage import Database, FeedbackStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 390, "height": 844}


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests")
    pytest.skip(reason, allow_module_level=True)


if not CHROMIUM.is_file():
    unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:
    unavailable("playwright is not installed (pip install -e '.[test]')")


@contextmanager
def served(app) -> Iterator[str]:  # noqa: ANN001
    """``app`` under uvicorn in a background thread, on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def live_server(settings) -> Iterator[str]:
    with served(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server) -> Iterator[Page]:
    """A phone-sized page on the chat, failing the test on any script error or foreign request."""
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def only_from_the_app(request) -> None:  # noqa: ANN001
        # The page must work offline: everything it loads comes from the server itself.
        if not request.url.startswith((live_server, "data:")):
            problems.append(f"request outside the app: {request.url}")

    page.on("request", only_from_the_app)
    page.goto(live_server)
    expect(page.locator("body.ready")).to_be_attached()
    yield page
    context.close()
    assert problems == []


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def replies(page: Page):  # noqa: ANN201
    return page.locator(".bubble.bot:not(.pending)")


def test_chat_rate_and_switch_genre(page, settings):
    send(page, "Hello there!")
    expect(replies(page)).to_have_count(1)
    send(page, "How are you today?")
    expect(replies(page)).to_have_count(2)
    expect(page.locator(".bubble.user")).to_have_count(2)
    expect(replies(page).first.locator(".meta")).to_contain_text("comedy")

    good = replies(page).first.get_by_role("button", name="Good reply")
    good.click()
    expect(good).to_have_attribute("aria-pressed", "true")
    database = Database(settings.database_location)
    [rating] = FeedbackStore(database).ratings()
    database.close()
    assert (rating["turn"], rating["rating"], rating["message"]) == (1, "up", "Hello there!")

    page.get_by_label("Genre").select_option("drama")
    send(page, "Where were you last night?")
    expect(replies(page)).to_have_count(3)
    expect(replies(page).nth(2).locator(".meta")).to_contain_text("drama")
    # Readable on a phone: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chat-page.png", full_page=True)


def test_the_page_leaves_decoding_to_the_server_unless_told(page):
    """By default the page sends no decoding settings, so the server's own apply (the
    quickstart serves MMI reranking); a strategy picked on the page is sent."""
    with page.expect_request("**/api/v1/chat") as first:
        send(page, "Hello there!")
    assert first.value.post_data_json["decoding"] == {}
    expect(replies(page)).to_have_count(1)
    page.locator("#decoding summary").click()
    page.get_by_label("Strategy").select_option("beam")
    with page.expect_request("**/api/v1/chat") as second:
        send(page, "How are you?")
    assert second.value.post_data_json["decoding"]["strategy"] == "beam"
    expect(replies(page)).to_have_count(2)


def test_keyboard_alone_sends_and_rates(page):
    expect(page.get_by_label("Message")).to_be_focused()
    page.keyboard.type("Can you hear me?")
    page.keyboard.press("Enter")
    expect(replies(page)).to_have_count(1)
    expect(page.get_by_label("Message")).to_be_focused()
    page.keyboard.press("Shift+Tab")  # back from the message box to the last reply's rating
    bad = replies(page).first.get_by_role("button", name="Bad reply")
    expect(bad).to_be_focused()
    page.keyboard.press("Space")
    expect(bad).to_have_attribute("aria-pressed", "true")


def test_a_failing_server_shows_a_visible_error(page):
    failure = {"error": "internal_error", "message": "internal server error", "fields": []}
    page.route("**/api/v1/chat", lambda route: route.fulfill(status=500, json=failure))
    send(page, "Anyone there?")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("internal server error")
    expect(page.locator(".bubble.user.failed")).to_have_count(1)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chat-page-error.png")

    page.unroute("**/api/v1/chat")
    page.route("**/api/v1/chat", lambda route: route.abort())
    send(page, "Still there?")
    expect(alert).to_contain_text("Cannot reach the server")


# What the original project's Vue front end does, with axios (an XMLHttpRequest): a JSON POST
# from its own origin to the API's `/chat`, shown from `response.data.reply`.
ORIGINAL_FRONT_END = """<!doctype html><html><body>
<input id="text" value="How are you?"><button id="send">Send</button><p id="reply"></p>
<script>
document.getElementById("send").onclick = () => {
  const request = new XMLHttpRequest();
  request.open("POST", API + "/chat");
  request.setRequestHeader("Content-Type", "application/json;charset=utf-8");
  request.onload = () => {
    document.getElementById("reply").textContent = JSON.parse(request.responseText).reply;
  };
  request.onerror = () => { document.getElementById("reply").textContent = "BLOCKED"; };
  request.send(JSON.stringify({text: document.getElementById("text").value}));
};
</script></body></html>"""


class Recorder:
    """ASGI middleware noting each request's method and path (the preflight included)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


def test_the_original_front_end_on_another_origin_gets_its_reply(browser, settings):
    """Cross-origin and preflighted, with no --cors-origin: `/chat` answers any origin."""
    api = Recorder(create_app(settings))
    with served(api) as api_url, served(front_end_app(api_url)) as front_end:
        front_end = front_end.replace("127.0.0.1", "localhost")  # another origin
        context = browser.new_context()
        page = context.new_page()
        page.goto(front_end)
        page.click("#send")
        expect(page.locator("#reply")).not_to_be_empty()
        reply = page.locator("#reply").text_content()
        context.close()
    assert reply != "BLOCKED"
    assert ("OPTIONS", "/chat") in api.seen and ("POST", "/chat") in api.seen


def front_end_app(api_url: str):  # noqa: ANN201
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    html = ORIGINAL_FRONT_END.replace("<script>", f"<script>const API = {api_url!r};", 1)
    return Starlette(routes=[Route("/", lambda request: HTMLResponse(html))])

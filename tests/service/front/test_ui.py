"""The page at /ui in a real browser: Debian's chromium driven by Playwright, against a real
service. Every answer the page shows is held to the API's answer for the same request."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import Server
from tests.support.tools import module_or_skip, tool_or_skip

module_or_skip("playwright", "pip install -e '.[dev]'")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow
TOKEN = "u" * 40
# As the machine notes start it: no sandbox as root, no background connections to Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def served(tiny_bundle) -> Iterator[Server]:
    """The tiny bundle; WALRUS_UI_BUNDLE names another (`make ui-screenshot`: the demo's)."""
    bundle = Path(os.environ.get("WALRUS_UI_BUNDLE") or tiny_bundle)
    with Server(bundle, WALRUS_FRONT__ADMIN_TOKEN=TOKEN) as srv:
        srv.wait()
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = tool_or_skip("chromium", "apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, served: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: problems.append(str(e)))
    opened.goto(f"{served.url}/")
    expect(opened.locator("body")).to_have_attribute("data-ready", "true")
    yield opened
    context.close()
    # Failed requests the test asked for (422, 404, a wrong token's 403) are logged by the
    # browser; nothing else may be.
    assert [p for p in problems if not any(code in p for code in ("422", "404", "403"))] == []


def api(served: Server, body: dict[str, Any]) -> list[str]:
    r = httpx.post(f"{served.url}/v1/recommend", json={"k": 10, "offset": 0, **body}, timeout=30)
    return [item["title"] for item in r.json()["items"]]


def card_titles(page: Page, where: str = "#results") -> list[str]:
    return page.locator(f"{where} .card h3").all_inner_texts()


def ask(page: Page) -> None:
    """Submit with the keyboard, and wait until the page has shown the answer."""
    done = int(page.locator("body").get_attribute("data-answers") or 0)
    page.locator("#query").press("Enter")
    expect(page.locator("body")).to_have_attribute("data-answers", str(done + 1))


def test_the_page_is_served_with_its_security_headers_and_nothing_else(served):
    r = httpx.get(f"{served.url}/", follow_redirects=True)
    assert r.status_code == 200 and r.url.path == "/ui/" and "<form" in r.text
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text and " style=" not in r.text  # nothing inline to allow
    for name, kind in (("ui.js", "javascript"), ("ui.css", "css")):
        assert kind in httpx.get(f"{served.url}/ui/{name}").headers["content-type"]
    assert httpx.get(f"{served.url}/ui/../settings.py").status_code == 404
    assert httpx.get(f"{served.url}/ui/nope.js").status_code == 404


def test_a_typed_query_shows_the_api_s_answer_and_the_footer_the_bundle(page, served):
    page.locator("#query").fill("space robots")
    ask(page)
    assert card_titles(page) == api(served, {"query": "space robots"})
    ready = httpx.get(f"{served.url}/readyz").json()
    expect(page.locator("#bundle")).to_have_text(ready["bundle_id"])
    expect(page.locator("#size")).to_contain_text(f"{ready['counts']['items']} items")
    assert page.locator("#results .badge").count() >= 10  # every card names its sources


def test_a_picked_user_and_a_filter_show_the_api_s_answers(page, served):
    page.locator("#user").fill("u1")
    expect(page.locator("#user-ids option").first).to_have_attribute("value", "u1")
    page.locator("#user").fill("u3")
    ask(page)
    assert card_titles(page) == api(served, {"user_id": "u3"})
    unfiltered = card_titles(page)
    page.locator("#rules summary").click()
    page.locator("#filter-topic").fill("space")
    ask(page)
    filtered = card_titles(page)
    assert filtered == api(served, {"user_id": "u3", "filter": {"topic": {"in": ["space"]}}})
    assert filtered != unfiltered


def test_a_card_s_similar_items_and_a_new_user_s_history(page, served):
    page.locator("#query").fill("space robots")
    ask(page)
    first = page.locator("#results .card").first
    item_id = first.get_attribute("data-item-id")
    done = int(page.locator("body").get_attribute("data-answers") or 0)
    first.locator(".show-similar").click()
    expect(page.locator("body")).to_have_attribute("data-answers", str(done + 1))
    expect(page.locator("#similar-section")).to_be_visible()
    similar = httpx.get(f"{served.url}/v1/items/{item_id}/similar", params={"k": 6}).json()
    expect(page.locator("#similar .card h3")).to_have_text([i["title"] for i in similar["items"]])
    page.locator("#new-user").check()
    ask(page)
    picked = [page.locator("#results .card").nth(i) for i in (0, 2)]
    ids = [card.get_attribute("data-item-id") for card in picked]
    for card in picked:
        card.locator(".add-history").click()
    expect(page.locator("#history li")).to_have_count(2)
    page.locator("#query").fill("")
    ask(page)
    assert card_titles(page) == api(served, {"history": ids})


def test_errors_are_shown_in_words(page):
    page.locator("#rules summary").click()
    page.locator("#offset").fill("5000")  # past WALRUS_LIMITS__OFFSET: the engine's 422
    ask(page)
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("422")
    expect(page.locator("#error")).to_contain_text("offset: at most 1000 (WALRUS_LIMITS__OFFSET)")


def test_it_reads_at_phone_width_and_is_screenshotted(browser, served, tmp_path):
    context = browser.new_context(viewport={"width": 375, "height": 800})
    phone = context.new_page()
    phone.goto(f"{served.url}/ui/")
    expect(phone.locator("body")).to_have_attribute("data-ready", "true")
    phone.locator("#query").fill("space robots")
    ask(phone)
    assert phone.evaluate("document.scrollingElement.scrollWidth") <= 375  # no sideways scroll
    context.close()
    desktop = browser.new_context(viewport={"width": 1100, "height": 900})
    shot = desktop.new_page()
    shot.goto(f"{served.url}/ui/")
    expect(shot.locator("body")).to_have_attribute("data-ready", "true")
    shot.locator("#query").fill("space robots")
    shot.locator("#user").fill("u0")
    shot.locator("#rules summary").click()
    shot.locator("#explain").check()
    shot.locator("#k").fill("6")
    ask(shot)
    path = Path(os.environ.get("WALRUS_UI_SCREENSHOT") or tmp_path / "ui.png")
    shot.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    desktop.close()


def test_the_experiment_panel_shows_the_arms_with_the_admin_token(page: Page, served: Server):
    page.locator("#experiment summary").click()
    page.fill("#admin-token", "wrong" * 8)
    page.click("#experiment-show")
    expect(page.locator("#error")).to_contain_text("The admin token was refused (403)")
    page.fill("#admin-token", TOKEN)
    page.click("#experiment-show")
    expect(page.locator("#experiment-status")).to_have_text(
        "No experiment runs: every user gets control."
    )
    report = httpx.get(
        f"{served.url}/v1/experiments", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    rows = page.locator("#experiment-arms tbody tr")
    expect(rows).to_have_count(2)
    control = rows.nth(0).locator("td")
    expect(control.nth(0)).to_have_text("control")
    expect(control.nth(1)).to_have_text(report["arms"]["control"]["bundle_id"])
    expect(control.nth(5)).to_have_text("no impressions yet")  # no Redis: nothing attributed
    page.click("#go")
    expect(page.locator("#arm")).to_have_text("control")

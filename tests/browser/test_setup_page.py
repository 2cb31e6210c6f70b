"""The owner's setup page in a real browser (Debian's chromium, driven by Playwright): the link `cosmogen
serve` printed opens a form that works under our CSP, says what is wrong in the page (passwords that
differ, a common password, a used link), wipes the token from the address bar, and leaves the browser
signed in as the owner."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.integration.api.sessions_support import setup_links
from tests.integration.conftest import serving

EMAIL = "owner@example.com"
PASSPHRASE = "tidal granite lantern orchard"  # noqa: S105 (a test user's)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, (
        "browser tests need Debian's chromium: `make test` installs it (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _fill(page: Page, password: str, again: str) -> None:
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=display_name]", "Owner")
    page.fill("input[name=password]", password)
    page.fill("input[name=again]", again)
    page.click("button[type=submit]")


def test_the_setup_link_makes_the_owner_in_a_browser(browser: Browser, tmp_path: Path) -> None:
    with serving(tmp_path, "--no-sandbox") as (url, _):
        [token] = setup_links(tmp_path / "serve.log")
        page = browser.new_page()
        errors: list[str] = []
        # Refusals by the CSP and script errors; the 4xx answers this test provokes are logged too, so
        # only missing files (a 404) and refusals count.
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "422" not in m.text
                and "403" not in m.text and "410" not in m.text else None)  # fmt: skip
        page.on("pageerror", lambda e: errors.append(str(e)))

        page.goto(f"{url}/setup#token={token}")
        assert page.url == f"{url}/setup"  # the token left the address bar (and history)
        _fill(page, PASSPHRASE, PASSPHRASE + "!")
        assert "differ" in page.inner_text("#problem")
        _fill(page, "password123", "password123")
        page.wait_for_selector("#problem:has-text('common')")
        _fill(page, PASSPHRASE, PASSPHRASE)
        page.wait_for_selector("#done:not([hidden])")
        assert page.inner_text("#who") == EMAIL
        me = page.evaluate("fetch('/api/v1/me').then(r => r.json().then(b => [r.status, b.role, b.via]))")
        assert me == [200, "admin", "session"]

        # The same link again: closed, and the page says what to do instead.
        again = browser.new_page()
        again.goto(f"{url}/setup#token={token}")
        _fill(again, PASSPHRASE, PASSPHRASE)
        again.wait_for_selector("#problem:has-text('sign in instead')")

        # Without the token: the page says where the link comes from, and offers no form.
        bare = browser.new_page()
        bare.goto(f"{url}/setup")
        assert bare.is_visible("#nolink") and not bare.is_visible("#setup")
        assert errors == [], errors  # nothing refused by the CSP, no script error

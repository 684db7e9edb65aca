"""The triage page driven in headless Chromium against a real server on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_support import free_port, make_tokens, start_server, write_intake

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    home = tmp_path / "home"
    intake = tmp_path / "intake"
    write_intake(intake)
    tokens = make_tokens(home)
    port = free_port()
    process = start_server(home, intake, port)
    try:
        yield f"http://127.0.0.1:{port}", tokens, home
    finally:
        process.terminate()
        process.wait(timeout=10)


def _admit(base: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    job = httpx.post(f"{base}/admissions", json={"path": "model.bin"}, headers=headers).json()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/admissions/{job['id']}", headers=headers).json()
        if job["status"] == "done":
            return str(job["digest"])
        time.sleep(0.1)
    raise AssertionError(f"admission did not finish: {job}")


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_triage_in_browser(server: tuple[str, dict[str, str], Path]) -> None:
    from playwright.sync_api import sync_playwright

    base, tokens, home = server
    digest = _admit(base, tokens["submitter"])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(f"{base}/triage")
            page.fill("#token", tokens["submitter"])
            page.click("button[type=submit]")
            assert "not a reviewer" in page.inner_text("[role=alert]")

            page.fill("#token", tokens["reviewer"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/triage")
            assert digest[:23] in page.inner_text("#queue")

            page.select_option("select[name=severity]", "critical")
            page.click("#filters button")
            assert digest[:23] not in page.inner_text("#queue")
            page.select_option("select[name=severity]", "")
            page.click("#filters button")

            page.click(f"a[href='/triage/item/{digest}']")
            assert "provenance.missing" in page.inner_text("#findings")
            assert "decision" in page.inner_text("#history")
            page.fill("#approve input[name=reason]", "built by our own pipeline")
            page.click("#approve button")
            assert "decision allow" in page.inner_text("#result")
        finally:
            browser.close()
    assert (home / "store" / "trusted" / "sha256" / digest[7:9] / digest[7:]).is_dir()

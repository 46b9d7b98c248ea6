"""A JupyterLab server on 127.0.0.1 with isolated settings, and headless Chromium through Playwright.

Chromium is Debian's ``/usr/bin/chromium`` (``scripts/install_chromium.sh``): Playwright's own
browser download does not work on our machines. Without it the browser tests skip, except
under ``CI=true``, where a missing browser is a failure rather than a silent skip.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import JupyterServer, jupyter_server, missing

CHROMIUM = os.environ.get("NBC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("NBC_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing: run scripts/install_chromium.sh")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("the playwright package is missing: pip install -e '.[test]'")
    return CHROMIUM


@pytest.fixture(scope="module")
def lab_server(
    tmp_path_factory: pytest.TempPathFactory, chromium_path: str
) -> Iterator[JupyterServer]:
    """``jupyter lab`` with a token and every config, runtime and settings folder in a temp dir."""
    with jupyter_server(tmp_path_factory.mktemp("lab"), "jupyterlab") as server:
        yield server


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """Keep each phase's report on the test item, for the page fixture to see a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1500})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:  # what the page showed when it failed
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            stem = f"FAILED-{request.node.name[:80]}"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / f"{stem}.png"))
            (ARTIFACTS / f"{stem}.console.txt").write_text("\n".join(console))
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

"""Retake the README's screenshots: docs/labextension.png, docs/panel.png and docs/sidebar.png.

Starts a headless JupyterLab with this checkout's extension (the helpers of
``tests/browser/servers.py``: temp config, settings and runtime folders) and Debian's
Chromium through Playwright, runs a small ``%%checkpoint`` training loop, and saves:

- ``sidebar.png``: the State checkpoints sidebar at JupyterLab's default width (about
  400 px) while the loop runs;
- ``labextension.png``: the page after the kernel was killed: sidebar, status bar and the
  restore offer;
- ``panel.png``: ``%checkpoint panel`` in the restarted kernel, a row selected.

Usage::

    python scripts/screenshots.py            # writes docs/*.png
    python scripts/screenshots.py --out DIR  # elsewhere
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from pages import cell, run_cell, wait_executed, wait_until, write_notebook  # noqa: E402
from servers import jupyter_server  # noqa: E402

CHROMIUM = os.environ.get("NBC_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOK = "train.ipynb"
CELLS = [
    "%load_ext nbcheckpoint\nimport os, random, time\nprint('PID', os.getpid())\n"
    "random.seed(0)\nweights = [0.0] * 512\nlosses = []",
    "%%checkpoint --every 0.5\nfor epoch in range(300):\n"
    "    weights = [w + random.gauss(0, 0.01) for w in weights]\n"
    "    losses.append(1 / (epoch + 1))\n    time.sleep(0.1)",
    "%checkpoint panel",
]
SIDEBAR = "#nbcheckpoint-sidebar"
OFFER = "Bring its variables back from state checkpoint"


def take(page: Any, server: Any, out: Path) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(server.lab_url(NOTEBOOK))
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
    # Fold the file browser away: more room for the notebook and the sidebar.
    page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()

    run_cell(page, 0)
    wait_executed(page, 0)
    output = cell(page, 0).locator(".jp-OutputArea").inner_text()
    pid = int(re.search(r"PID (\d+)", output).group(1))

    page.locator(".jp-NotebookPanel-toolbar .nbc-toolbar-button").click()
    sidebar = page.locator(SIDEBAR)
    sidebar.wait_for()
    run_cell(page, 1)
    rows = sidebar.locator(".nbc-panel .nbc-history button")
    wait_until(page, lambda: rows.count() >= 8, 90, "eight rows in the sidebar")
    page.wait_for_timeout(500)  # the panel's widgets settle their layout
    sidebar.screenshot(path=str(out / "sidebar.png"))
    print("sidebar.png: width", round(sidebar.bounding_box()["width"]), "px")

    # Killed as the out-of-memory killer would; JupyterLab restarts it and says so.
    os.kill(pid, signal.SIGKILL)
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=30_000)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    dialog.wait_for(state="detached")
    offer = page.locator(".Toastify__toast").filter(has_text=OFFER)
    offer.first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "labextension.png"))
    print("labextension.png:", offer.first.inner_text().splitlines()[0])

    offer.first.get_by_role("button", name="Restore").click()
    page.locator(".Toastify__toast").filter(has_text="Restored checkpoint").first.wait_for(
        timeout=60_000
    )
    # Close the sidebar: the panel goes in the notebook, at the notebook's width.
    page.locator(".jp-SideBar.jp-mod-right .lm-TabBar-tab.lm-mod-current").click()
    sidebar.wait_for(state="hidden")
    run_cell(page, 2)
    wait_executed(page, 2)
    panel = cell(page, 2).locator(".nbc-panel")
    panel.wait_for()
    panel_rows = panel.locator(".nbc-history button")
    wait_until(page, lambda: panel_rows.count() >= 8, 30, "the panel's rows")
    panel_rows.nth(2).click()
    panel.locator(".nbc-vars select option").first.wait_for(state="attached")
    # The "Restored" notification would cover the panel's corner.
    page.add_style_tag(content=".Toastify { display: none !important; }")
    page.wait_for_timeout(800)
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(out / "panel.png"))
    print("panel.png: rows", panel_rows.count())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        print(f"{CHROMIUM} is missing: run scripts/install_chromium.sh", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="nbc-screenshots-") as base,
        jupyter_server(Path(base), "jupyterlab") as server,
        sync_playwright() as p,
    ):
        write_notebook(server.root / NOTEBOOK, CELLS)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            take(page, server, args.out)
        finally:
            browser.close()
    print(f"saved in {args.out} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real uvicorn serving the API app (and so the UI) on loopback, and headless Chromium driven by Playwright.

Chromium is Debian's (``apt-get install chromium``), launched by path; Playwright's own
browser downloads are not used. Without it the browser tests are skipped.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(stack: Any) -> Iterator[str]:
    """The API app under uvicorn in a thread; yields its base URL."""
    import uvicorn

    from orchestra.api import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="ui-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium, or a skip naming what is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); the UI browser tests need it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def shoot() -> Callable[..., Path]:
    """Save a screenshot of ``page`` as ``tests/artifacts/ui-<name>.png``: the full page, or with
    ``full=False`` what the viewport shows."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def save(page: Any, name: str, full: bool = True) -> Path:
        path = ARTIFACTS / f"ui-{name}.png"
        page.screenshot(path=str(path), full_page=full)
        return path

    return save

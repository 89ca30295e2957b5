"""``/docs`` and ``/redoc`` in Chromium with every request off loopback refused: nothing comes from a CDN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def offline_page(browser: Any) -> tuple[Any, list[str]]:
    """A page whose requests to anywhere but loopback are aborted; returns it and the list of refused URLs."""
    refused: list[str] = []
    context = browser.new_context()

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).hostname in LOOPBACK or url.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort("internetdisconnected")

    context.route("**/*", route)
    return context.new_page(), refused


def test_swagger_ui_lists_the_endpoints_without_internet(server: str, browser: Any,
                                                         shoot: Callable[..., Any]) -> None:
    page, refused = offline_page(browser)

    page.goto(server + "/docs")

    page.locator(".opblock-summary-path", has_text="/v1/runs/{run_id}/audit").first.wait_for(timeout=15_000)
    paths = set(page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/v1/runs", "/v1/tasks", "/v1/workflows", "/healthz"} <= {p.strip() for p in paths}
    assert refused == []
    shoot(page, "docs-offline")


def test_redoc_renders_the_api_without_internet(server: str, browser: Any) -> None:
    page, refused = offline_page(browser)

    page.goto(server + "/redoc")

    page.get_by_role("heading", name="Orchestra").first.wait_for(timeout=15_000)
    page.get_by_text("/v1/runs/{run_id}/cancel").first.wait_for(state="attached", timeout=15_000)
    assert refused == []

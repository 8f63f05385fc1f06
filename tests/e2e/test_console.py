"""The web console in a real headless browser (Debian's chromium, driven through
chromedriver): a daemon on a ServiceEntry directory with a real Envoy connected, in one
process (Envoy on SotW, then on Delta) and with two xDS worker processes.  The page
loads with no console error and shows the registry, the service and the Envoy; a changed
ServiceEntry shows up as a new push on the timeline and the Envoy turns SYNCED for it,
without a reload.  Text a client sends is shown, never run; ``/debug/history``, when a
daemon lists it, becomes a Changes view.

Without chromium and chromedriver the tests are skipped, or fail when ``CI`` is set
(``.ci/run`` installs them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.common.by import By

from registryd.testing import AdsClient
from registryd.testing.ads import TYPES
from registryd.web.server import CONSOLE_FILES, console_files
from tests.e2e.checks import use_api
from tests.e2e.conftest import Stack
from tests.e2e.entries import service_entry, write_entries
from tests.e2e.loop_thread import LoopThread
from tests.support.browser import (
    BROWSER_HINT,
    browser_paths,
    console_errors,
    headless,
    page_ready,
    wait_for,
)
from tests.support.certs import missing

HOST = "web.example"
REGISTRY = "serviceentry/configDir"
ENVOY = "sidecar~127.0.0.1~envoy-1.default~default.svc.cluster.local"  # the bootstrap's
WAIT = 30.0  # seconds: a page refresh every 2 s, on a loaded machine


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    paths = browser_paths()
    if paths is None:
        missing(f"no chromium and chromedriver on PATH: {BROWSER_HINT}")
    with headless(paths) as driver:
        yield driver


def write_web(stack: Stack, *addresses: str) -> None:
    entry = service_entry(HOST, 80, [(a, 8080) for a in addresses])
    write_entries(stack.config_dir / "web.yaml", entry)


def rows(browser: webdriver.Chrome, selector: str) -> list[dict[str, str]]:
    """The data attributes of every element matching ``selector`` (read in the page, at
    once: the console re-renders its tables on every change)."""
    found = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => ({...e.dataset}))",
        selector,
    )
    return list(found)


def envoy_row(browser: webdriver.Chrome) -> dict[str, str] | None:
    return next(iter(rows(browser, f'#proxies-body tr[data-proxy="{ENVOY}"]')), None)


@pytest.mark.parametrize(
    ("workers", "api_type"),
    [(1, "GRPC"), (1, "DELTA_GRPC"), (2, "GRPC")],
    ids=["one-process", "one-process-delta", "two-workers"],
)
def test_console_shows_the_daemon_and_follows_a_change(
    stack: Stack, browser: webdriver.Chrome, workers: int, api_type: str
) -> None:
    write_web(stack, "127.0.0.1")
    registryd = stack.start_registryd(f"--xdsWorkers={workers}")
    stack.start_envoy(registryd, use_api(api_type))
    browser.get(f"http://127.0.0.1:{registryd.http_port}/ui")
    wait_for(lambda: page_ready(browser), "the console's first render", deadline=WAIT)

    assert rows(browser, f'#registries-body tr[data-registry="{REGISTRY}"]')
    assert rows(browser, f'#services-body tr[data-hostname="{HOST}"]')
    envoy = wait_for(
        lambda: (row := envoy_row(browser)) and row["state"] == "SYNCED" and row,
        "the Envoy SYNCED in the proxies view",
        deadline=WAIT,
        details=stack.logs,
    )
    assert envoy["kind"] == ("Envoy Delta" if api_type == "DELTA_GRPC" else "Envoy SotW")
    row_text = browser.find_element(By.CSS_SELECTOR, f'#proxies-body tr[data-proxy="{ENVOY}"]')
    if workers > 1:
        assert "pid" in row_text.text  # the serving worker is named
    before = max(int(r["push"]) for r in rows(browser, "#pushes-body tr[data-push]"))

    # a registry change appears on the timeline and the Envoy ACKs it: no reload
    browser.execute_script("window.notReloaded = true")
    write_web(stack, "127.0.0.1", "127.0.0.2")

    def new_push() -> int | None:
        for push in rows(browser, "#pushes-body tr[data-push]"):
            if int(push["push"]) > before and push["pending"] == "0":
                return int(push["push"])
        return None

    version = wait_for(new_push, "the new push, with no proxy pending", deadline=WAIT)
    assert rows(browser, f'#chart [data-version="{version}"]'), "the push is on the chart"
    wait_for(
        lambda: (
            (row := envoy_row(browser))
            and row["state"] == "SYNCED"
            and int(row["version"]) >= version
        ),
        f"the Envoy SYNCED at version {version}",
        deadline=WAIT,
        details=stack.logs,
    )
    assert browser.execute_script("return window.notReloaded") is True

    # the change history (/debug/history) names the push, the registry, the hostname, and
    # the Envoy's ACK of it
    def change_row() -> dict[str, str] | None:
        for row in rows(browser, f'#changes-body tr[data-push="{version}"]'):
            if row["registry"] == REGISTRY and row["reached"] != "0":
                if row["acked"] == row["reached"]:
                    return row
        return None

    wait_for(change_row, "the change in the Changes view, ACKed", deadline=WAIT)
    assert browser.find_element(By.ID, "changes").is_displayed()
    changes = browser.find_element(By.ID, "changes-body").text
    assert HOST in changes and REGISTRY in changes

    # the push's details: trigger registry and hostname, nobody pending
    browser.find_element(By.CSS_SELECTOR, f'#pushes-body tr[data-push="{version}"]').click()
    detail = wait_for(
        lambda: (box := browser.find_element(By.ID, "push-detail")).is_displayed() and box.text,
        "the push's details",
    )
    assert REGISTRY in detail and HOST in detail and "Pending (0)" in detail

    # a service's endpoints per registry, from /debug/endpointz
    browser.find_element(By.CSS_SELECTOR, f'#services-body tr[data-hostname="{HOST}"]').click()
    endpoints = wait_for(
        lambda: (
            "127.0.0.2:8080" in (text := browser.find_element(By.ID, "services-body").text) and text
        ),
        "the service's endpoints",
    )
    assert "attributes won" in endpoints

    # search narrows the services and proxies
    browser.find_element(By.ID, "search").send_keys("no-such-name")
    wait_for(
        lambda: (
            not rows(browser, "#services-body tr[data-hostname]")
            and not rows(browser, "#proxies-body tr[data-proxy]")
        ),
        "search to hide every row",
    )
    assert console_errors(browser) == []


HOSTILE = 'sidecar~10.0.0.9~<img src=x onerror="window.pwned=1">.default~default.svc'
HOSTILE_NACK = '<script>window.pwned=2</script><b onmouseover="window.pwned=3">bad</b>'


def test_client_text_is_shown_as_text_never_run(stack: Stack, browser: webdriver.Chrome) -> None:
    write_web(stack, "127.0.0.1")
    registryd = stack.start_registryd("--xdsWorkers=1")
    loop = LoopThread()
    client = AdsClient(f"127.0.0.1:{registryd.grpc_port}", node_id=HOSTILE)
    try:
        client.reject[TYPES["cds"]] = HOSTILE_NACK
        loop.call(client.connect())
        client.subscribe("cds")
        loop.call(client.next("cds", timeout=15))
        browser.get(f"http://127.0.0.1:{registryd.http_port}/ui")
        wait_for(lambda: page_ready(browser), "the console's first render", deadline=WAIT)
        row = wait_for(
            lambda: next(iter(rows(browser, "#proxies-body tr[data-proxy]")), None),
            "the hostile client's row",
            deadline=WAIT,
        )
        assert row["proxy"] == HOSTILE and row["state"] == "NACKED"
        text = browser.find_element(By.ID, "proxies-body").text
        assert HOSTILE in text and HOSTILE_NACK in text  # shown as written
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script, main b")
        assert browser.execute_script("return window.pwned") is None
    finally:
        loop.call(client.close())
        loop.close()


HISTORY = [
    {"registry": "serviceentry/configDir", "change": "<img src=x onerror=window.pwned=4>"},
    {"registry": "consul/dc1", "push": 7, "hostnames": ["a.example", "b.example"]},
]


def test_changes_view_shows_debug_history_when_the_daemon_lists_it(
    browser: webdriver.Chrome,
) -> None:
    """``/debug/history`` comes from another part of the daemon: a server that has it
    (answers as it may give them) makes the console show a Changes view, any fields."""
    empty = {"version": 1, "registries": [], "services": [], "proxies": [], "pushes": []}
    files = console_files()

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        for name, kind in CONSOLE_FILES.items():
            body = files[name]
            path = "/ui/" if name == "index.html" else f"/ui/{name}"
            app.router.add_get(path, _fixed(body, kind))
        app.router.add_get("/debug/console", _fixed(json.dumps(empty | {"unanswered": []})))
        listed = [{"path": "/debug/history", "description": "changes"}]
        app.router.add_get("/debug/list", _fixed(json.dumps(listed)))
        app.router.add_get("/debug/history", _fixed(json.dumps(HISTORY)))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    loop = LoopThread()
    runner, port = loop.call(start())
    try:
        browser.get(f"http://127.0.0.1:{port}/ui/")
        wait_for(
            lambda: browser.find_element(By.ID, "changes").is_displayed(),
            "the Changes view",
            deadline=WAIT,
        )
        head = browser.find_element(By.ID, "changes-head").text
        assert head.split() == ["registry", "change", "push", "hostnames"]
        body = browser.find_element(By.ID, "changes-body").text
        assert HISTORY[0]["change"] in body and '["a.example","b.example"]' in body
        assert not browser.find_elements(By.CSS_SELECTOR, "main img")
        assert browser.execute_script("return window.pwned") is None
        assert console_errors(browser) == []
    finally:
        loop.call(runner.cleanup())
        loop.close()


def _fixed(body: str | bytes, kind: str = "application/json") -> Any:
    async def answer(_: web.Request) -> web.Response:
        data = body.encode() if isinstance(body, str) else body
        return web.Response(body=data, content_type=kind)

    return answer

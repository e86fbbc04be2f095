"""The operator console (`/admin`) in headless Chromium against a real node: the list with its filters and
paging, a transaction's detail and the operator actions on it (force stop, pause and resume, skipping a branch
that fails forever), the needs-attention list and bulk actions, the live charts, topics, the token, and what
the page routes serve (content types, CSP, no path outside the package)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from selenium import webdriver

from tests.browser.conftest import Console, msg, saga, submit
from tests.support.busi import BusiServer, Reply
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

pytestmark = pytest.mark.browser

#: A gid a careless page would run as markup; printable ASCII without spaces, so DTM accepts it.
HOSTILE_GID = "<img/src=x/onerror=window.pwned=1>"
OPERATOR_TOKEN = "console-operator-token-5f2c9a71"
FAILING_BODY = '{"message":"insufficient funds: account <b>42</b> is frozen"}'


def failing_saga(node: FastdtmNode, busi: BusiServer, gid: str) -> None:
    """A two-step saga whose first action answers 500 forever: it keeps retrying and needs attention."""
    busi.script("/TransOut", [Reply(500, FAILING_BODY)])
    submit(node, saga(gid, (busi.url("/TransOut"), busi.url("/TransOutRevert")), (busi.url("/TransIn"), "")))


@pytest.mark.parametrize("store_url", ["sqlite", "redis"], indirect=True)
def test_list_shows_transactions_and_filters_them(console: Console, node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/Refuse", [409])
    for i in range(3):
        submit(node, saga(f"done-{i}", (busi.url("/TransOut"), busi.url("/TransOutRevert"))))
    for i in range(2):
        submit(node, saga(f"rolled-back-{i}", (busi.url("/Refuse"), busi.url("/TransOutRevert"))))
    submit(node, msg("message-0", busi.url("/TransIn")))
    submit(node, saga(HOSTILE_GID, ("", "")))
    failing_saga(node, busi, "transfer-stuck")
    for gid in ("rolled-back-0", "rolled-back-1"):
        wait_status(node, gid, {"failed"})

    console.open("transactions")
    every = {"done-0", "done-1", "done-2", "rolled-back-0", "rolled-back-1", "message-0", HOSTILE_GID, "transfer-stuck"}
    console.wait_rows(lambda gids: set(gids) == every, "all eight transactions")
    # The hostile gid is text in a link, never markup.
    assert HOSTILE_GID in [link.text for link in console.all("gid-link")]
    assert console.driver.execute_script("return window.pwned === undefined && !document.querySelector('main img')")
    console.screenshot("list")
    # Its detail is reachable too: the gid travels percent-encoded in the hash and in the query.
    next(link for link in console.all("gid-link") if link.text == HOSTILE_GID).click()
    console.until(lambda: console.text_of("detail-gid") == HOSTILE_GID, "the hostile gid's detail")
    console.open("transactions")

    console.choose("filter-status", "failed")
    console.click("filter-apply")
    console.wait_rows(lambda gids: sorted(gids) == ["rolled-back-0", "rolled-back-1"], "the failed ones")
    assert {badge.text for badge in console.all("trans-status")} == {"failed"}

    console.choose("filter-status", "")
    console.choose("filter-type", "msg")
    console.click("filter-apply")
    console.wait_rows(lambda gids: gids == ["message-0"], "the msg")

    console.choose("filter-type", "")
    console.choose("filter-to", "2000-01-01T00:00:00")
    console.click("filter-apply")
    console.one("empty")
    assert not console.all("trans-row")

    console.click("filter-reset")
    console.type_into("filter-gid", "done-1")
    console.click("filter-apply")
    console.wait_rows(lambda gids: gids == ["done-1"], "one gid")
    assert not console.one("page-next").is_enabled()


def test_next_and_previous_page_through_the_list(console: Console, node: FastdtmNode) -> None:
    gids = {f"page-{i:02d}" for i in range(23)}
    for gid in sorted(gids):
        submit(node, saga(gid, ("", "")))
    console.open("transactions")

    pages: list[list[str]] = []
    for size in (10, 10, 3):
        seen = pages[-1] if pages else []
        page = console.wait_rows(lambda g, n=size, s=seen: len(g) == n and g != s, f"a page of {size}")  # type: ignore[misc]
        pages.append(page)
        if size != 3:
            console.click("page-next")
    assert set().union(*pages) == gids
    assert not console.one("page-next").is_enabled()
    assert console.text_of("page-info") == "Page 3"

    console.click("page-prev")
    console.wait_rows(lambda g: g == pages[1], "page 2 again")
    console.click("page-prev")
    console.wait_rows(lambda g: g == pages[0], "page 1 again")
    assert not console.one("page-prev").is_enabled()


def test_detail_then_force_stop(console: Console, node: FastdtmNode, busi: BusiServer) -> None:
    failing_saga(node, busi, "stuck-1")
    busi.wait_calls("/TransOut", 1)
    console.open("transactions")
    console.row("trans-row", "stuck-1")
    next(link for link in console.all("gid-link") if link.text == "stuck-1").click()

    assert console.text_of("detail-gid") == "stuck-1"
    assert console.text_of("detail-status") == "submitted"
    branches = console.value_until(lambda: rows if len(rows := console.all("branch-row")) == 4 else None, "4 branches")
    assert [(b.get_attribute("data-branch-id"), b.get_attribute("data-op")) for b in branches] == [
        ("01", "compensate"),
        ("01", "action"),
        ("02", "compensate"),
        ("02", "action"),
    ]
    assert busi.url("/TransOut") in branches[1].text
    console.one("raw-json").click()
    assert '"gid": "stuck-1"' in console.text_of("raw-json-text")

    console.click("detail-force-stop")
    console.confirm()
    console.until(lambda: console.text_of("detail-status") == "failed", "the status failed")
    assert query(node, "stuck-1")["transaction"]["status"] == "failed"
    assert not console.one("detail-force-stop").is_enabled()


def test_a_failing_saga_needs_attention_and_skipping_its_branch_finishes_it(
    console: Console, node: FastdtmNode, busi: BusiServer
) -> None:
    failing_saga(node, busi, "transfer-7")
    busi.wait_calls("/TransOut", 2)
    console.open("attention")
    row = console.row("attention-row", "transfer-7")
    console.until(lambda: "insufficient funds" in row.text, "the last error in the row")
    console.screenshot("attention")
    console.click("attention-retry", row)
    console.until(lambda: "transfer-7 is due now" in console.text_of("notice"), "the retry confirmed")

    next(link for link in console.all("gid-link") if link.text == "transfer-7").click()
    action = console.value_until(
        lambda: next((r for r in console.all("branch-row") if r.get_attribute("data-op") == "action"), None),
        "the action row",
    )
    assert "insufficient funds" in console.one("branch-error", action).text
    console.click("branch-skip", action)
    # The reason is required: confirming waits for one.
    assert not console.one("modal-confirm").is_enabled()
    console.confirm("account unfrozen by hand, ticket OPS-1234")

    wait_status(node, "transfer-7", {"succeed"})
    console.click("detail-refresh")
    console.until(lambda: console.text_of("detail-status") == "succeed", "the status succeed")
    assert "ticket OPS-1234" in console.text_of("branch-operator-reason")
    console.screenshot("detail")


def test_pause_and_resume(console: Console, node: FastdtmNode, busi: BusiServer) -> None:
    failing_saga(node, busi, "pausable")
    busi.wait_calls("/TransOut", 1)
    console.open("transactions/pausable")
    console.click("detail-pause")
    console.confirm()
    console.one("paused-badge")
    assert query(node, "pausable")["transaction"].get("paused") is True
    # A refusal is shown with the node's own reason.
    console.click("detail-retry")
    console.until(lambda: "resume it to retry" in console.text_of("notice"), "the refusal of a retry while paused")

    console.click("detail-resume")
    console.until(lambda: not console.all("paused-badge") and console.all("detail-pause"), "the pause button back")
    assert not query(node, "pausable")["transaction"].get("paused")


def test_bulk_force_stop_after_a_preview(console: Console, node: FastdtmNode, busi: BusiServer) -> None:
    stuck = [f"bulk-{i}" for i in range(3)]
    for gid in stuck:
        failing_saga(node, busi, gid)
    submit(node, saga("bulk-done", ("", "")))
    busi.wait_calls("/TransOut", 3)
    console.open("attention")
    console.choose("bulk-type", "saga")
    console.choose("bulk-action", "force_stop")
    console.click("bulk-preview")
    console.until(lambda: console.one("bulk-count").get_attribute("data-count") == "3", "a count of 3")
    assert set(console.text_of("bulk-sample").removeprefix("e.g. ").split(", ")) == set(stuck)

    console.click("bulk-apply")
    console.confirm()
    console.until(lambda: "Done: 3" in console.text_of("bulk-outcome"), "3 done")
    for gid in stuck:
        wait_status(node, gid, {"failed"})
    assert query(node, "bulk-done")["transaction"]["status"] == "succeed"


def test_live_charts_draw_while_transactions_run(console: Console, node: FastdtmNode, busi: BusiServer) -> None:
    with running_sagas(node, busi):
        console.open("live")
        # Three segments: the rates of four polls, a line worth a look in the screenshot.
        console.until(lambda: _line(console, "chart-tx").count(" L") >= 3, "a line of four points in the tx/s chart")
        console.until(lambda: " L" in _line(console, "chart-calls"), "a line in the branch-calls chart")
        console.one("node-row")
        console.screenshot("live")
    assert console.one("unowned").get_attribute("data-count") == "0"


def _line(console: Console, chart: str) -> str:
    paths = console.all("chart-line", console.one(chart))
    return " ".join(p.get_attribute("d") or "" for p in paths)


@contextmanager
def running_sagas(node: FastdtmNode, busi: BusiServer) -> Iterator[None]:
    """Submits a two-step saga every 50 ms on a thread until the block ends."""
    stop = threading.Event()
    errors: list[str] = []

    def run() -> None:
        i = 0
        while not stop.wait(0.05):
            body = saga(f"live-{i}", (busi.url("/TransOut"), ""), (busi.url("/TransIn"), ""))
            reply = httpx.post(f"{node.dtm}/submit", json=body, timeout=10.0)
            if reply.status_code != 200:
                errors.append(reply.text)
            i += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
    assert not errors, errors[:3]


def test_topics_subscribe_unsubscribe_delete(console: Console, node: FastdtmNode, busi: BusiServer) -> None:
    console.open("topics")
    console.one("topics-table")
    console.type_into("topic-name", "orders")
    console.type_into("topic-url", busi.url("/OnOrder"))
    console.type_into("topic-remark", "billing")
    console.click("topic-subscribe")
    row = console.value_until(
        lambda: next((r for r in console.all("topic-row") if r.get_attribute("data-topic") == "orders"), None),
        "the topic row",
    )
    subscriber = console.one("subscriber", row)
    assert subscriber.get_attribute("data-url") == busi.url("/OnOrder")
    assert "billing" in subscriber.text

    console.click("unsubscribe", subscriber)
    console.confirm()
    console.until(lambda: not console.all("subscriber"), "no subscriber left")
    console.click("topic-delete")
    console.confirm()
    console.until(lambda: not console.all("topic-row"), "the topic gone")


def test_a_token_is_asked_for_then_sent(
    browser: webdriver.Chrome, node_factory: NodeFactory, tmp_path: Path, store_url: str
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{OPERATOR_TOKEN} operator\n")
    tokens.chmod(0o600)
    node = node_factory(store_url, "--auth-file", str(tokens))
    submit(node, saga("behind-a-token", ("", "")), token=OPERATOR_TOKEN)
    console = Console(browser, node.base, tmp_path / "screenshots")
    try:
        console.open("transactions")
        console.until(lambda: "Operator token needed" in console.text_of("banner"), "the token banner")
        console.type_into("token-input", OPERATOR_TOKEN)
        console.click("token-save")
        console.wait_rows(lambda gids: gids == ["behind-a-token"], "the list once the token is sent")
        assert not console.one("banner").is_displayed()
    finally:
        console.check_no_script_errors()
        browser.get("about:blank")


def test_page_routes_serve_only_the_package_files(node: FastdtmNode) -> None:
    with httpx.Client(base_url=node.base, timeout=5.0) as client:
        for path in ("/admin", "/admin/"):
            page = client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["cache-control"] == "no-cache"
            assert "default-src 'self'" in page.headers["content-security-policy"]
        script = client.get("/admin/static/console.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert (
            client.get("/admin/static/console.js", headers={"If-None-Match": script.headers["etag"]}).status_code == 304
        )
        assert client.get("/admin/static/console.css").headers["content-type"].startswith("text/css")
        for missing in ("/admin/static/nope.js", "/admin/static/__init__.py", "/admin/static/..%2F__init__.py"):
            assert client.get(missing).status_code == 404, missing

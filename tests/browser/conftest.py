"""The operator console in a real browser: this module owns Debian's headless `chromium` driven by Selenium
through Debian's `chromedriver` (named explicitly, so Selenium never downloads one), a `Console` that knows the
page's `data-test` hooks, the fastdtm node each test gets (embedded store unless a test asks for Redis), the
transactions tests seed over DTM's HTTP API, and the screenshots (always into a temporary directory; also into
docs/console/ when FASTDTM_SCREENSHOTS=1, so that CI runs never change the checkout).

Without chromium or chromedriver the tests skip, and fail under CI=true."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import fresh_store_url, missing_toolchain
from tests.support.node import REPO_ROOT, FastdtmNode, NodeFactory

T = TypeVar("T")

CHROMEDRIVER: Final = "/usr/bin/chromedriver"
#: How long any wait for the page may take: a failure names what did not appear instead of hanging.
WAIT_S: Final = 15.0
SCREENSHOT_DIR: Final = REPO_ROOT / "docs" / "console"
#: Saved by the test that builds the view with realistic data (list, detail, attention, live).
SCREENSHOT_NAMES: Final = frozenset({"list", "detail", "attention", "live"})


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    binary = chromium_binary()
    driver_path = CHROMEDRIVER if os.access(CHROMEDRIVER, os.X_OK) else shutil.which("chromedriver")
    if binary is None or driver_path is None:
        missing_toolchain(
            "the console's browser tests need Debian's chromium and chromium-driver "
            "(`apt-get install chromium chromium-driver`)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    # Script errors and CSP refusals reach the test through the browser log (Console.check_no_script_errors).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    except WebDriverException as exc:
        missing_toolchain(f"chromium did not start under chromedriver {driver_path}: {exc.msg}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite")])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded store; a test parametrizes `store_url` indirectly to run on Redis as well."""
    return fresh_store_url(request, request.param, tmp_path)


@pytest.fixture
def node(node_factory: NodeFactory, store_url: str) -> FastdtmNode:
    return node_factory(store_url)


@pytest.fixture
def console(browser: webdriver.Chrome, node: FastdtmNode, tmp_path: Path) -> Iterator[Console]:
    page = Console(browser, node.base, tmp_path / "screenshots")
    try:
        yield page
    finally:
        page.check_no_script_errors()
        # The next test's node listens on another port, another origin; leave nothing polling this one.
        browser.get("about:blank")


class Console:
    """The console page of one node, found by its `data-test` attributes."""

    def __init__(self, driver: webdriver.Chrome, base: str, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots

    def open(self, fragment: str) -> None:
        """`fragment`: the route after `#/`, e.g. `transactions` or `transactions/<gid>`."""
        self.driver.get(f"{self.base}/admin#/{fragment}")
        self.until(lambda: self.driver.execute_script("return document.readyState") == "complete", "the page loads")

    def until(self, condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
        """Wait for `condition` to be true; a view re-rendering under it (a stale element) is not a failure."""
        self.value_until(lambda: True if condition() else None, what, timeout)

    def value_until(self, get: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
        """Wait for `get` to give something other than None, and return it."""
        wait = WebDriverWait(
            self.driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        )
        return cast(T, wait.until(lambda _driver: get(), f"waited {timeout}s for: {what}"))

    def all(self, test: str, within: WebElement | None = None) -> list[WebElement]:
        root: Any = within if within is not None else self.driver
        found: list[WebElement] = root.find_elements(By.CSS_SELECTOR, f'[data-test="{test}"]')
        return found

    def one(self, test: str, within: WebElement | None = None) -> WebElement:
        return self.value_until(lambda: next(iter(self.all(test, within)), None), f'an element [data-test="{test}"]')

    def click(self, test: str, within: WebElement | None = None) -> None:
        self.until(lambda: self._clicked(test, within), f'[data-test="{test}"] to be clickable')

    def _clicked(self, test: str, within: WebElement | None) -> bool:
        for element in self.all(test, within):
            if element.is_displayed() and element.is_enabled():
                element.click()
                return True
        return False

    def type_into(self, test: str, text: str) -> None:
        element = self.one(test)
        element.clear()
        element.send_keys(text)

    def choose(self, test: str, value: str) -> None:
        self.driver.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'));",
            self.one(test),
            value,
        )

    def row_gids(self, test: str = "trans-row") -> list[str]:
        return [row.get_attribute("data-gid") or "" for row in self.all(test)]

    def wait_rows(self, expected: Callable[[list[str]], bool], what: str, test: str = "trans-row") -> list[str]:
        return self.value_until(lambda: gids if expected(gids := self.row_gids(test)) else None, what)

    def row(self, test: str, gid: str) -> WebElement:
        return self.value_until(
            lambda: next((r for r in self.all(test) if r.get_attribute("data-gid") == gid), None),
            f"a {test} for {gid}",
        )

    def text_of(self, test: str) -> str:
        return self.one(test).text

    def confirm(self, reason: str | None = None) -> None:
        """Answer the open dialog: type `reason` if given, then confirm."""
        box = self.one("modal-box")
        if reason is not None:
            area = self.one("modal-reason", box)
            area.clear()
            area.send_keys(reason)
        self.click("modal-confirm", box)
        self.until(lambda: not self.all("modal-box"), "the dialog to close")

    def screenshot(self, name: str) -> Path:
        """The window as `<name>.png` in the test's directory; copied into docs/console/ with FASTDTM_SCREENSHOTS=1."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        # The whole page, however long the view: the window grows for the shot, then goes back.
        size = self.driver.get_window_size()
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(size["width"], max(size["height"], int(height) + 140))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(size["width"], size["height"])
        if os.environ.get("FASTDTM_SCREENSHOTS") == "1" and name in SCREENSHOT_NAMES:
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOT_DIR / path.name)
        return path

    def check_no_script_errors(self) -> None:
        """The page threw nothing and the CSP refused nothing (both land in the browser's console log)."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium leaves it unannotated
        severe = [e["message"] for e in entries if e.get("level") == "SEVERE" and self._is_script_error(e["message"])]
        assert not severe, f"the console page logged errors: {severe}"

    @staticmethod
    def _is_script_error(message: str) -> bool:
        # Failed fetches (a 404 for an unknown gid, a 409 refusal a test provokes) are logged too, and expected.
        return "Failed to load resource" not in message


# ---------------------------------------------------------------- seeding transactions over DTM's API


def submit(node: FastdtmNode, body: dict[str, Any], token: str = "") -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.post(f"{node.dtm}/submit", json=body, headers=headers, timeout=10.0)
    assert reply.status_code == 200, f"submit {body.get('gid')}: HTTP {reply.status_code} {reply.text}"


def saga(gid: str, *steps: tuple[str, str], **options: Any) -> dict[str, Any]:
    """A saga body: one (action, compensate) URL pair per step; empty URLs need no call."""
    return {
        "gid": gid,
        "trans_type": "saga",
        "steps": [{"action": action, "compensate": compensate} for action, compensate in steps],
        "payloads": ['{"amount":30}'] * len(steps),
        **options,
    }


def msg(gid: str, *actions: str) -> dict[str, Any]:
    return {
        "gid": gid,
        "trans_type": "msg",
        "steps": [{"action": action} for action in actions],
        "payloads": ['{"amount":30}'] * len(actions),
    }

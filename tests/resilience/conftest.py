"""Options and reporting of the resilience suite: this module owns `--resilience-profile`/`--resilience-seed`
(also RESILIENCE_PROFILE/RESILIENCE_SEED, for runs that do not name this directory on the command line), the
per-profile test timeout, and the block of figures printed at the end of the pytest run, even without -s."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .profiles import Profile, pick_profile, pick_seed

SUMMARY = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("resilience")
    group.addoption("--resilience-profile", default=None, help="short (default, CI) or long (10+ minutes)")
    group.addoption("--resilience-seed", default=None, help="replay the faults and load of an earlier run")


def _option(config: pytest.Config, name: str) -> str | None:
    # Registered only when pytest loads this conftest at start-up (the directory is named on the command
    # line); otherwise the environment variables are the way in.
    value = config.getoption(name, default=None)
    return None if value is None else str(value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    profile = pick_profile(_option(config, "--resilience-profile"))
    for item in items:
        if item.get_closest_marker("resilience") is not None:
            item.add_marker(pytest.mark.timeout(profile.test_timeout_s))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("resilience")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def resilience_profile(pytestconfig: pytest.Config) -> Profile:
    return pick_profile(_option(pytestconfig, "--resilience-profile"))


@pytest.fixture
def resilience_seed(pytestconfig: pytest.Config) -> int:
    return pick_seed(_option(pytestconfig, "--resilience-seed"))


@pytest.fixture
def report(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Adds a block to the run's closing summary."""
    return pytestconfig.stash.setdefault(SUMMARY, []).append

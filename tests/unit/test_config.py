"""Settings: flags over FASTDTM_* over DTM's names over defaults, and refusal of unusable values."""

from __future__ import annotations

import pytest

from fastdtm.cli import _SERVE_FLAGS, main
from fastdtm.config import DEFAULT_STORE, Settings, SettingsError


def test_defaults_and_the_default_store_is_flagged() -> None:
    settings = Settings.from_env({})
    assert (settings.store, settings.port, settings.retry_interval) == (DEFAULT_STORE, 36789, 10.0)
    assert settings.store_defaulted
    assert not Settings.from_env({}, store="redis://h:1/0").store_defaulted


def test_env_twins_and_dtm_names() -> None:
    env = {"FASTDTM_RETRY_INTERVAL": "0.5", "TIMEOUT_TO_FAIL": "7", "HTTP_PORT": "8080", "FASTDTM_PORT": "9090"}
    settings = Settings.from_env(env)
    assert settings.retry_interval == 0.5
    assert settings.timeout_to_fail == 7.0
    assert settings.port == 9090  # our own name wins over DTM's


def test_flags_override_the_environment() -> None:
    assert Settings.from_env({"FASTDTM_PORT": "1"}, port=2).port == 2


def test_worker_environment_round_trips() -> None:
    settings = Settings.from_env({}, store="redis+cluster://a:1,b:2", cron_interval=0.1, shards=16)
    again = Settings.from_env(settings.to_env())
    assert (again.store, again.cron_interval, again.shards) == ("redis+cluster://a:1,b:2", 0.1, 16)
    assert again.node_id != settings.node_id


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FASTDTM_PORT": "eighty"}, "Not a valid int"),
        ({"FASTDTM_RETRY_INTERVAL": "0"}, "'retry_interval' must be > 0"),
        ({"FASTDTM_SHARDS": "0"}, "'shards' must be within"),
        ({"FASTDTM_CLAIM_BATCH": "5000"}, "'claim_batch' must be within"),
        ({"FASTDTM_STORE": "mysql://x"}, r"redis\[s\]:// or redis\[s\]\+cluster://"),
        ({"FASTDTM_STORE": "redis://h:port/0"}, r"bad port 'port' in 'redis://h:port/0'"),
        ({"FASTDTM_STORE": "redis://:pw@h/zero"}, r"database must be a number: 'redis://:\*\*\*@h/zero'"),
        ({"FASTDTM_STORE": "redis://a:1,b:2"}, r"several hosts need redis\+cluster://"),
        ({"FASTDTM_STORE": "redis+cluster://a:1,b:2/3"}, "a cluster has no database number"),
        ({"FASTDTM_REDIS_REPLY_TIMEOUT": "0"}, "'redis_reply_timeout' must be > 0"),
        ({"FASTDTM_REDIS_CONNECT_TIMEOUT": "-1"}, "'redis_connect_timeout' must be > 0"),
        ({"FASTDTM_REDIS_RETRY_TIME": "-1"}, "'redis_retry_time' must be >= 0"),
        ({"FASTDTM_HEADER_TIMEOUT": "0"}, "'header_timeout' must be > 0"),
        ({"FASTDTM_BODY_TIMEOUT": "-1"}, "'body_timeout' must be > 0"),
        ({"FASTDTM_KEEP_ALIVE_TIMEOUT": "0"}, "'keep_alive_timeout' must be > 0"),
        ({"FASTDTM_MAX_HEADER_BYTES": "100"}, "'max_header_bytes' must be >= 1024"),
        ({"FASTDTM_BRANCH_MAX_REPLY_BYTES": "10"}, "'branch_max_reply_bytes' must be >= 1024"),
        ({"FASTDTM_BRANCH_MAX_IDLE": "-1"}, "'branch_max_idle' must be >= 0"),
        ({"FASTDTM_METRIC_LABEL_VALUES": "0"}, "'metric_label_values' must be >= 1"),
        ({"FASTDTM_MAX_BODY_BYTES": "-1"}, "'max_body_bytes' must be >= 1"),
        ({"FASTDTM_CRON_CONCURRENCY": "0"}, "'cron_concurrency' must be >= 1"),
        ({"FASTDTM_MAX_CLOCK_SKEW": "-0.1"}, "'max_clock_skew' must be >= 0"),
    ],
)
def test_unusable_settings_are_refused(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        Settings.from_env(env)


def test_cli_reports_a_bad_setting_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--retry-interval", "-1"]) == 2
    assert "retry_interval" in capsys.readouterr().err


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip()


BOUNDS = {
    "max_header_bytes": ("--max-header-bytes", 64 * 1024, "2048"),
    "header_timeout": ("--header-timeout", 10.0, "2.5"),
    "body_timeout": ("--body-timeout", 30.0, "4"),
    "keep_alive_timeout": ("--keep-alive-timeout", 5.0, "0.5"),
    "branch_max_reply_bytes": ("--branch-max-reply-bytes", 64 * 1024, "4096"),
    "branch_max_idle": ("--branch-max-idle", 64, "0"),
    "metric_label_values": ("--metric-label-values", 64, "8"),
    "redis_connect_timeout": ("--redis-connect-timeout", 5.0, "1.5"),
    "redis_reply_timeout": ("--redis-reply-timeout", 10.0, "3"),
    "redis_retry_time": ("--redis-retry-time", 2.0, "0"),
}


def test_resource_bounds_have_defaults_env_twins_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    defaults = Settings.from_env({})
    assert {name: getattr(defaults, name) for name in BOUNDS} == {name: bound[1] for name, bound in BOUNDS.items()}
    given = Settings.from_env({f"FASTDTM_{name.upper()}": bound[2] for name, bound in BOUNDS.items()})
    assert {name: str(getattr(given, name)) for name in BOUNDS} == {
        "max_header_bytes": "2048",
        "header_timeout": "2.5",
        "body_timeout": "4.0",
        "keep_alive_timeout": "0.5",
        "branch_max_reply_bytes": "4096",
        "branch_max_idle": "0",
        "metric_label_values": "8",
        "redis_connect_timeout": "1.5",
        "redis_reply_timeout": "3.0",
        "redis_retry_time": "0.0",
    }
    again = Settings.from_env(given.to_env())  # what --workers hands its worker processes
    assert {name: getattr(again, name) for name in BOUNDS} == {name: getattr(given, name) for name in BOUNDS}
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for name, (flag, _, _) in BOUNDS.items():
        assert _SERVE_FLAGS[flag][0] == name
        assert flag in help_text


@pytest.mark.parametrize(
    ("store", "shown"),
    [
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("redis://app:s3cret@db:6379/0", "redis://app:***@db:6379/0"),
        ("rediss+cluster://app:p%40ss@a:1,b:2", "rediss+cluster://app:***@a:1,b:2"),
        ("redis://db:6379/0", "redis://db:6379/0"),
        ("sqlite:///./fastdtm.db", "sqlite:///./fastdtm.db"),
    ],
)
def test_the_store_url_is_logged_without_its_password(store: str, shown: str) -> None:
    assert Settings.from_env({}, store=store).store_shown == shown

"""Settings: flags over FASTDTM_* over DTM's names over defaults, and refusal of unusable values."""

from __future__ import annotations

import pytest

from fastdtm.cli import main
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
        ({"FASTDTM_STORE": "mysql://x"}, r"redis:// or redis\+cluster://"),
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

"""History's settings from flags and ``COLLAB_HISTORY*`` variables (a flag wins)."""

from __future__ import annotations

import pytest

from collab import cli


def config(*argv: str):
    return cli._config(cli._parser().parse_args(["serve", *argv]))


def test_history_is_on_by_default_and_flags_set_it(monkeypatch):
    for name in ("COLLAB_HISTORY", "COLLAB_HISTORY_IDLE", "COLLAB_HISTORY_MAX_VERSIONS"):
        monkeypatch.delenv(name, raising=False)
    found = config()
    assert found.history and found.history_idle == 60.0 and found.history_max_versions == 500
    assert not config("--no-history").history
    found = config(
        "--history-idle", "2.5", "--history-max-interval", "30", "--history-keep-all", "0"
    )
    assert (found.history_idle, found.history_max_interval, found.history_keep_all) == (2.5, 30, 0)


@pytest.mark.parametrize(
    ("value", "on"), [("0", False), ("off", False), ("1", True), ("yes", True)]
)
def test_the_environment_sets_history_and_a_flag_wins(monkeypatch, value, on):
    monkeypatch.setenv("COLLAB_HISTORY", value)
    monkeypatch.setenv("COLLAB_HISTORY_MAX_VERSIONS", "7")
    found = config()
    assert found.history is on and found.history_max_versions == 7
    assert config("--history").history and not config("--no-history").history
    assert config("--history-max-versions", "9").history_max_versions == 9


def test_bad_history_settings_stop_with_a_reason(monkeypatch, capsys):
    monkeypatch.setenv("COLLAB_HISTORY", "maybe")
    assert cli.main(["serve"]) == 2
    assert "COLLAB_HISTORY: invalid boolean value: 'maybe'" in capsys.readouterr().err
    monkeypatch.delenv("COLLAB_HISTORY")
    assert cli.main(["serve", "--history-idle", "-1"]) == 2
    assert "--history-idle: must be a number >= 0" in capsys.readouterr().err

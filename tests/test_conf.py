"""TERMINALS defaults and the cache that override_settings clears."""

from terminals.conf import DEFAULTS, get_config


def test_defaults_fill_in_what_the_settings_leave_out(settings):
    settings.TERMINALS = {"CLUSTERS": {"a": {"in_cluster": True}}}
    config = get_config()
    assert config["SHELLS"] == ["/bin/bash", "/bin/sh"]
    assert config["IDLE_TIMEOUT"] == DEFAULTS["IDLE_TIMEOUT"] == 900
    assert config["CLUSTERS"] == {"a": {"in_cluster": True}}


def test_changing_the_setting_clears_the_cache(settings):
    settings.TERMINALS = {"IDLE_TIMEOUT": 5}
    assert get_config()["IDLE_TIMEOUT"] == 5
    settings.TERMINALS = {"IDLE_TIMEOUT": 7}
    assert get_config()["IDLE_TIMEOUT"] == 7

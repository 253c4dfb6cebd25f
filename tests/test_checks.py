"""The TERMINALS system checks: each id, and that `manage.py check` runs them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from terminals.checks import check_settings

ROOT = Path(__file__).resolve().parent.parent


def ids(settings, terminals):
    settings.TERMINALS = terminals
    return sorted(message.id for message in check_settings())


def test_the_test_settings_pass(settings):
    assert check_settings() == []


@pytest.mark.parametrize(
    ("terminals", "expected"),
    [
        ("not a dict", ["terminals.E001"]),
        ({"CLUSTERS": {"a": {"in_cluster": True}}, "SHELS": []}, ["terminals.E002"]),
        ({"CLUSTERS": ["prod"]}, ["terminals.E003"]),
        ({"CLUSTERS": {}}, ["terminals.W001"]),
        ({"CLUSTERS": {"Prod_1": {"in_cluster": True}}}, ["terminals.E004"]),
        ({"CLUSTERS": {"prod": "kubeconfig"}}, ["terminals.E005"]),
        ({"CLUSTERS": {"prod": {"context": "x"}}}, ["terminals.E005"]),
        ({"CLUSTERS": {"prod": {"in_cluster": True, "kubeconfig": "/k"}}}, ["terminals.E005"]),
        ({"CLUSTERS": {"prod": {"in_cluster": True, "token": "x"}}}, ["terminals.E005"]),
        ({"CLUSTERS": {"a": {"in_cluster": True}}, "SHELLS": []}, ["terminals.E006"]),
        ({"CLUSTERS": {"a": {"in_cluster": True}}, "SHELLS": ["bash"]}, ["terminals.E006"]),
        ({"CLUSTERS": {"a": {"in_cluster": True}}, "IDLE_TIMEOUT": 0}, ["terminals.E007"]),
        ({"CLUSTERS": {"a": {"in_cluster": True}}, "MAX_FRAME_SIZE": "big"}, ["terminals.E007"]),
        (
            {"CLUSTERS": {"a": {"in_cluster": True}}, "MAX_SESSIONS_PER_USER": -1},
            ["terminals.E007"],
        ),
        ({"CLUSTERS": {"a": {"in_cluster": True}}, "IMPERSONATE": "yes"}, ["terminals.E008"]),
        # A trailing newline is not part of a DNS label (re.match with "$" let it through).
        ({"CLUSTERS": {"prod\n": {"in_cluster": True}}}, ["terminals.E004"]),
        # Impersonating without a group prefix sends Django group names as the cluster's own.
        ({"CLUSTERS": {"a": {"in_cluster": True}}, "IMPERSONATE": True}, ["terminals.E013"]),
        (
            {
                "CLUSTERS": {"a": {"in_cluster": True}},
                "IMPERSONATE": True,
                "IMPERSONATE_GROUP_PREFIX": "",
            },
            ["terminals.E013"],
        ),
        (
            {
                "CLUSTERS": {"a": {"in_cluster": True}},
                "IMPERSONATE": True,
                "IMPERSONATE_GROUP_PREFIX": "system:",
            },
            ["terminals.E014"],
        ),
        (
            {"CLUSTERS": {"a": {"in_cluster": True}}, "IMPERSONATE_GROUP_PREFIX": "system:dj-"},
            ["terminals.E014"],
        ),
    ],
)
def test_each_check_id(settings, terminals, expected):
    assert ids(settings, terminals) == expected


def test_allowed_hosts_star_is_an_error(settings):
    settings.ALLOWED_HOSTS = ["*"]
    assert ids(settings, {"CLUSTERS": {"a": {"in_cluster": True}}}) == ["terminals.E009"]


def test_a_channel_layer_is_required(settings):
    settings.CHANNEL_LAYERS = {}
    assert ids(settings, {"CLUSTERS": {"a": {"in_cluster": True}}}) == ["terminals.E010"]


def test_channels_redis_own_layer_is_warned_of(settings):
    config = {"hosts": ["redis://localhost:6379/0"]}
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}
    }
    settings.TERMINALS = {"CLUSTERS": {"a": {"in_cluster": True}}}
    (warning,) = check_settings()
    assert warning.id == "terminals.W002"
    assert "terminals.layers.RedisChannelLayer" in warning.hint
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "terminals.layers.RedisChannelLayer", "CONFIG": config}
    }
    assert check_settings() == []


def test_a_good_configuration_passes(settings):
    terminals = {
        "CLUSTERS": {
            "prod": {"kubeconfig": "/etc/k", "context": "p"},
            "here": {"in_cluster": True},
        },
        "SHELLS": ["/bin/bash", "/bin/sh"],
        "MAX_SESSIONS_PER_USER": 0,
        "IMPERSONATE": True,
        "IMPERSONATE_GROUP_PREFIX": "django:",
    }
    assert ids(settings, terminals) == []


def test_no_group_prefix_is_fine_without_impersonation(settings):
    terminals = {"CLUSTERS": {"a": {"in_cluster": True}}, "IMPERSONATE_GROUP_PREFIX": ""}
    assert ids(settings, terminals) == []


def test_the_impersonation_errors_name_the_fix(settings):
    settings.TERMINALS = {"CLUSTERS": {"a": {"in_cluster": True}}, "IMPERSONATE": True}
    (error,) = check_settings()
    assert "IMPERSONATE_GROUP_PREFIX" in error.msg
    assert '"django:"' in error.hint


def test_manage_check_runs_them(settings):
    settings.TERMINALS = {"CLUSTERS": {"Bad Name": {"in_cluster": True}}}
    with pytest.raises(SystemCheckError, match=r"terminals\.E004"):
        call_command("check")


def test_the_project_settings_pass_manage_check():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webshell.settings", "DJANGO_DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_project_refuses_to_start_without_a_secret_key_in_production():
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG")}
    env["DJANGO_SETTINGS_MODULE"] = "webshell.settings"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Set DJANGO_SECRET_KEY" in result.stderr

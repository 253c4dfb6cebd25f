"""System checks for the ``TERMINALS`` settings; each id is stable and tested."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import DEFAULTS
from .impersonation import RESERVED_PREFIX

# Cluster names appear in URLs and in audit records, so they are DNS labels.
# Used with fullmatch(): with match() and "$", a trailing newline would pass.
CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
CLUSTER_KEYS = {"kubeconfig", "context", "in_cluster", "verbose_name"}
POSITIVE_INTEGERS = (
    "IDLE_TIMEOUT",
    "MAX_DURATION",
    "MAX_FRAME_SIZE",
    "KEEPALIVE",
    "CONNECT_TIMEOUT",
    "OUTPUT_BUFFER",
    "AUDIT_COMMIT_TIMEOUT",
    "AUDIT_COMMITS_IN_FLIGHT",
    "DENIAL_BURST",
    "DENIAL_INTERVAL",
    "HEARTBEAT_INTERVAL",
    "SERVER_TIMEOUT",
    "DRAIN_TIMEOUT",
    "REVOCATION_INTERVAL",
)
BOOLEANS = ("REPLAY_OWN_SESSIONS", "SHOW_WATCHERS", "REQUIRE_MFA")


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Check every key of ``settings.TERMINALS``."""
    config = getattr(settings, "TERMINALS", {})
    if not isinstance(config, dict):
        return [
            Error(
                "TERMINALS must be a dict.",
                hint='Set TERMINALS = {"CLUSTERS": {...}} in your settings.',
                id="terminals.E001",
            )
        ]
    messages: list[CheckMessage] = []
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        messages.append(
            Error(
                f"TERMINALS has unknown keys: {', '.join(unknown)}.",
                hint=f"Valid keys are: {', '.join(sorted(DEFAULTS))}.",
                id="terminals.E002",
            )
        )
    merged = {**DEFAULTS, **config}
    if "*" in settings.ALLOWED_HOSTS:
        messages.append(
            Error(
                'ALLOWED_HOSTS contains "*": any Host header is then taken for this site, so the '
                "WebSocket origin check accepts a page on any name that resolves to the server "
                "(DNS rebinding) as the site's own.",
                hint="List the host names the site is served under.",
                id="terminals.E009",
            )
        )
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default")
    if layer is None:
        messages.append(
            Error(
                "CHANNEL_LAYERS has no 'default' layer: watching and ending sessions need one.",
                hint="Use terminals.layers.RedisChannelLayer (or, for one process, "
                "channels.layers.InMemoryChannelLayer).",
                id="terminals.E010",
            )
        )
    elif isinstance(layer, dict) and layer.get("BACKEND") == UPSTREAM_REDIS_LAYER:
        messages.append(
            Warning(
                f"CHANNEL_LAYERS['default'] is {UPSTREAM_REDIS_LAYER}: when a consumer ends as a "
                "message for another consumer of the process arrives, that message can be lost "
                "(a resumed terminal's keystrokes, an auditor's end).",
                hint="Use terminals.layers.RedisChannelLayer, which takes the same CONFIG.",
                id="terminals.W002",
            )
        )
    messages += _check_clusters(merged["CLUSTERS"])
    messages += _check_shells(merged["SHELLS"])
    messages += _check_numbers(merged)
    if not isinstance(merged["IMPERSONATE"], bool) or not isinstance(
        merged["IMPERSONATE_GROUP_PREFIX"], str
    ):
        messages.append(
            Error(
                "TERMINALS['IMPERSONATE'] must be True or False and "
                "TERMINALS['IMPERSONATE_GROUP_PREFIX'] a string.",
                hint='For example "IMPERSONATE": True, "IMPERSONATE_GROUP_PREFIX": "django:".',
                id="terminals.E008",
            )
        )
    messages += _check_impersonation(merged)
    messages += _check_booleans(merged)
    messages += _check_mfa(merged)
    return messages


UPSTREAM_REDIS_LAYER = "channels_redis.core.RedisChannelLayer"


def _check_booleans(config: dict[str, Any]) -> list[CheckMessage]:
    return [
        Error(
            f"TERMINALS[{key!r}] must be True or False, not {config[key]!r}.",
            hint=f"The default is {DEFAULTS[key]!r}.",
            id="terminals.E015",
        )
        for key in BOOLEANS
        if not isinstance(config[key], bool)
    ]


# What REQUIRE_MFA needs in INSTALLED_APPS (terminals.mfa reads their devices).
OTP_APPS = ("django_otp", "django_otp.plugins.otp_totp", "django_otp.plugins.otp_static")


def _check_mfa(config: dict[str, Any]) -> list[CheckMessage]:
    from django.apps import apps

    messages: list[CheckMessage] = []
    amr = config["MFA_AMR"]
    if not isinstance(amr, (list, tuple)) or not all(isinstance(value, str) for value in amr):
        messages.append(
            Error(
                f"TERMINALS['MFA_AMR'] must be a list of 'amr' values, not {amr!r}.",
                hint=f"The default is {DEFAULTS['MFA_AMR']!r}; [] counts no OIDC login.",
                id="terminals.E017",
            )
        )
    missing = [app for app in OTP_APPS if not apps.is_installed(app)]
    if config["REQUIRE_MFA"] is True and missing:
        messages.append(
            Error(
                "TERMINALS['REQUIRE_MFA'] is on but INSTALLED_APPS lacks "
                f"{', '.join(missing)}: nobody could enrol or verify a second factor.",
                hint="Add django_otp, django_otp.plugins.otp_totp and "
                "django_otp.plugins.otp_static to INSTALLED_APPS, and "
                "django_otp.middleware.OTPMiddleware after AuthenticationMiddleware.",
                id="terminals.E018",
            )
        )
    return messages


def _check_impersonation(config: dict[str, Any]) -> list[CheckMessage]:
    impersonate, prefix = config["IMPERSONATE"], config["IMPERSONATE_GROUP_PREFIX"]
    if not isinstance(prefix, str):
        return []  # terminals.E008
    if prefix.startswith(RESERVED_PREFIX):
        return [
            Error(
                f"TERMINALS['IMPERSONATE_GROUP_PREFIX'] ({prefix!r}) starts with "
                f"{RESERVED_PREFIX!r}, which Kubernetes reserves for its own groups.",
                hint='Use a prefix of your own, such as "django:".',
                id="terminals.E014",
            )
        ]
    if impersonate is True and not prefix:
        # Without a prefix a Django group named "system:masters" is the cluster's
        # system:masters: whoever may edit groups would make people cluster admins.
        return [
            Error(
                "TERMINALS['IMPERSONATE'] is on and TERMINALS['IMPERSONATE_GROUP_PREFIX'] is "
                "empty: Django group names would be sent as the cluster's own group names.",
                hint='Set a prefix, such as "IMPERSONATE_GROUP_PREFIX": "django:", and name '
                "the groups in your RBAC bindings with it (django:developers).",
                id="terminals.E013",
            )
        ]
    return []


def _check_clusters(clusters: Any) -> list[CheckMessage]:
    if not isinstance(clusters, dict):
        return [
            Error(
                "TERMINALS['CLUSTERS'] must be a dict of cluster name to cluster settings.",
                hint='For example {"prod": {"kubeconfig": "/etc/webshell/kubeconfig"}}.',
                id="terminals.E003",
            )
        ]
    if not clusters:
        return [
            Warning(
                "TERMINALS['CLUSTERS'] is empty: there is nothing to open a terminal on.",
                hint='Add a cluster, e.g. {"here": {"in_cluster": True}}.',
                id="terminals.W001",
            )
        ]
    messages: list[CheckMessage] = []
    for name, cluster in clusters.items():
        if not isinstance(name, str) or not CLUSTER_NAME.fullmatch(name):
            messages.append(
                Error(
                    f"Cluster name {name!r} is not a DNS label.",
                    hint="Use lower-case letters, digits and '-', at most 63 characters.",
                    id="terminals.E004",
                )
            )
        if not isinstance(cluster, dict):
            messages.append(
                Error(
                    f"Cluster {name!r} must be a dict.",
                    hint='Give {"kubeconfig": path, "context": name} or {"in_cluster": True}.',
                    id="terminals.E005",
                )
            )
            continue
        unknown = sorted(set(cluster) - CLUSTER_KEYS)
        sources = bool(cluster.get("kubeconfig")) + bool(cluster.get("in_cluster"))
        if unknown or sources != 1:
            problem = (
                f"has unknown keys {', '.join(unknown)}"
                if unknown
                else "needs exactly one of 'kubeconfig' or 'in_cluster'"
            )
            messages.append(
                Error(
                    f"Cluster {name!r} {problem}.",
                    hint='Give {"kubeconfig": path, "context": name} or {"in_cluster": True}.',
                    id="terminals.E005",
                )
            )
    return messages


def _check_shells(shells: Any) -> list[CheckMessage]:
    valid = (
        isinstance(shells, (list, tuple))
        and bool(shells)
        and all(isinstance(shell, str) and shell.startswith("/") for shell in shells)
    )
    if valid:
        return []
    return [
        Error(
            "TERMINALS['SHELLS'] must be a non-empty list of absolute paths.",
            hint='For example ["/bin/bash", "/bin/sh"].',
            id="terminals.E006",
        )
    ]


def _check_numbers(config: dict[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    grace = config["RESUME_GRACE"]
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
        messages.append(
            Error(
                f"TERMINALS['RESUME_GRACE'] must be a whole number of seconds, not {grace!r}.",
                hint="0 turns resuming off; the default is 60.",
                id="terminals.E016",
            )
        )
    for key in POSITIVE_INTEGERS:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            messages.append(
                Error(
                    f"TERMINALS[{key!r}] must be a positive whole number, not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="terminals.E007",
                )
            )
    heartbeat, timeout = config["HEARTBEAT_INTERVAL"], config["SERVER_TIMEOUT"]
    if not messages and timeout < 2 * heartbeat:
        messages.append(
            Error(
                f"TERMINALS['SERVER_TIMEOUT'] ({timeout}) must be at least twice "
                f"TERMINALS['HEARTBEAT_INTERVAL'] ({heartbeat}), or one late heartbeat would "
                "have a live server's sessions ended as lost.",
                hint="The defaults are 15 and 60 seconds.",
                id="terminals.E011",
            )
        )
    limit = config["MAX_SESSIONS_PER_USER"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        messages.append(
            Error(
                f"TERMINALS['MAX_SESSIONS_PER_USER'] must be 0 (no limit) or more, not {limit!r}.",
                hint=f"The default is {DEFAULTS['MAX_SESSIONS_PER_USER']!r}.",
                id="terminals.E007",
            )
        )
    return messages


@register(Tags.security)
def check_audit_key(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Refuse a missing or weak ``TERMINALS['AUDIT_KEY']`` unless DEBUG is on (E012)."""
    from .audit.keyring import MIN_KEY_LENGTH, weakness

    config = getattr(settings, "TERMINALS", {})
    if not isinstance(config, dict):
        return []  # E001
    hint = (
        f"Set it to a random secret of at least {MIN_KEY_LENGTH} characters, kept outside the "
        "database (webshell: WEBSHELL_AUDIT_KEY or WEBSHELL_AUDIT_KEY_FILE), e.g. the output of "
        "python -c 'import secrets; print(secrets.token_urlsafe(48))'."
    )
    messages: list[CheckMessage] = []
    key = config.get("AUDIT_KEY")
    problem = "is not set" if key in (None, "", b"") else weakness(key)
    # With DEBUG on, a development key stands in for a missing one (audit.keyring.current_key).
    wrong_type = key is not None and not isinstance(key, (str, bytes))
    if problem is not None and (not settings.DEBUG or wrong_type):
        messages.append(
            Error(
                f"TERMINALS['AUDIT_KEY'] {problem}: the audit trail's tamper evidence rests on "
                "it, and anyone who can write the database could rewrite the trail unnoticed.",
                hint=hint,
                id="terminals.E012",
            )
        )
    old = config.get("AUDIT_OLD_KEYS", [])
    if not isinstance(old, (list, tuple)) or not all(
        isinstance(value, (str, bytes)) and value for value in old
    ):
        messages.append(
            Error(
                "TERMINALS['AUDIT_OLD_KEYS'] must be a list of the keys used before a rotation.",
                hint="For example [os.environ['OLD_AUDIT_KEY']], or [] (the default).",
                id="terminals.E012",
            )
        )
    return messages

"""The ``TERMINALS`` settings dict, merged over documented defaults.

Read it with :func:`get_config`; it is cached and the cache is cleared when a test changes
``TERMINALS`` with ``override_settings``. Every key is checked by ``terminals.checks``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # name -> {"kubeconfig": path, "context": name} or {"in_cluster": True}. The name is the
    # <cluster> part of every terminal URL.
    "CLUSTERS": {},
    # Tried in order; the first that exists in the container runs.
    "SHELLS": ["/bin/bash", "/bin/sh"],
    "IDLE_TIMEOUT": 900,  # seconds without input or output before the session ends (4408)
    "MAX_DURATION": 28800,  # seconds a session may last at most (4410)
    "MAX_SESSIONS_PER_USER": 5,  # concurrent sessions per user (4429); 0 means no limit
    "MAX_FRAME_SIZE": 65536,  # bytes, the largest frame a browser may send (4413)
    "KEEPALIVE": 20,  # seconds between pings on the upstream exec socket
    "CONNECT_TIMEOUT": 15,  # seconds to open the upstream exec
    "IMPERSONATE": False,  # send Impersonate-User/-Group so the cluster's RBAC applies too
    # Prefix for the Django group names sent as Impersonate-Group; required with IMPERSONATE
    # (terminals.E013), so that a Django group can never be one of the cluster's own.
    "IMPERSONATE_GROUP_PREFIX": "",
    "OUTPUT_BUFFER": 1048576,  # bytes sent to a browser and not yet drained before reads pause
    "AUDIT_COMMIT_TIMEOUT": 5,  # seconds a commit may take before the session ends (4503)
    # Group commits of the process's audit writer running at once (PostgreSQL; SQLite: one).
    "AUDIT_COMMITS_IN_FLIGHT": 2,
    # Refusals of one client (a username, else an address) and kind recorded one by one before
    # the rest are counted, and seconds per further one recorded (terminals.denials).
    "DENIAL_BURST": 10,
    "DENIAL_INTERVAL": 6,
    # The secret the audit trail is keyed with (HMAC-SHA256): at least 32 random characters,
    # kept out of the database. Required unless DEBUG is on (terminals.E012).
    "AUDIT_KEY": None,
    "AUDIT_OLD_KEYS": [],  # keys used before a rotation: they still verify what they keyed
    "HEARTBEAT_INTERVAL": 15,  # seconds between a serving process's heartbeats
    "SERVER_TIMEOUT": 60,  # seconds without a heartbeat after which a process is taken as lost
    "DRAIN_TIMEOUT": 10,  # seconds a session may take to end when the server stops (SIGTERM)
    # seconds between checks that each live session is still permitted (logged in, active,
    # allowed by the access rules); a revoked session ends (4403) about this long after
    "REVOCATION_INTERVAL": 5,
    # seconds a session whose browser went away stays attached to its pod, waiting for the
    # page to resume it (terminals.session.resume); 0: it ends with its socket, as before
    "RESUME_GRACE": 60,
    # A user may replay and download their own sessions (the "My sessions" page), without the
    # terminals.view_session permission that auditors need for everyone's.
    "REPLAY_OWN_SESSIONS": True,
    # The person at a terminal sees who is watching it ("watched by alice"; the browser gets a
    # {"type": "watchers"} frame whenever that changes). Off: watchers are not shown.
    "SHOW_WATCHERS": True,
    # A terminal opens only in a login session verified by a second factor: a TOTP device of
    # django-otp (a user without one is sent to enrol), a recovery code, or an OIDC login whose
    # "amr" claim names one of MFA_AMR (terminals.mfa). Off: access rules' step-up still applies.
    "REQUIRE_MFA": False,
    # Values of the OIDC ID token's "amr" claim (RFC 8176) that count as a second factor.
    "MFA_AMR": ["mfa", "otp", "hwk", "swk", "sms", "fpt", "face"],
}


@cache
def get_config() -> dict[str, Any]:
    """Return the effective settings: the user's ``TERMINALS`` over :data:`DEFAULTS`."""
    user = getattr(settings, "TERMINALS", {})
    if not isinstance(user, dict):
        # The system check reports this; meanwhile run on the defaults.
        return dict(DEFAULTS)
    return {**DEFAULTS, **user}


def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "TERMINALS":
        get_config.cache_clear()


def connect_signals() -> None:
    """Clear the cached config whenever ``override_settings`` changes ``TERMINALS``."""
    setting_changed.connect(_clear_cache, dispatch_uid="terminals.conf.clear_cache")

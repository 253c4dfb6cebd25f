"""Single sign-on settings (OpenID Connect) from the environment, shared by both settings modules.

``webshell/settings.py`` and ``tests/settings.py`` call :func:`oidc_settings` and merge what it
returns; nothing changes unless ``WEBSHELL_OIDC_ISSUER`` is set. The provider's endpoints are
discovered lazily, at the first sign-in, from ``<issuer>/.well-known/openid-configuration``
(``webshell.oidc.discovery``), so the web shell starts while the provider is down; the
``WEBSHELL_OIDC_*_ENDPOINT`` variables name them instead, for a provider without discovery.

Django's own setting names are used where mozilla-django-oidc reads them (``OIDC_RP_*``,
``OIDC_OP_*``); the web shell's own are ``WEBSHELL_OIDC_*``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

BACKEND = "webshell.oidc.OIDCBackend"
PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Endpoint settings of mozilla-django-oidc, and the variables that name them explicitly.
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "WEBSHELL_OIDC_AUTHORIZATION_ENDPOINT",
    "OIDC_OP_TOKEN_ENDPOINT": "WEBSHELL_OIDC_TOKEN_ENDPOINT",
    "OIDC_OP_USER_ENDPOINT": "WEBSHELL_OIDC_USERINFO_ENDPOINT",
    "OIDC_OP_JWKS_ENDPOINT": "WEBSHELL_OIDC_JWKS_ENDPOINT",
    "OIDC_OP_END_SESSION_ENDPOINT": "WEBSHELL_OIDC_END_SESSION_ENDPOINT",
}


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def oidc_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The Django settings of single sign-on; ``WEBSHELL_OIDC_ENABLED`` False without an issuer.

    ``WEBSHELL_LOCAL_LOGIN=0`` switches local passwords off; it is refused without an issuer,
    since nobody could log in at all.
    """
    issuer = environ.get("WEBSHELL_OIDC_ISSUER", "").strip().rstrip("/")
    local_login = _bool(environ, "WEBSHELL_LOCAL_LOGIN", True)
    if not issuer:
        if not local_login:
            raise ImproperlyConfigured(
                "WEBSHELL_LOCAL_LOGIN=0 switches local passwords off, but no single sign-on is "
                "configured: set WEBSHELL_OIDC_ISSUER (and its client) as well."
            )
        return {"WEBSHELL_OIDC_ENABLED": False, "WEBSHELL_LOCAL_LOGIN": True}
    client_id = environ.get("WEBSHELL_OIDC_CLIENT_ID", "").strip()
    if not client_id:
        raise ImproperlyConfigured(
            "WEBSHELL_OIDC_ISSUER is set but WEBSHELL_OIDC_CLIENT_ID is not: register the web "
            "shell as a client at the provider and give its id and secret."
        )
    pattern = environ.get("WEBSHELL_OIDC_GROUP_PATTERN", ".*")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ImproperlyConfigured(
            f"WEBSHELL_OIDC_GROUP_PATTERN: {pattern!r} is not a regular expression ({exc})."
        ) from None
    settings: dict[str, Any] = {
        "WEBSHELL_OIDC_ENABLED": True,
        "WEBSHELL_LOCAL_LOGIN": local_login,
        "WEBSHELL_OIDC_ISSUER": issuer,
        "WEBSHELL_OIDC_PROVIDER_NAME": environ.get("WEBSHELL_OIDC_PROVIDER_NAME", "").strip()
        or "single sign-on",
        "WEBSHELL_OIDC_USERNAME_CLAIM": environ.get(
            "WEBSHELL_OIDC_USERNAME_CLAIM", "preferred_username"
        ).strip(),
        "WEBSHELL_OIDC_GROUPS_CLAIM": environ.get("WEBSHELL_OIDC_GROUPS_CLAIM", "groups").strip(),
        "WEBSHELL_OIDC_GROUP_PREFIX": environ.get("WEBSHELL_OIDC_GROUP_PREFIX", "oidc:"),
        "WEBSHELL_OIDC_GROUP_PATTERN": pattern,
        # An e-mail domain list narrows who may sign in at all (Google: any Google account).
        "WEBSHELL_OIDC_ALLOWED_DOMAINS": [
            domain.strip().lower()
            for domain in environ.get("WEBSHELL_OIDC_ALLOWED_DOMAINS", "").split(",")
            if domain.strip()
        ],
        # An existing local account (one with a password) is not taken over by a provider's
        # user of the same name unless this says so.
        "WEBSHELL_OIDC_LINK_LOCAL_USERS": _bool(environ, "WEBSHELL_OIDC_LINK_LOCAL_USERS", False),
        "WEBSHELL_OIDC_DISCOVERY_TIMEOUT": float(environ.get("WEBSHELL_OIDC_TIMEOUT", "10")),
        # Seconds of clock difference tolerated on the ID token's exp, iat and nbf.
        "WEBSHELL_OIDC_LEEWAY": int(environ.get("WEBSHELL_OIDC_LEEWAY", "60")),
        # mozilla-django-oidc's settings.
        "OIDC_RP_CLIENT_ID": client_id,
        "OIDC_RP_CLIENT_SECRET": environ.get("WEBSHELL_OIDC_CLIENT_SECRET", ""),
        "OIDC_RP_SCOPES": environ.get("WEBSHELL_OIDC_SCOPES", "openid email profile groups"),
        "OIDC_RP_SIGN_ALGO": environ.get("WEBSHELL_OIDC_SIGN_ALGO", "RS256"),
        "OIDC_USE_PKCE": _bool(environ, "WEBSHELL_OIDC_USE_PKCE", True),
        # client_secret_basic: the method the specification makes the default.
        "OIDC_TOKEN_USE_BASIC_AUTH": _bool(environ, "WEBSHELL_OIDC_TOKEN_BASIC_AUTH", True),
        "OIDC_TIMEOUT": float(environ.get("WEBSHELL_OIDC_TIMEOUT", "10")),
        "OIDC_VERIFY_SSL": environ.get("WEBSHELL_OIDC_CA_BUNDLE")
        or _bool(environ, "WEBSHELL_OIDC_VERIFY_TLS", True),
        "OIDC_STORE_ID_TOKEN": True,  # the id_token_hint of RP-initiated logout
        "OIDC_CREATE_USER": _bool(environ, "WEBSHELL_OIDC_CREATE_USERS", True),
        "LOGIN_REDIRECT_URL_FAILURE": "login",
        "OIDC_CALLBACK_CLASS": "webshell.oidc.CallbackView",
        "OIDC_AUTHENTICATE_CLASS": "webshell.oidc.AuthenticateView",
    }
    for setting, variable in ENDPOINTS.items():
        if environ.get(variable, "").strip():
            settings[setting] = environ[variable].strip()
    return settings


def authentication_backends(backends: Sequence[str], oidc: Mapping[str, Any]) -> list[str]:
    """``backends`` with the OIDC backend after the password backend, and without the password
    backend when local login is off (then no password is checked anywhere, the admin's login
    included, and logins made with a password end at their next request)."""
    result = list(backends)
    if not oidc["WEBSHELL_OIDC_ENABLED"]:
        return result
    position = result.index(PASSWORD_BACKEND) + 1 if PASSWORD_BACKEND in result else 0
    result.insert(position, BACKEND)
    if not oidc["WEBSHELL_LOCAL_LOGIN"]:
        result.remove(PASSWORD_BACKEND)
    return result


def content_security_policy(
    policy: Mapping[str, list[str]], oidc: Mapping[str, Any]
) -> dict[str, list[str]]:
    """``policy`` letting forms lead to the provider: Chromium applies ``form-action`` to the
    redirects that follow a form, and logging out (a form) ends at the provider's endpoint."""
    result = dict(policy)
    if not oidc["WEBSHELL_OIDC_ENABLED"] or "form-action" not in result:
        return result
    urls = [oidc["WEBSHELL_OIDC_ISSUER"]] + [oidc[name] for name in ENDPOINTS if name in oidc]
    origins = [origin for origin in dict.fromkeys(_origin(url) for url in urls)]
    result["form-action"] = [*result["form-action"], *origins]
    return result

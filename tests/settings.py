"""Settings for the test suite, independent of the webshell project's settings.

DATABASE_URL selects PostgreSQL (else a SQLite file), REDIS_URL selects channels-redis (else the
in-memory layer). Daphne processes started by the tests get WEBSHELL_TEST_DB_NAME, the test
database's name, so that they see what the tests write.
"""

import json
import os
import tempfile
from pathlib import Path

import dj_database_url

from webshell import csp
from webshell.oidc_settings import (
    authentication_backends,
    content_security_policy,
    oidc_settings,
)

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "tests-only-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    # The second factor (TOTP, recovery codes): TERMINALS["REQUIRE_MFA"].
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "terminals",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webshell.middleware.ContentSecurityPolicyMiddleware",  # SECURE_CSP
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",  # as webshell/settings.py
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified()
    "django.contrib.messages.middleware.MessageMiddleware",
    "axes.middleware.AxesMiddleware",
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "terminals.backends.TerminalsBackend",
]
ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "webshell.asgi.application"  # the real stack
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_SQLITE_TEST_NAME = str(Path(tempfile.gettempdir()) / f"webshell-tests-{os.getpid()}.sqlite3")
DATABASES = {
    "default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'tests-unused.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True}
    DATABASES["default"]["TEST"] = {"NAME": "test_webshell"}
else:
    # A file, not :memory:, so that Daphne processes started by the tests share it.
    DATABASES["default"]["TEST"] = {"NAME": _SQLITE_TEST_NAME}
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "cached_statements": 0,  # as webshell/settings.py: cached statements keep bound blobs
    }
if os.environ.get("WEBSHELL_TEST_DB_NAME"):
    # A Daphne process of the tests: use the database the test run created.
    DATABASES["default"]["NAME"] = os.environ["WEBSHELL_TEST_DB_NAME"]

if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "terminals.layers.RedisChannelLayer",
            # As webshell/settings.py: read timeouts well past channels-redis's 5 s block.
            # As webshell/settings.py: a pool that many layer calls in flight do not exhaust.
            "CONFIG": {
                "hosts": [
                    {
                        "address": os.environ["REDIS_URL"],
                        "socket_timeout": 30,
                        "max_connections": 1000,
                    }
                ]
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

TERMINALS = {
    "CLUSTERS": {
        "kubesim": {
            "kubeconfig": os.environ.get("WEBSHELL_TEST_KUBECONFIG", "/nonexistent/kubeconfig"),
            "context": "kubesim-webshell",
        }
    },
    # Fixed, so that the test process and the Daphne processes it starts verify each other's
    # records. Tests only.
    "AUDIT_KEY": "tests-only-audit-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    # Every refusal recorded one by one: tests count the rows they cause, and one process runs
    # them all. tests/test_records.py turns the throttle of terminals.denials back on.
    "DENIAL_BURST": 1_000_000,
    # A closed socket ends its session at once (the behaviour most tests are about); the tests
    # of resuming (tests/test_resume*.py, the browser's reload test) turn the grace on.
    "RESUME_GRACE": 0,
}
# A Daphne process of a test may get other limits (idle time, sessions per user, …).
TERMINALS.update(json.loads(os.environ.get("WEBSHELL_TEST_TERMINALS", "{}")))

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]  # the project's look, as webshell/settings.py has it
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
USE_TZ = True
TIME_ZONE = "UTC"
# As webshell/settings.py: English, or Simplified Chinese for a browser that asks for it.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AXES_FAILURE_LIMIT = 5
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# As webshell/settings.py: one client address for logins, sessions and denials, and a limit per
# username. A Daphne process of a test may trust proxies (a count, or a JSON list of networks).
TERMINALS_TRUSTED_PROXIES = json.loads(os.environ.get("WEBSHELL_TEST_TRUSTED_PROXIES", "0"))
AXES_CLIENT_IP_CALLABLE = "terminals.clients.client_address"
AXES_HANDLER = "webshell.lockout.LoginLockout"
WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT = 20
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
# The project's policy (tests/test_security_headers.py checks that they agree).
SECURE_CSP = csp.SITE_POLICY
SECURE_CSP_VIEWS = csp.VIEW_POLICIES
# Playwright's waits (wait_for_function) evaluate strings in the page, which the policy forbids:
# a Daphne of the tests serves it only when asked (WEBSHELL_TEST_CSP=1), as the browser test of
# tests/test_security_headers.py does. The test process itself always has it.
if os.environ.get("WEBSHELL_TEST_DB_NAME") and os.environ.get("WEBSHELL_TEST_CSP") != "1":
    SECURE_CSP = {}

# Single sign-on as webshell/settings.py has it, from the same variables: a Daphne of the tests
# gets them from tests/fixtures/oidc_provider.py (nothing set: off, as for every other test).
_OIDC = oidc_settings(os.environ)
globals().update(_OIDC)
AUTHENTICATION_BACKENDS = authentication_backends(AUTHENTICATION_BACKENDS, _OIDC)
SECURE_CSP = content_security_policy(SECURE_CSP, _OIDC)

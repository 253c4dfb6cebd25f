"""Settings of the deployable web shell, read from the environment.

With nothing set, the project runs for development: SQLite, the in-memory channel layer and
the kubesim sandbox cluster that ``make run`` starts. Production sets at least
``DJANGO_SECRET_KEY``, ``DJANGO_ALLOWED_HOSTS``, ``DATABASE_URL`` and ``REDIS_URL``; the README's
"Configuration" section lists every variable.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from . import csp
from .oidc_settings import authentication_backends, content_security_policy, oidc_settings

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    """Read a yes/no environment variable; anything but 1/true/yes/on is false."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    """Read a comma-separated environment variable."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for development; `make run` does that)."
        )
    # Development only: a fixed key keeps logins across restarts. Never used with DEBUG off.
    SECRET_KEY = "django-insecure-webshell-development-key-not-for-production"

# Never "*": the WebSocket origin check (terminals.origins) takes the Host as the site's own
# origin only for these hosts.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
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
    "webshell",  # the demo_admin management command
]

AUTHENTICATION_BACKENDS = [
    # First, so that a locked-out username is refused before its password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    # Answers user.has_perm("terminals.exec_pod", ExecTarget(...)).
    "terminals.backends.TerminalsBackend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webshell.middleware.ContentSecurityPolicyMiddleware",  # SECURE_CSP
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After the session, before CommonMiddleware: the page's language from the browser's.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified()
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# How authenticator apps name this site's entry (terminals' second factor, django-otp).
OTP_TOTP_ISSUER = os.environ.get("WEBSHELL_OTP_ISSUER", "webshell")

ROOT_URLCONF = "webshell.urls"
ASGI_APPLICATION = "webshell.asgi.application"

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
            ],
        },
    },
]


def private_sqlite_file(name: str | Path) -> None:
    """Create the SQLite database file readable by its owner only, or make it so.

    It holds password hashes, session keys and the audit trail, and SQLite would create it with
    the umask's mode (usually world-readable). Its -wal and -shm files take their mode from it.
    """
    if not name or str(name) == ":memory:" or str(name).startswith("file:"):
        return
    path = Path(name)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # an empty file is a new DB
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
            if file.exists():
                file.chmod(0o600)
    except OSError:
        pass  # not ours to change (a read-only or shared volume): SQLite reports what matters


DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=60, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Server-side binding sends bytea as binary parameters instead of hex in the SQL text:
    # 2.6x the audit throughput in shared/reference/performance-notes.md.
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
    # A database host that stops answering would hold a connecting thread for the kernel's
    # TCP timeout (minutes); sessions end in time regardless (AUDIT_COMMIT_TIMEOUT), but the
    # recorder's threads should be free again soon: give up connecting after 5 s.
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers (the portal, the admin) work while a session's audit commits.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        # Python's statement cache keeps each cached INSERT's last bound blobs (up to 64 KiB
        # of output per audit row): Daphne grew with every session. Measured in bench.hostile.
        "cached_statements": 0,
    }
    private_sqlite_file(DATABASES["default"]["NAME"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "terminals.layers.RedisChannelLayer",
            # redis-py 8 times reads out after 5 s, the very time channels-redis blocks for
            # a message, and the timeout kills the consumer; wait longer than that.
            # redis-py's pool fails an operation at once past max_connections (100 by
            # default), and one process has that many layer calls in flight under load.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 1000}]
            },
        }
    }
else:
    # One process only: watching and ending sessions from another process needs Redis.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]


def trusted_proxies_from_environment() -> int | list[str]:
    """WEBSHELL_TRUSTED_PROXIES: how many proxies are in front, or their addresses/networks."""
    value = os.environ.get("WEBSHELL_TRUSTED_PROXIES", "0").strip()
    if value.isdigit():
        return int(value)
    networks = env_list("WEBSHELL_TRUSTED_PROXIES", "")
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"WEBSHELL_TRUSTED_PROXIES: {network!r} is not an IP address or network. Give "
                "the number of proxies in front of Daphne, or their comma-separated addresses "
                "or networks (10.0.0.0/8)."
            ) from None
    return networks


# The client address of every login, session and denial (terminals.clients): the right-most
# X-Forwarded-For entry that these proxies did not write. 0: the socket peer, header ignored.
# Daphne runs without --proxy-headers, which would take the first entry, the client's choice.
TERMINALS_TRUSTED_PROXIES = trusted_proxies_from_environment()
# Brute force: after AXES_FAILURE_LIMIT failed logins for one username from one address, that
# pair is locked out for AXES_COOLOFF_TIME hours and sees registration/locked_out.html; after
# WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT for one username from any addresses, the username is
# locked as well, whatever the address (webshell/lockout.py; 0 turns that off).
AXES_FAILURE_LIMIT = int(os.environ.get("WEBSHELL_LOGIN_FAILURE_LIMIT", "5"))
WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT = int(
    os.environ.get("WEBSHELL_LOGIN_USERNAME_FAILURE_LIMIT", "20")
)
AXES_COOLOFF_TIME = float(os.environ.get("WEBSHELL_LOGIN_COOLOFF_HOURS", "1"))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "webshell.lockout.LoginLockout"
AXES_CLIENT_IP_CALLABLE = "terminals.clients.client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True

# Sessions end after SESSION_COOKIE_AGE seconds (8 hours by default) or when the browser closes.
SESSION_COOKIE_AGE = int(os.environ.get("DJANGO_SESSION_AGE", str(8 * 3600)))
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (webshell.middleware; Django 6.0's setting, so moving is easy).
SECURE_CSP = csp.SITE_POLICY
SECURE_CSP_VIEWS = csp.VIEW_POLICIES

if not DEBUG:
    # Production serves HTTPS only; `manage.py check --deploy` is clean with these.
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients):
# DJANGO_SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https
if os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER"):
    header, _, value = os.environ["DJANGO_SECURE_PROXY_SSL_HEADER"].partition(",")
    SECURE_PROXY_SSL_HEADER = (header.strip(), value.strip() or "https")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Single sign-on (OpenID Connect), off unless WEBSHELL_OIDC_ISSUER is set: the WEBSHELL_OIDC_*
# variables and WEBSHELL_LOCAL_LOGIN (webshell/oidc_settings.py, the README's "Single sign-on").
# The names are mozilla-django-oidc's settings and the web shell's own.
_OIDC = oidc_settings(os.environ)
globals().update(_OIDC)
AUTHENTICATION_BACKENDS = authentication_backends(AUTHENTICATION_BACKENDS, _OIDC)
SECURE_CSP = content_security_policy(SECURE_CSP, _OIDC)

# Pages in the browser's language (Accept-Language) where a catalogue exists, else English.
# The app's catalogues are in terminals/locale, the project's templates' in locale/.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
# In development WhiteNoise serves straight from the apps' static folders; in production
# from STATIC_ROOT after `manage.py collectstatic`.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}


def clusters_from_environment() -> dict[str, dict[str, object]]:
    """The clusters the web shell execs into: webshell/clusters.py has the variables' rules."""
    from .clusters import clusters_from_environment as from_environment

    return from_environment(os.environ, BASE_DIR / ".kubesim" / "kubeconfig")


def audit_keys_from_environment() -> dict[str, object]:
    """The audit key: WEBSHELL_AUDIT_KEY_FILE (a mounted Secret), else WEBSHELL_AUDIT_KEY.

    WEBSHELL_AUDIT_OLD_KEYS_FILE holds keys used before a rotation, one per line. With neither
    set, DJANGO_DEBUG=1 uses a development key; otherwise check terminals.E012 refuses to run.
    """

    def read(variable: str) -> str:
        path = os.environ[variable]
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ImproperlyConfigured(f"{variable}: cannot read {path}: {exc.strerror}") from None

    key = os.environ.get("WEBSHELL_AUDIT_KEY") or None
    if os.environ.get("WEBSHELL_AUDIT_KEY_FILE"):
        key = read("WEBSHELL_AUDIT_KEY_FILE").strip() or None
    old: list[str] = []
    if os.environ.get("WEBSHELL_AUDIT_OLD_KEYS_FILE"):
        old = [line.strip() for line in read("WEBSHELL_AUDIT_OLD_KEYS_FILE").splitlines()]
    return {"AUDIT_KEY": key, "AUDIT_OLD_KEYS": [line for line in old if line]}


TERMINALS = {
    "CLUSTERS": clusters_from_environment(),
    **audit_keys_from_environment(),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}

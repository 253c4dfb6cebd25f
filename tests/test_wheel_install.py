"""A Django site of its own installs the built wheel as the README's "Adding the app" says, and
runs ``check``, ``migrate`` and a terminal.

Everything runs in a fresh virtual environment that holds the wheel and what it requires, from
the package index, and nothing of this checkout: the site's Daphne is the environment's
``daphne`` script (its working directory is not on ``sys.path``). Skipped when the package index
cannot be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daphne import run_daphne
from tests.fixtures.terminal_client import run_line, say, terminal

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "terminals" / "static" / "terminals" / "vendor" / "xterm" / "xterm.mjs"

pytestmark = pytest.mark.skipif(
    not VENDOR.exists(), reason="vendor files are not built: run `npm run build`"
)

SETTINGS = """\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "a-host-site-of-its-own-for-the-wheel-test-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.admin",
    "channels",
    "terminals",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "terminals.backends.TerminalsBackend",
]
ROOT_URLCONF = "hostsite.urls"
ASGI_APPLICATION = "hostsite.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
USE_TZ = True
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
TERMINALS = {
    "CLUSTERS": {"kubesim": {"kubeconfig": KUBECONFIG, "context": "kubesim-webshell"}},
    "AUDIT_KEY": "a-host-site-audit-key-kept-out-of-its-database-0123456789",
}
"""

ASGI = """\
import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostsite.settings")
django_asgi_app = get_asgi_application()
from terminals.middleware import TerminalsAuthMiddlewareStack  # noqa: E402
from terminals.origins import TerminalsOriginValidator  # noqa: E402
from terminals.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": TerminalsOriginValidator(
        TerminalsAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    ),
})
"""

URLS = """\
from django.urls import include, path

urlpatterns = [path("", include("terminals.urls"))]
"""

MANAGE = """\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostsite.settings")
from django.core.management import execute_from_command_line  # noqa: E402

execute_from_command_line(sys.argv)
"""

# Prints a superuser's session key: the cookie a browser would have after logging in.
LOGIN = """\
from django.contrib.auth import get_user_model
from django.test import Client
user = get_user_model().objects.create_superuser("host-admin", password="pw-for-the-test")
client = Client()
client.force_login(user)
print(client.cookies["sessionid"].value)
"""

# The app's messages in Simplified Chinese, from the catalogue compiled into the wheel.
TRANSLATED = """\
from django.utils import translation
with translation.override("zh-hans"):
    print(translation.gettext("My sessions"))
"""


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def host_site(tmp_path_factory: Any, kubesim: Any) -> dict[str, Any]:
    """A fresh environment with the wheel, and a small site of its own that uses the app."""
    base = tmp_path_factory.mktemp("wheel")
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(base)],
        ROOT,
        dict(os.environ),
    )
    (wheel,) = base.glob("django_pod_terminals-*.whl")
    # Nothing of the checkout or of the test run reaches the site.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "PYTHON", "VIRTUAL_ENV", "WEBSHELL_"))
    }
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)], base, env)
    python, pip = venv / "bin" / "python", venv / "bin" / "pip"
    installed = subprocess.run(
        [str(pip), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if installed.returncode != 0 and "No matching distribution" in installed.stderr:
        pytest.skip(f"the package index cannot be reached: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr
    site = base / "site"
    package = site / "hostsite"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    settings = SETTINGS.replace("KUBECONFIG", repr(str(kubesim.kubeconfig)))
    (package / "settings.py").write_text(settings)
    (package / "asgi.py").write_text(ASGI)
    (package / "urls.py").write_text(URLS)
    (site / "manage.py").write_text(MANAGE)
    return {"python": python, "venv": venv, "site": site, "env": env}


def test_the_wheel_alone_passes_check_and_migrates(host_site):
    python, site, env = host_site["python"], host_site["site"], host_site["env"]
    located = run([str(python), "-c", "import terminals; print(terminals.__file__)"], site, env)
    assert str(host_site["venv"]) in located, "the site must use the installed wheel"
    checked = run([str(python), "manage.py", "check", "--fail-level", "WARNING"], site, env)
    assert "no issues" in checked
    run([str(python), "manage.py", "migrate", "--no-input"], site, env)


def test_the_wheel_brings_its_translations(host_site):
    python, site, env = host_site["python"], host_site["site"], host_site["env"]
    said = run([str(python), "manage.py", "shell", "-c", TRANSLATED], site, env)
    assert said.strip().splitlines()[-1] == "我的会话"


async def test_a_terminal_opens_on_the_host_site(host_site):
    python, site, env = host_site["python"], host_site["site"], host_site["env"]
    run([str(python), "manage.py", "migrate", "--no-input"], site, env)
    said = run([str(python), "manage.py", "shell", "-c", LOGIN], site, env)
    cookie = said.strip().splitlines()[-1]
    daphne = str(host_site["venv"] / "bin" / "daphne")
    site_env = {**env, "DJANGO_SETTINGS_MODULE": "hostsite.settings", "PYTHONPATH": str(site)}
    command = [daphne, "-b", "127.0.0.1", "-p", "0", "hostsite.asgi:application"]
    with run_daphne(site_env, command=command) as server:
        async with terminal(server, "/ws/terminals/kubesim/default/web/", cookie) as client:
            await client.until_message("ready")
            output = await run_line(client, say("FROM-THE-WHEEL"), "FROM-THE-WHEEL")
            assert b"FROM-THE-WHEEL" in output

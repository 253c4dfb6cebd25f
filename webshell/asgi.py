"""ASGI entry point: Django for HTTP, the terminal WebSockets behind origin and auth checks.

The origin check is ``terminals.origins``: the full origin (scheme, host, port) must be the
site's own or in ``CSRF_TRUSTED_ORIGINS``; Channels' ``AllowedHostsOriginValidator`` compares
only the host, which lets a page on another port of the same host open terminals.

The auth stack is Channels' own, except that a database outage while resolving the user lets
the terminal refuse with 4503 (``terminals.middleware``) instead of failing the handshake.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webshell.settings")
# Django must be set up before anything imports models, so this comes first.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from terminals.middleware import TerminalsAuthMiddlewareStack  # noqa: E402
from terminals.origins import TerminalsOriginValidator  # noqa: E402
from terminals.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": TerminalsOriginValidator(
            TerminalsAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

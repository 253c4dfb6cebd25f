"""WebSocket routes of the terminals app.

Wrap them in ``terminals.origins.TerminalsOriginValidator`` (see webshell/asgi.py).
"""

from django.urls import re_path

from .consumers import MalformedPathConsumer, TerminalConsumer
from .watch import WatchConsumer

# Names are matched loosely here and validated by the consumer, which answers 4400 with a
# reason instead of a bare handshake failure.
websocket_urlpatterns = [
    re_path(r"^ws/terminals/watch/(?P<session>[^/]+)/$", WatchConsumer.as_asgi()),
    re_path(
        r"^ws/terminals/(?P<cluster>[^/]+)/(?P<namespace>[^/]+)/(?P<pod>[^/]+)/$",
        TerminalConsumer.as_asgi(),
    ),
    re_path(r"^ws/terminals/", MalformedPathConsumer.as_asgi()),
]

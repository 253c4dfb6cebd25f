"""The project's ASGI stack: WebSocket routing, auth, and the origin validator."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tests.fixtures.users import make_user, session_cookie
from tests.test_middleware import database_down
from webshell.asgi import application

PATH = "/ws/terminals/kubesim/default/web/"
# What a browser sends from the site's own page at http://localhost/ (tests.settings hosts).
SAME_SITE = [(b"host", b"localhost"), (b"origin", b"http://localhost")]


@pytest.mark.django_db(transaction=True)
async def test_a_terminal_websocket_is_routed_and_asks_for_login():
    communicator = WebsocketCommunicator(application, PATH, headers=SAME_SITE)
    connected, _ = await communicator.connect()
    assert connected
    message = json.loads(await communicator.receive_from())
    assert message == {
        "type": "error",
        "code": "not_authenticated",
        "message": "Log in to open a terminal.",
    }
    assert (await communicator.receive_output())["code"] == 4401
    await communicator.disconnect()


async def test_a_cross_site_origin_is_refused_before_the_consumer():
    communicator = WebsocketCommunicator(
        application, PATH, headers=[(b"host", b"localhost"), (b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_an_unknown_path_is_not_routed():
    communicator = WebsocketCommunicator(application, "/ws/nothing/", headers=SAME_SITE)
    with pytest.raises(ValueError, match="No route found"):
        await communicator.connect()


@pytest.mark.django_db(transaction=True)
async def test_a_terminal_opened_while_the_database_is_down_is_refused_with_4503():
    cookie = await sync_to_async(lambda: session_cookie(make_user("ann", everywhere=True)))()
    communicator = WebsocketCommunicator(
        application,
        PATH,
        headers=[*SAME_SITE, (b"cookie", f"sessionid={cookie}".encode())],
    )
    async with database_down():
        connected, _ = await communicator.connect()  # not an HTTP 500 at the handshake
        assert connected
        message = json.loads(await communicator.receive_from())
        assert message["type"] == "error" and message["code"] == "audit_unavailable"
        assert message["message"]
        assert (await communicator.receive_output())["code"] == 4503
        await communicator.disconnect()


async def refused(headers: list[tuple[bytes, bytes]], path: str = PATH) -> bool:
    """Whether the whole stack refuses this handshake before accepting it."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    if connected:
        await communicator.receive_output()  # the consumer's first answer
    await communicator.disconnect()
    return not connected


@pytest.mark.django_db(transaction=True)
async def test_the_stack_compares_the_whole_origin():
    assert not await refused(SAME_SITE)
    assert await refused([(b"host", b"localhost"), (b"origin", b"http://localhost:9999")])
    assert await refused([(b"host", b"localhost"), (b"origin", b"https://localhost")])
    assert await refused([(b"host", b"localhost")])  # no Origin: refused, as Channels does


@pytest.mark.django_db(transaction=True)
async def test_behind_a_tls_proxy_the_https_origin_opens_terminals(settings):
    settings.ALLOWED_HOSTS = ["shell.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    page = [(b"host", b"shell.example.com"), (b"origin", b"https://shell.example.com")]
    assert not await refused([*page, (b"x-forwarded-proto", b"https")])
    assert await refused(page)  # a request that did not come through the proxy
    settings.SECURE_PROXY_SSL_HEADER = None
    settings.CSRF_TRUSTED_ORIGINS = ["https://shell.example.com"]
    assert not await refused(page)  # or the origin is trusted, as Django's forms need it

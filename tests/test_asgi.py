"""The project's ASGI stack: WebSocket routing, auth, and the origin validator."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tests.fixtures.users import make_user, session_cookie
from tests.test_middleware import database_down
from webshell.asgi import application

PATH = "/ws/terminals/kubesim/default/web/"


@pytest.mark.django_db(transaction=True)
async def test_a_terminal_websocket_is_routed_and_asks_for_login():
    communicator = WebsocketCommunicator(
        application, PATH, headers=[(b"origin", b"http://localhost")]
    )
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


@pytest.mark.django_db  # Channels' WebsocketDenier closes old DB connections
async def test_a_cross_site_origin_is_refused_before_the_consumer():
    communicator = WebsocketCommunicator(
        application, PATH, headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_an_unknown_path_is_not_routed():
    communicator = WebsocketCommunicator(
        application, "/ws/nothing/", headers=[(b"origin", b"http://localhost")]
    )
    with pytest.raises(ValueError, match="No route found"):
        await communicator.connect()


@pytest.mark.django_db(transaction=True)
async def test_a_terminal_opened_while_the_database_is_down_is_refused_with_4503():
    cookie = await sync_to_async(lambda: session_cookie(make_user("ann", everywhere=True)))()
    communicator = WebsocketCommunicator(
        application,
        PATH,
        headers=[(b"origin", b"http://localhost"), (b"cookie", f"sessionid={cookie}".encode())],
    )
    async with database_down():
        connected, _ = await communicator.connect()  # not an HTTP 500 at the handshake
        assert connected
        message = json.loads(await communicator.receive_from())
        assert message["type"] == "error" and message["code"] == "audit_unavailable"
        assert message["message"]
        assert (await communicator.receive_output())["code"] == 4503
        await communicator.disconnect()

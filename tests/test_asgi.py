"""The project's ASGI stack: WebSocket routing, auth, and the origin validator."""

import json

import pytest
from channels.testing import WebsocketCommunicator

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

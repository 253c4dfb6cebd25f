"""ResilientConsumer in-process (Channels' WebsocketCommunicator, no server): a bug in a handler
ends the consumer with 1011 through its ``failed`` hook instead of killing it silently, and
messages of unknown types are ignored."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator

from terminals import live


class Buggy(live.ResilientConsumer):
    """Accepts; the frame "boom" raises inside the handler; records what happened."""

    events: list[str]

    async def connect(self) -> None:
        self.events = type(self).events
        await self.accept()
        await self.join("buggy")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "boom":
            raise RuntimeError("a bug")
        await self.send(text_data=f"echo {text_data}")

    async def failed(self) -> None:
        self.events.append("failed")
        await super().failed()


async def test_a_bug_in_a_handler_ends_the_consumer_with_1011_through_its_hook():
    Buggy.events = []
    communicator = WebsocketCommunicator(Buggy.as_asgi(), "/ws/buggy/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data="hello")
    assert await communicator.receive_from() == "echo hello"
    await communicator.send_to(text_data="boom")
    closed: dict[str, Any] = await communicator.receive_output()
    assert closed == {"type": "websocket.close", "code": 1011}
    assert Buggy.events == ["failed"]
    await communicator.disconnect()


async def test_layer_messages_of_unknown_types_are_ignored():
    Buggy.events = []
    communicator = WebsocketCommunicator(Buggy.as_asgi(), "/ws/buggy/")
    await communicator.connect()
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    await layer.group_send("buggy", {"type": "no.such.handler"})
    await layer.group_send("buggy", {"type": "_private"})
    await communicator.send_to(text_data="still-here")
    assert await communicator.receive_from() == "echo still-here"
    assert Buggy.events == []
    await communicator.disconnect()

"""``python -m terminals.serve``: Daphne, with a deadline for each HTTP request to arrive whole.

Daphne bounds a WebSocket once its upgrade request has arrived (``--websocket_connect_timeout``,
5 s, for the application to accept) and the application's answer to an HTTP request
(``--http-timeout``, off by default, counted from the end of the request). Nothing bounds the
request itself: Twisted only closes a connection after 60 s *without a byte*, so a client that
sends part of a request line, of its headers (an upgrade without its blank line) or of its body,
a byte now and then, holds a socket, a file descriptor and a Twisted channel for as long as it
likes (the review held 300 of 300 such connections).

This command is Daphne's command line plus ``--request-timeout`` (default
:data:`REQUEST_TIMEOUT` seconds): a request must arrive whole (request line, headers and body)
within that many seconds of the connection opening or, on a connection kept alive, of the
request's first byte; otherwise the connection is closed. Browsers send a request in one go, so
only a silent, stalled or trickling client ever meets the deadline. Every other option is
Daphne's, unchanged.

HTTP/2 is not offered while the deadline is in force (Daphne offers it only over TLS with
Twisted's ``http2`` extra); the terminals' WebSockets are HTTP/1.1 anyway.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from twisted.python.failure import Failure
from twisted.web import http

logger = logging.getLogger(__name__)

#: Seconds a client has to send a whole request (and, on a kept-alive connection, the next).
REQUEST_TIMEOUT = 10.0


# Twisted types HTTPChannel only in part (untyped methods, zope interfaces that mypy cannot
# read without a plugin), so it is Any here, as channels' classes are in terminals.middleware.
_HTTPChannel: Any = http.HTTPChannel


class RequestDeadlineChannel(_HTTPChannel):  # type: ignore[misc]
    """Twisted's HTTP/1.1 channel; a request that has not arrived whole in time is cut off."""

    request_timeout: float = REQUEST_TIMEOUT
    _deadline: Any = None  # the IDelayedCall of the deadline, while one runs
    _between_requests = False

    def connectionMade(self) -> None:
        """Start the clock for the first request."""
        super().connectionMade()
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        """On a kept-alive connection, the first byte of the next request starts its clock."""
        if self._between_requests and data:
            # Until then the connection is idle, which Twisted's own timeout bounds (60 s).
            self._between_requests = False
            self._arm()
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        """The request is whole: stop the clock before it runs (an upgrade hands the socket on)."""
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        """A response is sent; the next request, if any, gets a deadline of its own."""
        self._between_requests = True
        super().requestDone(request)

    def connectionLost(self, reason: Failure) -> None:
        """Stop the clock."""
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.callLater(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        peer = self.transport.getPeer() if self.transport is not None else None
        # Debug: a flood of stalled connections would otherwise flood the log as well.
        logger.debug(
            "Closing a connection from %s: no whole request in %s s", peer, self.request_timeout
        )
        # Twisted's own idle timeout: close, and abort if the client does not let go in time.
        self.timeoutConnection()


def limit_request_time(seconds: float) -> None:
    """Make Daphne's HTTP factory build :class:`RequestDeadlineChannel`s (idempotent)."""
    from daphne.http_protocol import HTTPFactory

    if seconds <= 0:
        raise ValueError(f"The request timeout must be positive, not {seconds!r}.")
    RequestDeadlineChannel.request_timeout = seconds
    HTTPFactory.protocol = RequestDeadlineChannel
    # The channel speaks HTTP/1.1 only, so that is all that TLS may negotiate (ALPN).
    HTTPFactory.acceptableProtocols = _http_1_1


def _http_1_1(factory: Any) -> list[bytes]:
    return [b"http/1.1"]


def main(argv: list[str] | None = None) -> None:
    """Run Daphne's command line with ``--request-timeout``."""
    # Daphne's server module installs Twisted's asyncio reactor; it must come first.
    from daphne.cli import CommandLineInterface

    class TerminalsCommandLine(CommandLineInterface):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.parser.add_argument(
                "--request-timeout",
                type=float,
                default=REQUEST_TIMEOUT,
                help="Seconds a client has to send a whole HTTP request (the WebSocket upgrade "
                "included) before the connection is closed",
            )

        def run(self, args: list[str]) -> None:
            options, _ = self.parser.parse_known_args(args)
            if options.request_timeout <= 0:
                self.parser.error("--request-timeout must be a positive number of seconds")
            limit_request_time(options.request_timeout)
            super().run(args)

    TerminalsCommandLine().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()

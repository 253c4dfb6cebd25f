"""The cluster side of one session: its connection, the pod lookup and the exec request.

Every failure becomes an :class:`EndSession` with the close code and message the browser
gets; a refusal by the cluster's own RBAC is also written down as a denial.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from asgiref.sync import sync_to_async
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from ..kube.clusters import ClusterUnavailable, Connection, get_cluster
from ..kube.exec import ExecStream, KubernetesError, exec_path, get_json, open_exec
from ..kube.http import client_for
from ..permissions import ExecTarget
from ..protocol import CloseCode
from .ending import EndSession

logger = logging.getLogger(__name__)

# Marked for translation, kept in English: said through gettext() where it is sent.
UNREACHABLE = gettext_noop("The cluster cannot be reached.")

#: Writes down a refusal: (target, close code, message).
DenialRecorder = Callable[[ExecTarget, CloseCode, str], Awaitable[None]]


class Upstream:
    """Talks to the API server for one session; :meth:`close` ends every exec it opened.

    Requests go through the cluster's shared HTTP client (:mod:`terminals.kube.http`) with
    this session's own headers; each exec has a connection of its own, closed with it.
    """

    def __init__(
        self,
        target: ExecTarget,
        headers: list[tuple[str, str]],
        connect_timeout: float,
        keepalive: float,
        record_denial: DenialRecorder,
    ) -> None:
        self.target = target
        self.headers = headers
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._record_denial = record_denial
        self._connection: Connection | None = None
        self._http: aiohttp.ClientSession | None = None
        self._streams: list[ExecStream] = []

    async def connect(self) -> None:
        """Load the cluster's connection (in a thread: kubeconfigs and plugins block)."""
        cluster = get_cluster(self.target.cluster)
        try:
            self._connection = await sync_to_async(cluster.connection, thread_sensitive=False)()
        except ClusterUnavailable as exc:
            logger.warning("%s", exc)
            raise EndSession(
                CloseCode.UPSTREAM_FAILED, _("The cluster is not configured.")
            ) from exc
        self._http = await client_for(self.target.cluster)

    async def get_pod(self) -> dict[str, Any]:
        """The pod's object, as the API server has it."""
        http, connection = self._ready()
        path = f"/api/v1/namespaces/{self.target.namespace}/pods/{self.target.pod}"
        try:
            return await get_json(http, connection, path, self.headers, self.connect_timeout)
        except KubernetesError as error:
            raise await self._refusal(error) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EndSession(CloseCode.UPSTREAM_FAILED, _(UNREACHABLE)) from exc

    async def pod_or_none(self) -> dict[str, Any] | None:
        """The pod's object if the cluster gives it, else None: for what is only nice to have
        (the page's list of containers), so a refusal here is no denial and ends nothing."""
        http, connection = self._ready()
        path = f"/api/v1/namespaces/{self.target.namespace}/pods/{self.target.pod}"
        try:
            return await get_json(http, connection, path, self.headers, self.connect_timeout)
        except (KubernetesError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            logger.debug("No pod object for %s: %r", self.target, exc)
            return None

    async def open(self, container: str, command: list[str]) -> ExecStream:
        """Open the exec of ``command`` in ``container``."""
        http, connection = self._ready()
        path = exec_path(self.target.namespace, self.target.pod, command, container)
        try:
            async with asyncio.timeout(self.connect_timeout):
                stream = await open_exec(
                    http, connection, path, self.headers, self.connect_timeout, self.keepalive
                )
        except KubernetesError as error:
            raise await self._refusal(error, container) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            logger.warning("Exec to %s failed: %r", self.target, exc)
            raise EndSession(CloseCode.UPSTREAM_FAILED, _(UNREACHABLE)) from exc
        self._streams.append(stream)
        return stream

    async def close(self) -> None:
        """Close every exec this session opened, and with each its connection: the API
        server hangs the processes up. The cluster's HTTP client is shared and stays open."""
        streams, self._streams = self._streams, []
        for stream in streams:
            if not stream.closed:
                await stream.close()

    def _ready(self) -> tuple[aiohttp.ClientSession, Connection]:
        if self._http is None or self._connection is None:
            raise RuntimeError("Upstream.connect() first")
        return self._http, self._connection

    async def _refusal(self, error: KubernetesError, container: str = "") -> EndSession:
        if error.http_status == 404 or (
            error.http_status == 400 and "is not valid for pod" in error.message
        ):
            # The cluster's own text, as it says it; ours only when it says nothing.
            message = error.message or _("No such pod or container.")
            return EndSession(CloseCode.NOT_FOUND, message)
        message = _("The cluster refused: %(reason)s") % {"reason": error.message or error.reason}
        if error.http_status in (401, 403):
            # Django allowed it but the cluster's RBAC did not: a denial all the same.
            target = dataclasses.replace(self.target, container=container or self.target.container)
            await self._record_denial(target, CloseCode.UPSTREAM_FAILED, message)
        return EndSession(CloseCode.UPSTREAM_FAILED, message)

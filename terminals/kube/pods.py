"""Pod listing for the portal.

Every cluster is asked at once (:func:`list_clusters`), so the portal waits for the slowest
cluster, not for the sum of them, and a cluster that fails or hangs fails alone. Lists come in
chunks of :data:`CHUNK_SIZE` pods, as kubectl asks for them: the API server never builds one huge
answer, and decoding a chunk holds the event loop (which the terminals share) for milliseconds
where a whole list of thousands of pods would hold it for tens of them.

A list whose continue token has expired on the way (410 Expired: the API server keeps a list's
version for minutes, until etcd compacts it) is asked again whole, without chunks, as
client-go's pager does.

With impersonation the person may not be allowed to list pods cluster-wide; then each namespace
the web shell can see is listed as the person, and those the cluster refuses are left out, so the
portal shows what the cluster lets that person see.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from asgiref.sync import sync_to_async

from .clusters import Cluster, ClusterUnavailable, Connection
from .exec import Headers, KubernetesError, get_json
from .http import client_for

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The portal must render even if a cluster hangs; listing a cluster gives up after this long.
LIST_TIMEOUT = 10
#: Pods asked for per request (kubectl's --chunk-size default).
CHUNK_SIZE = 500


@dataclass(frozen=True)
class PodInfo:
    """What the portal shows of a pod."""

    cluster: str
    namespace: str
    name: str
    phase: str
    containers: tuple[str, ...]
    ready: int
    created: dt.datetime | None

    @property
    def running(self) -> bool:
        """Only running pods can be exec'd into."""
        return self.phase == "Running"


class PodListError(Exception):
    """The cluster could not be asked or refused; the message is safe to show."""


@dataclass
class ClusterPods:
    """One cluster's answer: its pods, or why there are none to show."""

    cluster: Cluster
    pods: list[PodInfo] = field(default_factory=list)
    error: str = ""


async def list_clusters(clusters: Iterable[Cluster], headers: Headers = ()) -> list[ClusterPods]:
    """The pods of every cluster, asked concurrently, in the clusters' order.

    A cluster that cannot be listed has its :attr:`ClusterPods.error` and the others their pods.
    """
    headers = list(headers)

    async def one(cluster: Cluster) -> ClusterPods:
        try:
            return ClusterPods(cluster, await list_pods(cluster, headers))
        except PodListError as exc:
            return ClusterPods(cluster, error=str(exc))

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(cluster)) for cluster in clusters]
    return [task.result() for task in tasks]


async def list_pods(cluster: Cluster, headers: Headers = ()) -> list[PodInfo]:
    """The pods of ``cluster`` that the request's identity may list, by namespace and name."""
    headers = list(headers)
    try:
        connection = await sync_to_async(cluster.connection, thread_sensitive=False)()
    except ClusterUnavailable as exc:
        raise PodListError(str(exc)) from exc
    pods: list[PodInfo]
    try:
        # The cluster's shared client (kept-alive, small-buffer connections); never closed here.
        http = await client_for(cluster.name)
        async with asyncio.timeout(LIST_TIMEOUT):
            try:
                pods = await _collect(
                    http, connection, "/api/v1/pods", headers, partial(_pod_info, cluster.name)
                )
            except KubernetesError as error:
                if error.http_status != 403 or not headers:
                    raise
                pods = [
                    _pod_info(cluster.name, item)
                    for item in await _items_per_namespace(http, connection, headers)
                ]
    except KubernetesError as error:
        logger.warning("Listing pods of %s failed: %s", cluster.name, error.message)
        raise PodListError(f"The cluster refused to list pods: {error.message}") from error
    except TimeoutError as exc:
        logger.warning("Listing pods of %s took over %s s", cluster.name, LIST_TIMEOUT)
        raise PodListError(f"The cluster did not answer within {LIST_TIMEOUT} s.") from exc
    except (aiohttp.ClientError, OSError) as exc:
        logger.warning("Listing pods of %s failed: %r", cluster.name, exc)
        raise PodListError("The cluster cannot be reached.") from exc
    return sorted(pods, key=lambda pod: (pod.namespace, pod.name))


class _ListExpired(Exception):
    """The API server answered a continued list with 410 Expired."""


async def _chunks(
    http: aiohttp.ClientSession, connection: Connection, path: str, headers: Headers
) -> AsyncIterator[list[dict[str, Any]]]:
    """The items of a list, one chunk at a time (``limit`` and ``continue``). Raises
    :class:`_ListExpired` if the continue token expired on the way."""
    token = ""
    while True:
        query = {"limit": CHUNK_SIZE, **({"continue": token} if token else {})}
        try:
            answer = await get_json(
                http, connection, f"{path}?{urlencode(query)}", headers, LIST_TIMEOUT
            )
        except KubernetesError as error:
            if token and error.http_status == 410:
                raise _ListExpired(error.message) from error
            raise
        yield list(answer.get("items") or [])
        token = str((answer.get("metadata") or {}).get("continue") or "")
        if not token:
            return


async def _collect(
    http: aiohttp.ClientSession,
    connection: Connection,
    path: str,
    headers: Headers,
    convert: Callable[[dict[str, Any]], T],
) -> list[T]:
    """Every item of a list, converted chunk by chunk (a chunk's items at a time on the event
    loop). If the continue token expired on the way, the list is asked again whole."""
    converted: list[T] = []
    try:
        async for items in _chunks(http, connection, path, headers):
            converted += (convert(item) for item in items)
    except _ListExpired as expired:
        logger.info(
            "The list %s expired while it was read (%s); asking for it whole", path, expired
        )
        answer = await get_json(http, connection, path, headers, LIST_TIMEOUT)
        converted = [convert(item) for item in answer.get("items") or []]
    return converted


def _same(item: dict[str, Any]) -> dict[str, Any]:
    return item


async def _items(
    http: aiohttp.ClientSession, connection: Connection, path: str, headers: Headers
) -> list[dict[str, Any]]:
    return await _collect(http, connection, path, headers, _same)


async def _items_per_namespace(
    http: aiohttp.ClientSession, connection: Connection, headers: Headers
) -> list[dict[str, Any]]:
    # The namespaces are listed as the web shell itself; their pods as the person.
    namespaces = await _items(http, connection, "/api/v1/namespaces", ())
    names = [(ns.get("metadata") or {}).get("name", "") for ns in namespaces]
    results = await asyncio.gather(
        *(_items(http, connection, f"/api/v1/namespaces/{name}/pods", headers) for name in names),
        return_exceptions=True,
    )
    items: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, KubernetesError) and result.http_status == 403:
            continue
        if isinstance(result, BaseException):
            raise result
        items += result
    return items


def _pod_info(cluster: str, pod: dict[str, Any]) -> PodInfo:
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    created = metadata.get("creationTimestamp")
    return PodInfo(
        cluster=cluster,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        phase=str(status.get("phase") or "Unknown"),
        containers=tuple(
            str(container.get("name", ""))
            for container in (pod.get("spec") or {}).get("containers") or []
        ),
        ready=sum(1 for state in status.get("containerStatuses") or [] if state.get("ready")),
        created=dt.datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
    )

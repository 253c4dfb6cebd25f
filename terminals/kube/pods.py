"""Pod listing for the portal.

With impersonation the person may not be allowed to list pods cluster-wide; then each namespace
the web shell can see is listed as the person, and those the cluster refuses are left out, so the
portal shows what the cluster lets that person see.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from asgiref.sync import sync_to_async

from .clusters import Cluster, ClusterUnavailable, Connection
from .exec import Headers, KubernetesError, get_json

logger = logging.getLogger(__name__)

# The portal must render even if a cluster hangs; list calls give up after this long.
LIST_TIMEOUT = 10


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


async def list_pods(cluster: Cluster, headers: Headers = ()) -> list[PodInfo]:
    """The pods of ``cluster`` that the request's identity may list, by namespace and name."""
    headers = list(headers)
    try:
        connection = await sync_to_async(cluster.connection, thread_sensitive=False)()
    except ClusterUnavailable as exc:
        raise PodListError(str(exc)) from exc
    try:
        async with aiohttp.ClientSession() as http:
            try:
                items = await _items(http, connection, "/api/v1/pods", headers)
            except KubernetesError as error:
                if error.http_status != 403 or not headers:
                    raise
                items = await _items_per_namespace(http, connection, headers)
    except KubernetesError as error:
        logger.warning("Listing pods of %s failed: %s", cluster.name, error.message)
        raise PodListError(f"The cluster refused to list pods: {error.message}") from error
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        logger.warning("Listing pods of %s failed: %r", cluster.name, exc)
        raise PodListError("The cluster cannot be reached.") from exc
    pods = [_pod_info(cluster.name, item) for item in items]
    return sorted(pods, key=lambda pod: (pod.namespace, pod.name))


async def _items(
    http: aiohttp.ClientSession, connection: Connection, path: str, headers: Headers
) -> list[dict[str, Any]]:
    answer = await get_json(http, connection, path, headers, LIST_TIMEOUT)
    return list(answer.get("items") or [])


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

"""Pod listing for the portal, through the official client (plain API calls, in a thread)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .clusters import Cluster, ClusterUnavailable

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


def list_pods(cluster: Cluster, headers: dict[str, str] | None = None) -> list[PodInfo]:
    """Every pod of the cluster the web shell's identity may list, sorted by namespace and name."""
    try:
        with cluster.api_client(headers) as api:
            pods = client.CoreV1Api(api).list_pod_for_all_namespaces(_request_timeout=LIST_TIMEOUT)
    except ClusterUnavailable as exc:
        raise PodListError(str(exc)) from exc
    except ApiException as exc:
        logger.warning("Listing pods of %s failed: %s %s", cluster.name, exc.status, exc.reason)
        raise PodListError(
            f"The cluster refused to list pods ({exc.status} {exc.reason})."
        ) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        logger.warning("Listing pods of %s failed: %s", cluster.name, exc)
        raise PodListError("The cluster cannot be reached.") from exc
    result = [_pod_info(cluster.name, pod) for pod in pods.items]
    return sorted(result, key=lambda pod: (pod.namespace, pod.name))


def _pod_info(cluster: str, pod: client.V1Pod) -> PodInfo:
    metadata = pod.metadata or client.V1ObjectMeta()
    status = pod.status or client.V1PodStatus()
    containers = pod.spec.containers if pod.spec else []
    return PodInfo(
        cluster=cluster,
        namespace=metadata.namespace or "",
        name=metadata.name or "",
        phase=status.phase or "Unknown",
        containers=tuple(container.name for container in containers),
        ready=sum(1 for state in status.container_statuses or [] if state.ready),
        created=metadata.creation_timestamp,
    )

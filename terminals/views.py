"""The portal (pods the user may open) and the terminal page."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from .impersonation import impersonation_headers
from .kube.clusters import UnknownCluster, all_clusters, get_cluster
from .kube.pods import PodInfo, PodListError, list_pods
from .permissions import ExecTarget, may_exec
from .records import record_denial

logger = logging.getLogger(__name__)


@dataclass
class ClusterListing:
    """One cluster's section of the portal."""

    name: str
    verbose_name: str
    pods: list[tuple[PodInfo, list[str]]] = field(default_factory=list)  # pod, openable containers
    error: str = ""


@login_required
def portal(request: HttpRequest) -> HttpResponse:
    """Every pod, per cluster, that the user may open a terminal on."""
    listings = []
    for cluster in all_clusters().values():
        listing = ClusterListing(cluster.name, cluster.verbose_name)
        try:
            pods = async_to_sync(list_pods)(cluster, impersonation_headers(request.user))
        except PodListError as exc:
            listing.error = str(exc)
        else:
            for pod in pods:
                containers = [
                    container
                    for container in pod.containers
                    if may_exec(
                        request.user, ExecTarget(cluster.name, pod.namespace, pod.name, container)
                    )
                ]
                if containers:
                    listing.pods.append((pod, containers))
        listings.append(listing)
    return render(request, "terminals/portal.html", {"clusters": listings})


@login_required
def terminal(request: HttpRequest, cluster: str, namespace: str, pod: str) -> HttpResponse:
    """The xterm.js page for one pod (``?container=`` picks one of several)."""
    try:
        get_cluster(cluster)
    except UnknownCluster:
        raise Http404("No such cluster.") from None
    target = ExecTarget(
        cluster, namespace, pod, request.GET.get("container", ""), request.GET.get("command", "")
    )
    invalid = target.invalid_reason()
    if invalid:
        raise Http404(invalid)
    if not may_exec(request.user, target):
        message = f"You may not open a terminal on {target}."
        record_denial(
            request.user,
            target,
            "forbidden",
            message,
            request.META.get("REMOTE_ADDR"),
            request.headers.get("User-Agent", ""),
        )
        raise PermissionDenied(message)
    # The WebSocket lives at the root whatever prefix the pages have (see routing.py).
    socket_path = f"/ws/terminals/{cluster}/{namespace}/{pod}/"
    return render(
        request,
        "terminals/terminal.html",
        {"target": target, "socket_path": socket_path, "title": str(target)},
    )

"""The portal (pods the user may open) and the terminal page."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import live
from .audit import cast, store
from .clients import client_address
from .impersonation import impersonation_headers
from .kube.clusters import UnknownCluster, all_clusters, get_cluster
from .kube.pods import PodInfo, PodListError, list_pods
from .models import Session
from .permissions import ExecTarget, may_exec
from .records import record_denial

logger = logging.getLogger(__name__)

LIVE_UNAVAILABLE = (
    "The session could not be reached: live control is unavailable because the server's "
    "channel layer (Redis) does not answer. The session goes on; try again in a moment."
)


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
            client_address(request),
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


# Reviewing sessions: replay, export, watch and end. Auditors get these through permissions.


def _session_or_404(session_id: uuid.UUID) -> Session:
    try:
        return Session.objects.get(pk=session_id)
    except Session.DoesNotExist:
        raise Http404("No such session.") from None


@permission_required("terminals.view_session", raise_exception=True)
def session_cast(request: HttpRequest, session_id: uuid.UUID) -> StreamingHttpResponse:
    """The session as an asciicast v2 file (``o`` output, ``i`` input, ``r`` resize)."""
    session = _session_or_404(session_id)
    lines = store.export_cast(session, markers=request.GET.get("markers") == "1")
    response = StreamingHttpResponse(lines, content_type=cast.MEDIA_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{session.pk}.cast"'
    return response


@permission_required("terminals.view_session", raise_exception=True)
def session_replay(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    """asciinema-player on the session's cast, with its commands to jump to."""
    session = _session_or_404(session_id)
    cols, rows = store.initial_size(session)
    commands = list(session.commands.all())
    return render(
        request,
        "terminals/replay.html",
        {
            "session": session,
            "cols": cols,
            "rows": rows,
            "commands": commands,
            "start": request.GET.get("command", ""),
        },
    )


@permission_required("terminals.watch_session", raise_exception=True)
def session_watch(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    """A live session's screen, read-only, with an "End session" button for those allowed."""
    session = _session_or_404(session_id)
    return render(
        request,
        "terminals/watch.html",
        {
            "session": session,
            "socket_path": f"/ws/terminals/watch/{session.pk}/",
            "may_end": request.user.has_perm("terminals.end_session"),
        },
    )


@require_POST
@permission_required("terminals.end_session", raise_exception=True)
def session_end(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    """End a live session for its user (4409); the session records who ended it."""
    session = _session_or_404(session_id)
    if session.is_live:
        sent = async_to_sync(live.attempt)(
            "ending a session",
            get_channel_layer().group_send(
                live.terminal_group(session.pk),
                live.terminate_message(request.user.pk, request.user.get_username()),
            ),
        )
        if sent:
            messages.success(request, f"Asked the session of {session.username} to end.")
        else:
            messages.error(request, LIVE_UNAVAILABLE)
    elif session.ended_at is None:
        messages.info(request, "That session's server was lost; the reaper records its end.")
    else:
        messages.info(request, "That session had already ended.")
    return redirect("terminals:session-watch", session_id=session.pk)

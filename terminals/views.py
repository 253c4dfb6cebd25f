"""The portal (pods the user may open) and the terminal page."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from . import live
from .audit import cast, store
from .clients import client_address
from .impersonation import impersonation_headers
from .kube.clusters import UnknownCluster, all_clusters, get_cluster
from .kube.pods import PodInfo, list_clusters
from .models import Session
from .permissions import ExecTarget, may_exec
from .records import record_denial

logger = logging.getLogger(__name__)

LIVE_UNAVAILABLE = (
    "The session could not be reached: live control is unavailable because the server's "
    "channel layer (Redis) does not answer. The session goes on; try again in a moment."
)


@dataclass(frozen=True)
class Created:
    """A creation time as the portal shows it."""

    iso: str  # for <time datetime>
    local: str  # the time in the site's zone and format
    age: str  # "3 hours, 5 minutes"


@dataclass(frozen=True)
class PodRow:
    """One row of the portal: a pod and the terminals the user may open on it."""

    pod: PodInfo
    containers: list[str]  # those the user may open
    links: list[tuple[str, str]]  # (container, terminal page URL); none unless running
    created: Created | None


@dataclass
class ClusterListing:
    """One cluster's section of the portal."""

    name: str
    verbose_name: str
    rows: list[PodRow] = field(default_factory=list)
    error: str = ""


@login_required
def portal(request: HttpRequest) -> HttpResponse:
    """Every pod, per cluster, that the user may open a terminal on.

    The clusters are asked all at once (``list_clusters``); each one that fails shows its own
    error. The user's access rules are read once for the request (``TerminalsBackend``
    caches them on the user), however many pods are checked.
    """
    answers = async_to_sync(list_clusters)(
        all_clusters().values(), impersonation_headers(request.user)
    )
    rows = _RowMaker(request.user)
    listings = [
        ClusterListing(
            answer.cluster.name,
            answer.cluster.verbose_name,
            [row for pod in answer.pods if (row := rows.make(pod)) is not None],
            answer.error,
        )
        for answer in answers
    ]
    return render(request, "terminals/portal.html", {"clusters": listings})


class _RowMaker:
    """Builds the portal's rows; what a template would redo per row is done once per page.

    A page may have thousands of rows: ``reverse()`` and ``timesince`` per row cost about as
    much as the rest of the page, so the URL's prefix is reversed once (pod names are DNS
    names, which need no quoting) and times are formatted once per creation time.
    """

    def __init__(self, user: Any) -> None:
        self.user = user
        self.now = timezone.now()
        sample = reverse("terminals:terminal", args=("c", "n", "p"))
        self.url_prefix = sample.removesuffix("c/n/p/")
        self.created: dict[dt.datetime, Created] = {}

    def make(self, pod: PodInfo) -> PodRow | None:
        """The pod's row, or None if the user may open none of its containers."""
        containers = [
            container
            for container in pod.containers
            if may_exec(self.user, ExecTarget(pod.cluster, pod.namespace, pod.name, container))
        ]
        if not containers:
            return None
        page = f"{self.url_prefix}{pod.cluster}/{pod.namespace}/{pod.name}/?container="
        links = [(c, page + quote(c)) for c in containers] if pod.running else []
        return PodRow(pod, containers, links, self._created(pod.created))

    def _created(self, moment: dt.datetime | None) -> Created | None:
        if moment is None:
            return None
        if moment not in self.created:
            self.created[moment] = Created(
                iso=moment.isoformat(),
                local=str(localize(timezone.localtime(moment))),
                age=timesince(moment, self.now),
            )
        return self.created[moment]


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

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
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from django.views.decorators.cache import cache_control
from django.views.decorators.http import last_modified, require_POST
from django.views.i18n import JavaScriptCatalog

from . import live, mfa
from .audit import cast, store
from .clients import client_address
from .conf import get_config
from .impersonation import impersonation_headers
from .kube.clusters import UnknownCluster, all_clusters, get_cluster
from .kube.pods import PodInfo, list_clusters
from .models import Session
from .permissions import ExecTarget, may_exec
from .preferences import preferences_for
from .records import record_denial

logger = logging.getLogger(__name__)

# Marked for translation, kept in English: shown through gettext() at each use.
LIVE_UNAVAILABLE = gettext_noop(
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
    return render(request, "terminals/portal.html", {"clusters": _cluster_listings(request)})


def _cluster_listings(request: HttpRequest) -> list[ClusterListing]:
    """The portal's listing: per cluster, the pods the user may open (the workspace's too)."""
    answers = async_to_sync(list_clusters)(
        all_clusters().values(), impersonation_headers(request.user)
    )
    rows = _RowMaker(request.user)
    return [
        ClusterListing(
            answer.cluster.name,
            answer.cluster.verbose_name,
            [row for pod in answer.pods if (row := rows.make(pod)) is not None],
            answer.error,
        )
        for answer in answers
    ]


@login_required
def workspace(request: HttpRequest) -> HttpResponse:
    """One page of many terminals: the pods the user may open beside terminals in tabs.

    The tree is the portal's listing; the tabs are the browser's (workspace.js), each a
    session of its own on the same WebSocket as the terminal page.
    """
    if get_config()["REQUIRE_MFA"] and not mfa.session_verified(request.session, request.user):
        # As the terminal page: every tab would be refused (mfa_required) until then. A
        # step-up belongs to a target, so a tab that needs one says so (step_up_required).
        need = mfa.Requirement(
            mfa.Need.VERIFY if mfa.has_totp_device(request.user) else mfa.Need.ENROL
        )
        return redirect(need.url(request.get_full_path()))
    return render(
        request,
        "terminals/workspace.html",
        {
            "clusters": _cluster_listings(request),
            # The WebSocket lives at the root whatever prefix the pages have (see routing.py).
            "socket_prefix": "/ws/terminals/",
            "terminal_preferences": {
                **preferences_for(request.user),
                "url": reverse("terminals:preferences"),
            },
        },
    )


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
        raise Http404(_("No such cluster.")) from None
    target = ExecTarget(
        cluster, namespace, pod, request.GET.get("container", ""), request.GET.get("command", "")
    )
    invalid = target.invalid_reason()
    if invalid:
        raise Http404(invalid)
    if not may_exec(request.user, target):
        # The record keeps the English text; the page says it in the user's language.
        record_denial(
            request.user,
            target,
            "forbidden",
            f"You may not open a terminal on {target}.",
            client_address(request),
            request.headers.get("User-Agent", ""),
        )
        raise PermissionDenied(_("You may not open a terminal on %(target)s.") % {"target": target})
    # A second factor or a fresher authentication first (admission refuses the socket without).
    need = mfa.requirement(request.session, request.user, target)
    if need is not None:
        return redirect(need.url(request.get_full_path()))
    # The WebSocket lives at the root whatever prefix the pages have (see routing.py).
    socket_path = f"/ws/terminals/{cluster}/{namespace}/{pod}/"
    return render(
        request,
        "terminals/terminal.html",
        {
            "target": target,
            "socket_path": socket_path,
            "title": str(target),
            # For settings.js, through json_script: the terminal is drawn the user's way at once.
            "terminal_preferences": {
                **preferences_for(request.user),
                "url": reverse("terminals:preferences"),
            },
        },
    )


# "My sessions": each user's own sessions, live and past, to replay or end.

SESSIONS_PER_PAGE = 25


@dataclass(frozen=True)
class MySessionRow:
    """One row of "My sessions"."""

    session: Session
    # "live"; "detached" (no browser, waiting to be resumed); "lost" (its server died and the
    # reaper has yet to record the end); or "ended"
    state: str
    counts: bool  # against MAX_SESSIONS_PER_USER
    duration: str  # H:MM:SS; so far, for one not ended


def _own(sessions: QuerySet[Session], user: Any) -> QuerySet[Session]:
    """Those of ``sessions`` that ``user`` opened (none for an anonymous user, whose pk is None
    as is the user of a session whose account was deleted)."""
    if not user.is_authenticated:
        return sessions.none()
    return sessions.filter(user_id=user.pk)


def _session_state(session: Session, live_ids: set[uuid.UUID]) -> str:
    if session.ended_at is not None:
        return "ended"
    if session.pk not in live_ids:
        return "lost"
    return "detached" if session.detached_at is not None else "live"


def _duration(session: Session, now: dt.datetime) -> str:
    seconds = int(((session.ended_at or now) - session.started_at).total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@login_required
def my_sessions(request: HttpRequest) -> HttpResponse:
    """The user's own sessions, newest first, a page at a time.

    Live means what admission counts against ``MAX_SESSIONS_PER_USER``
    (``Session.objects.live()``): detached sessions count, those of a lost server do not.
    """
    user = request.user
    live_ids = set(_own(Session.objects.live(), user).values_list("pk", flat=True))
    sessions = _own(Session.objects.all(), user).order_by("-started_at", "-pk")
    page = Paginator(sessions, SESSIONS_PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    rows = [
        MySessionRow(
            session,
            _session_state(session, live_ids),
            session.pk in live_ids,
            _duration(session, now),
        )
        for session in page
    ]
    return render(
        request,
        "terminals/my_sessions.html",
        {
            "page": page,
            "rows": rows,
            "live_count": len(live_ids),
            "limit": get_config()["MAX_SESSIONS_PER_USER"],
            "may_replay": user.has_perm("terminals.view_session") or may_replay_own_sessions(user),
        },
    )


@require_POST
@login_required
def my_session_end(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    """End one of the user's own live sessions, as ``session_end`` does for an auditor: the
    terminal closes with 4409 and the record names the user as who ended it."""
    session = _own(Session.objects.filter(pk=session_id), request.user).first()
    if session is None:
        raise PermissionDenied(_("You may end only your own sessions."))
    if not Session.objects.live().filter(pk=session.pk).exists():
        messages.info(
            request,
            _("That session had already ended.")
            if session.ended_at is not None
            else _("That session's server was lost; the reaper records its end."),
        )
    elif async_to_sync(live.attempt)(
        "ending a session",
        get_channel_layer().group_send(
            live.terminal_group(session.pk),
            live.terminate_message(request.user.pk, request.user.get_username()),
        ),
    ):
        messages.success(request, _("Asked your session on %(pod)s to end.") % {"pod": session.pod})
    else:
        messages.error(request, _(LIVE_UNAVAILABLE))
    return redirect("terminals:my-sessions")


# Reviewing sessions: replay, export, watch and end. Auditors get these through permissions.


def _session_or_404(session_id: uuid.UUID) -> Session:
    try:
        return Session.objects.get(pk=session_id)
    except Session.DoesNotExist:
        raise Http404(_("No such session.")) from None


def may_replay_own_sessions(user: Any) -> bool:
    """Whether ``user`` may replay their own sessions without ``terminals.view_session``."""
    return bool(user.is_authenticated and get_config()["REPLAY_OWN_SESSIONS"])


def _replayable_session(request: HttpRequest, session_id: uuid.UUID) -> Session:
    """The session, if the user may replay it: an auditor (``terminals.view_session``) any
    session, anyone else their own where ``TERMINALS["REPLAY_OWN_SESSIONS"]`` allows it.

    Those who are not auditors are refused alike whether the session is someone else's or does
    not exist, so that the answer says nothing of other people's sessions.
    """
    user = request.user
    if user.has_perm("terminals.view_session"):
        return _session_or_404(session_id)
    if may_replay_own_sessions(user):
        session = _own(Session.objects.filter(pk=session_id), user).first()
        if session is not None:
            return session
        raise PermissionDenied(_("You may replay only your own sessions."))
    raise PermissionDenied(_("Replaying sessions needs the permission to view terminal sessions."))


def session_cast(request: HttpRequest, session_id: uuid.UUID) -> StreamingHttpResponse:
    """The session as an asciicast v2 file (``o`` output, ``i`` input, ``r`` resize)."""
    session = _replayable_session(request, session_id)
    lines = store.export_cast(session, markers=request.GET.get("markers") == "1")
    response = StreamingHttpResponse(lines, content_type=cast.MEDIA_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{session.pk}.cast"'
    return response


def session_replay(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    """asciinema-player on the session's cast, with its commands to jump to."""
    session = _replayable_session(request, session_id)
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
            "max_reason": live.MAX_END_REASON,
        },
    )


@require_POST
@permission_required("terminals.end_session", raise_exception=True)
def session_end(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    """End a live session for its user (4409), saying why: the reason (required, one line of
    at most ``live.MAX_END_REASON`` characters) is what the user is shown and what the record
    keeps, with who ended it. A form is redirected to the watch page with a message; a request
    that asks for JSON (the watch page's script) gets ``{"ok": …, "message": …}``."""
    session = _session_or_404(session_id)
    reason = " ".join(request.POST.get("reason", "").split())
    level, status = messages.ERROR, 400
    if not session.is_live:
        level, status = messages.INFO, 409
        text = (
            _("That session's server was lost; the reaper records its end.")
            if session.ended_at is None
            else _("That session had already ended.")
        )
    elif not reason:
        text = _("Say why you end the session: the reason is required, and its user is shown it.")
    elif len(reason) > live.MAX_END_REASON:
        text = _(
            "The reason is too long: %(length)d characters, at most %(limit)d. The session goes on."
        ) % {"length": len(reason), "limit": live.MAX_END_REASON}
    elif async_to_sync(live.attempt)(
        "ending a session",
        get_channel_layer().group_send(
            live.terminal_group(session.pk),
            live.terminate_message(request.user.pk, request.user.get_username(), reason),
        ),
    ):
        level, status = messages.SUCCESS, 200
        text = _("Asked the session of %(user)s to end.") % {"user": session.username}
    else:
        status, text = 503, _(LIVE_UNAVAILABLE)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse({"ok": status == 200, "message": text}, status=status)
    messages.add_message(request, level, text)
    return redirect("terminals:session-watch", session_id=session.pk)


# The app's strings for its scripts (the djangojs catalogue) in the request's language, for
# terminals/static/terminals/js/i18n.js. It changes only with a deployment: browsers ask again
# each time (no-cache) and get a 304 until the server restarts.
_CATALOG_SINCE = timezone.now()
javascript_catalog = cache_control(no_cache=True)(
    last_modified(lambda request: _CATALOG_SINCE)(JavaScriptCatalog.as_view(packages=["terminals"]))
)

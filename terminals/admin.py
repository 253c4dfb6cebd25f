"""Admin: access rules are managed here; session and denial records are read-only for all."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from .audit import ledger, store
from .models import (
    AccessRule,
    AuditPrune,
    Command,
    DeniedAttempt,
    Server,
    Session,
    alive_since,
    split_patterns,
)


class CompactList:
    """A changelist that fits a 1280 px window beside the admin's two sidebars: a fixed table
    layout, columns sized in admin.css, and long values cut short with the whole on hover."""

    class Media:
        css = {"all": ["terminals/css/admin.css"]}


def truncated(text: object) -> str:
    """A cell value that the list may cut short (admin.css); its ``title`` has all of it."""
    return format_html('<span class="truncated" title="{}">{}</span>', text, text)


def compact_moment(moment: dt.datetime | None) -> str:
    """A moment in the site's time zone to the second, without the zone (the same on each row,
    and the admin's "Nov. 26, 2026, 7:41 p.m." is wider and drops the seconds)."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


class ReadOnly:
    """Audit records: nobody adds, changes or deletes them here, superusers included."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(CompactList, ReadOnly, admin.ModelAdmin):  # type: ignore[type-arg]
    """A read-only admin for an audit model."""


@admin.register(AccessRule)
class AccessRuleAdmin(CompactList, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["rule_name", "where", "who", "expires", "why"]
    list_filter = [("expires_at", admin.EmptyFieldListFilter), "groups"]
    search_fields = ["name", "reason", "pods", "namespaces", "users__username", "groups__name"]
    filter_horizontal = ["users", "groups"]
    fieldsets = [
        (None, {"fields": ["name", "reason", "expires_at", "fresh_auth_minutes"]}),
        (_("Who"), {"fields": ["users", "groups"]}),
        (
            _("Where (glob patterns, one per line or comma-separated)"),
            {"fields": ["clusters", "namespaces", "pods", "containers", "commands"]},
        ),
    ]

    @admin.display(description=_("name"), ordering="name")
    def rule_name(self, rule: AccessRule) -> str:
        return truncated(rule.name)

    @admin.display(description=_("where (cluster / namespace / pod [container])"))
    def where(self, rule: AccessRule) -> str:
        patterns = [
            ", ".join(split_patterns(text)) for text in (rule.clusters, rule.namespaces, rule.pods)
        ]
        return truncated(f"{' / '.join(patterns)} [{', '.join(split_patterns(rule.containers))}]")

    @admin.display(description=_("users and groups"))
    def who(self, rule: AccessRule) -> str:
        names = [user.get_username() for user in rule.users.all()]
        names += [f"@{group.name}" for group in rule.groups.all()]
        return truncated(", ".join(names) or "-")

    @admin.display(description=_("expires"), ordering="expires_at")
    def expires(self, rule: AccessRule) -> str:
        return compact_moment(rule.expires_at) if rule.expires_at else str(_("never"))

    @admin.display(description=_("reason"))
    def why(self, rule: AccessRule) -> str:
        return truncated(rule.reason)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccessRule]:
        return super().get_queryset(request).prefetch_related("users", "groups")


@admin.register(DeniedAttempt)
class DeniedAttemptAdmin(ReadOnlyAdmin):
    list_display = ["when", "username_short", "target", "code", "why"]
    list_filter = ["code", "cluster", "at"]
    search_fields = ["username", "namespace", "pod", "reason", "client_address"]
    date_hierarchy = "at"

    @admin.display(description=_("when"), ordering="at")
    def when(self, denial: DeniedAttempt) -> str:
        return compact_moment(denial.at)

    @admin.display(description=_("user"), ordering="username")
    def username_short(self, denial: DeniedAttempt) -> str:
        return truncated(denial.username)

    @admin.display(description=_("target"))
    def target(self, denial: DeniedAttempt) -> str:
        where = "/".join(part for part in (denial.cluster, denial.namespace, denial.pod) if part)
        return truncated(f"{where} [{denial.container}]" if denial.container else where)

    @admin.display(description=_("why"))
    def why(self, denial: DeniedAttempt) -> str:
        return truncated(denial.reason)


#: Commands on one page of a session's admin page (a session can hold tens of thousands).
COMMANDS_PER_PAGE = 100


class CommandsFilter(admin.SimpleListFilter):
    """Sessions with a command whose screen and keys disagree, or whose input was not shown."""

    title = _("commands")
    parameter_name = "commands"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("mismatch", _("shown and typed differ")),
            ("unechoed", _("typed but not shown")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Session]) -> QuerySet[Session]:
        if self.value() == "mismatch":
            flagged = Command.objects.filter(mismatch=True)
        elif self.value() == "unechoed":
            flagged = Command.objects.filter(echoed=False)
        else:
            return queryset
        return queryset.filter(pk__in=flagged.values("session_id"))


def commands_page(request: HttpRequest, session_id: str) -> dict[str, Any]:
    """One page of a session's commands, each with its index in the replay's list.

    The replay lists a session's commands in ``Command.Meta.ordering``, so a command's index
    is its page's start plus its place on the page: two queries (count, page), whatever the
    number of commands.
    """
    try:
        pk = uuid.UUID(str(session_id))
    except ValueError:
        return {}
    paginator = Paginator(Command.objects.filter(session_id=pk), COMMANDS_PER_PAGE)
    page = paginator.get_page(request.GET.get("commands"))
    first = page.start_index() - 1 if paginator.count else 0
    return {
        "commands_page": page,
        "commands": [(first + n, command) for n, command in enumerate(page.object_list)],
        "replay_url": reverse("terminals:session-replay", args=[pk]),
    }


UNREAPED = _("server lost (not yet reaped)")


class OutcomeFilter(admin.SimpleListFilter):
    """Live, lost with its server but not yet reaped, or how the session ended."""

    title = _("outcome")
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("live", _("live")), ("unreaped", UNREAPED), *Session.EndReason.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Session]) -> QuerySet[Session]:
        live = Session.objects.live().values("pk")
        if self.value() == "live":
            return queryset.filter(pk__in=live)
        if self.value() == "unreaped":
            return queryset.filter(ended_at__isnull=True).exclude(pk__in=live)
        if self.value():
            return queryset.filter(end_reason=self.value())
        return queryset


def _to_the_second(moment: dt.datetime) -> str:
    """A moment in the site's time zone, to the second (the admin's default drops them)."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ["started_short", "username_short", "target", "duration", "outcome"]
    list_filter = [OutcomeFilter, CommandsFilter, "username", "cluster", "namespace", "started_at"]
    list_select_related = ["server"]  # is_live reads the server's heartbeat
    # A command is found by what the screen showed or by what was typed.
    search_fields = ["username", "pod", "namespace", "commands__text", "commands__typed"]
    date_hierarchy = "started_at"
    # The commands are listed a page at a time below the fields (not an inline: an inline
    # renders every row, and a session can hold tens of thousands).
    change_form_template = "terminals/admin/session_change_form.html"
    fields = readonly_fields = (
        "id", "username", "target_detail", "command", "client_address", "user_agent",
        "started", "ended", "duration", "state", "end_reason", "exit_code", "end_message",
        "ended_by_username", "server", "resumes", "traffic", "chain", "seal_check", "links",
    )  # fmt: skip

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {**(extra_context or {}), **commands_page(request, object_id)}
        return super().change_view(request, object_id, form_url, context)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Session], search_term: str
    ) -> tuple[QuerySet[Session], bool]:
        results, _duplicates = super().get_search_results(request, queryset, search_term)
        return results.distinct(), False

    def _target(self, session: Session) -> str:
        target = f"{session.cluster}/{session.namespace}/{session.pod}"
        return f"{target} [{session.container}]" if session.container else target

    @admin.display(description=_("target"))
    def target(self, session: Session) -> str:
        return truncated(self._target(session))

    @admin.display(description=_("target"))
    def target_detail(self, session: Session) -> str:
        return self._target(session)

    @admin.display(description=_("started"), ordering="started_at")
    def started_short(self, session: Session) -> str:
        return compact_moment(session.started_at)

    @admin.display(description=_("user"), ordering="username")
    def username_short(self, session: Session) -> str:
        return truncated(session.username)

    @admin.display(description=_("state"))
    def outcome(self, session: Session) -> str:
        """The state, with the exit code when there is one (one column instead of two)."""
        state = self.state(session)
        if session.exit_code is not None:
            state = f"{state} ({_('exit code')} {session.exit_code})"
        return truncated(state)

    @admin.display(description=_("started"))
    def started(self, session: Session) -> str:
        return _to_the_second(session.started_at)

    @admin.display(description=_("ended"))
    def ended(self, session: Session) -> str:
        return _to_the_second(session.ended_at) if session.ended_at else str(_("not yet"))

    @admin.display(description=_("duration"))
    def duration(self, session: Session) -> str:
        end = session.ended_at or timezone.now()
        seconds = int((end - session.started_at).total_seconds())
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    @admin.display(description=_("state"))
    def state(self, session: Session) -> str:
        if session.is_live and session.detached_at is not None:
            # The browser went away; the session waits RESUME_GRACE for it to come back.
            return f"{_('detached')} ({_('since')} {_to_the_second(session.detached_at)})"
        if session.is_live:
            return str(_("live"))
        if session.ended_at is None:
            return str(UNREAPED)
        return session.get_end_reason_display()

    @admin.display(description=_("resumes"))
    def resumes(self, session: Session) -> str:
        """Each time a browser took the session over again: when, from where, at which byte."""
        rows = [
            f"{_to_the_second(r.at)} {_('from')} {r.client_address or '?'} "
            f"({_('at output byte')} {r.offset})"
            for r in session.resumes.all()[:50]
        ]
        return format_html_join("\n", "<div>{}</div>", ((row,) for row in rows)) or str(_("none"))

    @admin.display(description=_("traffic"))
    def traffic(self, session: Session) -> str:
        # A live session's counters are written when it ends; until then they are counted.
        counts: Any = store.totals(session.pk) if session.ended_at is None else vars(session)
        return (
            f"in: {counts['frames_in']} frames, {counts['bytes_in']} bytes; "
            f"out: {counts['frames_out']} frames, {counts['bytes_out']} bytes"
        )

    @admin.display(description=_("hash chain"))
    def chain(self, session: Session) -> str:
        verdict = store.verify_session(session)
        # A mark, not a colour: the Content-Security-Policy allows no inline styles here.
        return format_html("<strong>{} {}</strong>", "✔" if verdict.ok else "✘", str(verdict))

    @admin.display(description=_("seal and ledger"))
    def seal_check(self, session: Session) -> str:
        report = ledger.check_session(session)
        return format_html("<strong>{} {}</strong>", "✔" if report.ok else "✘", str(report))

    @admin.display(description=_("review"))
    def links(self, session: Session) -> str:
        links = [
            format_html(
                '<a href="{}">{}</a>', reverse("terminals:session-replay", args=[session.pk]),
                _("Replay"),
            ),
            format_html(
                '<a href="{}">{}</a>', reverse("terminals:session-cast", args=[session.pk]),
                _("Download (.cast)"),
            ),
        ]  # fmt: skip
        if session.is_live:
            links.append(
                format_html(
                    '<a href="{}">{}</a>', reverse("terminals:session-watch", args=[session.pk]),
                    _("Watch live"),
                )
            )  # fmt: skip
        return format_html_join(" · ", "{}", ((link,) for link in links))


@admin.register(Server)
class ServerAdmin(ReadOnlyAdmin):
    list_display = ["process", "started", "heartbeat", "state", "live_sessions"]
    list_filter = ["hostname", "started_at"]
    search_fields = ["hostname", "=pid"]

    @admin.display(description=_("server process"), ordering="hostname")
    def process(self, server: Server) -> str:
        return truncated(server)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, server: Server) -> str:
        return compact_moment(server.started_at)

    @admin.display(description=_("last heartbeat"), ordering="heartbeat_at")
    def heartbeat(self, server: Server) -> str:
        return compact_moment(server.heartbeat_at)

    @admin.display(description=_("state"))
    def state(self, server: Server) -> str:
        if server.stopped_at is not None:
            # When, here rather than in a column of its own: the list stays narrow.
            return truncated(f"{_('stopped')} {compact_moment(server.stopped_at)}")
        return str(_("alive")) if server.heartbeat_at >= alive_since() else str(_("lost"))

    @admin.display(description=_("live sessions"))
    def live_sessions(self, server: Server) -> int:
        return Session.objects.live().filter(server=server).count()


@admin.register(AuditPrune)
class AuditPruneAdmin(ReadOnlyAdmin):
    list_display = ["when", "ended_before", "sessions", "frames"]

    @admin.display(description=_("when"), ordering="at")
    def when(self, prune: AuditPrune) -> str:
        return compact_moment(prune.at)

    @admin.display(description=_("sessions ended before"), ordering="before")
    def ended_before(self, prune: AuditPrune) -> str:
        return compact_moment(prune.before)

"""Admin: access rules are managed here; session and denial records are read-only for all."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from .audit import store
from .models import AccessRule, AuditPrune, Command, DeniedAttempt, Server, Session, alive_since


class ReadOnly:
    """Audit records: nobody adds, changes or deletes them here, superusers included."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin):  # type: ignore[type-arg]
    """A read-only admin for an audit model."""


@admin.register(AccessRule)
class AccessRuleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "clusters", "namespaces", "pods", "containers", "expires_at", "reason"]
    list_filter = [("expires_at", admin.EmptyFieldListFilter), "groups"]
    search_fields = ["name", "reason", "pods", "namespaces", "users__username", "groups__name"]
    filter_horizontal = ["users", "groups"]
    fieldsets = [
        (None, {"fields": ["name", "reason", "expires_at"]}),
        (_("Who"), {"fields": ["users", "groups"]}),
        (
            _("Where (glob patterns, one per line or comma-separated)"),
            {"fields": ["clusters", "namespaces", "pods", "containers", "commands"]},
        ),
    ]


@admin.register(DeniedAttempt)
class DeniedAttemptAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "cluster", "namespace", "pod", "container", "code", "reason"]
    list_filter = ["code", "cluster", "at"]
    search_fields = ["username", "namespace", "pod", "reason", "client_address"]
    date_hierarchy = "at"


class CommandInline(ReadOnly, admin.TabularInline):  # type: ignore[type-arg]
    """The session's commands, each a link to that moment of the replay."""

    model = Command
    fields = readonly_fields = ("when", "replay_link", "line")
    extra = 0
    can_delete = False
    show_change_link = False

    @admin.display(description=_("at"))
    def when(self, command: Command) -> str:
        return f"{command.offset:.1f} s"

    @admin.display(description=_("command"))
    def replay_link(self, command: Command) -> str:
        index = list(
            Command.objects.filter(session_id=command.session_id).values_list("pk", flat=True)
        ).index(command.pk)
        url = reverse("terminals:session-replay", args=[command.session_id])
        return format_html('<a href="{}?command={}"><code>{}</code></a>', url, index, command.text)


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


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "username", "target", "duration", "exit_code", "state"]
    list_filter = [OutcomeFilter, "username", "cluster", "namespace", "started_at"]
    list_select_related = ["server"]  # is_live reads the server's heartbeat
    search_fields = ["username", "pod", "namespace", "commands__text"]
    date_hierarchy = "started_at"
    inlines = [CommandInline]
    fields = readonly_fields = (
        "id", "username", "target_detail", "command", "client_address", "user_agent",
        "started_at", "ended_at", "state", "end_reason", "exit_code", "end_message",
        "ended_by_username", "server", "traffic", "chain", "links",
    )  # fmt: skip

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Session], search_term: str
    ) -> tuple[QuerySet[Session], bool]:
        results, _duplicates = super().get_search_results(request, queryset, search_term)
        return results.distinct(), False

    @admin.display(description=_("target"))
    def target(self, session: Session) -> str:
        target = f"{session.cluster}/{session.namespace}/{session.pod}"
        return f"{target} [{session.container}]" if session.container else target

    @admin.display(description=_("target"))
    def target_detail(self, session: Session) -> str:
        return self.target(session)

    @admin.display(description=_("duration"))
    def duration(self, session: Session) -> str:
        end = session.ended_at or timezone.now()
        seconds = int((end - session.started_at).total_seconds())
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    @admin.display(description=_("state"))
    def state(self, session: Session) -> str:
        if session.is_live:
            return str(_("live"))
        if session.ended_at is None:
            return str(UNREAPED)
        return session.get_end_reason_display()

    @admin.display(description=_("traffic"))
    def traffic(self, session: Session) -> str:
        return (
            f"in: {session.frames_in} frames, {session.bytes_in} bytes; "
            f"out: {session.frames_out} frames, {session.bytes_out} bytes"
        )

    @admin.display(description=_("hash chain"))
    def chain(self, session: Session) -> str:
        verdict = store.verify_session(session)
        colour = "#1a7f37" if verdict.ok else "#cf222e"
        return format_html('<strong style="color: {}">{}</strong>', colour, str(verdict))

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
    list_display = ["__str__", "started_at", "heartbeat_at", "stopped_at", "state", "live_sessions"]
    list_filter = ["hostname", "started_at"]
    search_fields = ["hostname", "=pid"]

    @admin.display(description=_("state"))
    def state(self, server: Server) -> str:
        if server.stopped_at is not None:
            return str(_("stopped"))
        return str(_("alive")) if server.heartbeat_at >= alive_since() else str(_("lost"))

    @admin.display(description=_("live sessions"))
    def live_sessions(self, server: Server) -> int:
        return Session.objects.live().filter(server=server).count()


@admin.register(AuditPrune)
class AuditPruneAdmin(ReadOnlyAdmin):
    list_display = ["at", "before", "sessions", "frames"]

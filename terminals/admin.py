"""Admin: access rules are managed here; session and denial records are read-only for all."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .models import AccessRule, DeniedAttempt, Session


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Audit records: nobody adds, changes or deletes them here, superusers included."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "username",
        "cluster",
        "namespace",
        "pod",
        "container",
        "exit_code",
        "end_reason",
    ]
    list_filter = ["cluster", "namespace", "end_reason", "started_at"]
    search_fields = ["username", "pod", "namespace"]
    date_hierarchy = "started_at"

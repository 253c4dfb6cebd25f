"""Audit records of terminal sessions."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Session(models.Model):
    """One terminal: who opened it, where, when, and how it ended."""

    class EndReason(models.TextChoices):
        EXIT = "exit", _("process exited")
        CLIENT_CLOSED = "client_closed", _("browser closed")
        IDLE = "idle", _("idle too long")
        MAX_DURATION = "max_duration", _("maximum duration reached")
        ENDED_BY_AUDITOR = "ended_by_auditor", _("ended by an auditor")
        PROTOCOL_ERROR = "protocol_error", _("bad input from the browser")
        UPSTREAM_FAILED = "upstream_failed", _("cluster error")
        AUDIT_UNAVAILABLE = "audit_unavailable", _("audit store unavailable")
        NOT_FOUND = "not_found", _("no such pod or container")
        SERVER_ERROR = "server_error", _("server error")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        on_delete=models.SET_NULL,
        related_name="terminal_sessions",
    )
    # A copy: the record must name the person even after the account is deleted.
    username = models.CharField(_("username"), max_length=150, db_index=True)
    cluster = models.CharField(_("cluster"), max_length=63, db_index=True)
    namespace = models.CharField(_("namespace"), max_length=63, db_index=True)
    pod = models.CharField(_("pod"), max_length=253, db_index=True)
    container = models.CharField(_("container"), max_length=63, blank=True)
    command = models.JSONField(_("command"), default=list, blank=True)
    client_address = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=512, blank=True)
    started_at = models.DateTimeField(_("started"), auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(_("ended"), null=True, blank=True, db_index=True)
    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    end_reason = models.CharField(
        _("end reason"), max_length=32, choices=EndReason.choices, blank=True, db_index=True
    )
    end_message = models.TextField(_("end message"), blank=True)

    class Meta:
        verbose_name = _("terminal session")
        verbose_name_plural = _("terminal sessions")
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["user", "ended_at"], name="terminals_session_live")]

    def __str__(self) -> str:
        target = f"{self.cluster}/{self.namespace}/{self.pod}"
        if self.container:
            target += f"/{self.container}"
        return f"{self.username} on {target} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def is_live(self) -> bool:
        """True until the session has ended."""
        return self.ended_at is None

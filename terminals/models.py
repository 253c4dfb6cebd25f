"""Audit records of terminal sessions."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from fnmatch import fnmatchcase

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .audit.keyring import current_key_id
from .permissions import ExecTarget


def split_patterns(text: str) -> list[str]:
    """Patterns are written one per line or separated by commas or spaces."""
    return [part for part in text.replace(",", " ").split() if part]


def matches_any(value: str, patterns: Iterable[str]) -> bool:
    """True if ``value`` matches one of the glob ``patterns`` (case-sensitive, as Kubernetes)."""
    return any(fnmatchcase(value, pattern) for pattern in patterns)


class AccessRule(models.Model):
    """Grants its users and groups terminals on the pods its patterns match; rules only grant."""

    name = models.CharField(_("name"), max_length=200, help_text=_("What the rule is for."))
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, verbose_name=_("users"), blank=True, related_name="+"
    )
    groups = models.ManyToManyField(Group, verbose_name=_("groups"), blank=True, related_name="+")
    clusters = models.TextField(
        _("clusters"), default="*", help_text=_("Glob patterns, e.g. prod-* or *.")
    )
    namespaces = models.TextField(_("namespaces"), default="*", help_text=_("Glob patterns."))
    pods = models.TextField(_("pods"), default="*", help_text=_("Glob patterns, e.g. web-*."))
    containers = models.TextField(
        _("containers"),
        default="*",
        help_text=_("Glob patterns. Opening a pod's default container needs *."),
    )
    commands = models.TextField(
        _("commands"),
        blank=True,
        help_text=_(
            "Programs that may run instead of a shell, e.g. /usr/bin/psql. Empty: only the "
            "configured shells."
        ),
    )
    expires_at = models.DateTimeField(
        _("expires"), null=True, blank=True, db_index=True, help_text=_("Empty: never.")
    )
    reason = models.CharField(
        _("reason or ticket"), max_length=200, blank=True, help_text=_("E.g. OPS-1234.")
    )
    # Step-up, as sudo's timestamp: terminals.mfa asks for the password or a code again when
    # the login session's last authentication is older than this.
    fresh_auth_minutes = models.PositiveIntegerField(
        _("fresh authentication (minutes)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_(
            "Before a shell opens on these targets, the user must have authenticated (password "
            "or second factor) within this many minutes, or is asked to again. Empty: no step-up."
            " Where several rules grant a target, the least demanding applies."
        ),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("access rule")
        verbose_name_plural = _("access rules")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_expired(self) -> bool:
        """True once the expiry has passed."""
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def allows(self, target: ExecTarget, shells: Iterable[str]) -> bool:
        """True if this rule grants ``target`` (expiry and subjects are checked by the caller)."""
        if not (
            matches_any(target.cluster, split_patterns(self.clusters))
            and matches_any(target.namespace, split_patterns(self.namespaces))
            and matches_any(target.pod, split_patterns(self.pods))
        ):
            return False
        containers = split_patterns(self.containers)
        # "" means "the pod's default container", unknown until the cluster is asked.
        if target.container and not matches_any(target.container, containers):
            return False
        if not target.container and "*" not in containers:
            return False
        if not target.command:
            return True
        allowed = [*shells, *split_patterns(self.commands)]
        return target.command in allowed or target.command in {
            c.rsplit("/", 1)[-1] for c in allowed
        }


class DeniedAttempt(models.Model):
    """A refused attempt to open a terminal: who, where, when, from where and why."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    username = models.CharField(_("username"), max_length=150, blank=True, db_index=True)
    cluster = models.CharField(_("cluster"), max_length=253, blank=True)
    namespace = models.CharField(_("namespace"), max_length=253, blank=True, db_index=True)
    pod = models.CharField(_("pod"), max_length=253, blank=True, db_index=True)
    container = models.CharField(_("container"), max_length=253, blank=True)
    command = models.CharField(_("command"), max_length=255, blank=True)
    client_address = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=512, blank=True)
    at = models.DateTimeField(_("when"), auto_now_add=True, db_index=True)
    code = models.CharField(_("code"), max_length=32, db_index=True)
    reason = models.TextField(_("why"))

    class Meta:
        verbose_name = _("denied attempt")
        verbose_name_plural = _("denied attempts")
        ordering = ["-at"]

    def __str__(self) -> str:
        who = self.username or _("anonymous")
        where = f"{self.cluster}/{self.namespace}/{self.pod}"
        return f"{who} refused on {where} at {self.at:%Y-%m-%d %H:%M:%S}"


class Server(models.Model):
    """A serving process (a Daphne): registered when it starts serving, alive while it heartbeats.

    Every live session names its server, so the sessions of a server that stopped heartbeating
    (killed, out of memory, its node lost) are ended by the reaper of any other process.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostname = models.CharField(_("host name"), max_length=253)
    pid = models.IntegerField(_("process id"))
    started_at = models.DateTimeField(_("started"), auto_now_add=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(_("stopped"), null=True, blank=True)

    class Meta:
        verbose_name = _("server process")
        verbose_name_plural = _("server processes")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.hostname} pid {self.pid}"


def alive_since() -> dt.datetime:
    """Servers whose last heartbeat is older than this are lost."""
    from .conf import get_config

    return timezone.now() - dt.timedelta(seconds=get_config()["SERVER_TIMEOUT"])


class SessionQuerySet(models.QuerySet["Session"]):
    def live(self) -> SessionQuerySet:
        """Sessions not ended whose server is alive: what counts against the per-user limit.

        A session of a lost server is not live even before the reaper has ended its record.
        Records from before servers were registered count while younger than MAX_DURATION.
        """
        from .conf import get_config

        oldest = timezone.now() - dt.timedelta(seconds=get_config()["MAX_DURATION"])
        return self.filter(ended_at__isnull=True).filter(
            models.Q(server__stopped_at__isnull=True, server__heartbeat_at__gte=alive_since())
            | models.Q(server__isnull=True, started_at__gte=oldest)
        )


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
        FORBIDDEN = "forbidden", _("not permitted")
        SERVER_ERROR = "server_error", _("server error")
        SERVER_STOPPED = "server_stopped", _("server stopped")
        SERVER_LOST = "server_lost", _("server lost")
        BROWSER_GONE = "browser_gone", _("browser gone (not resumed)")

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
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("ended by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    ended_by_username = models.CharField(_("ended by (username)"), max_length=150, blank=True)
    bytes_in = models.BigIntegerField(_("bytes in"), default=0)
    bytes_out = models.BigIntegerField(_("bytes out"), default=0)
    frames_in = models.BigIntegerField(_("frames in"), default=0)
    frames_out = models.BigIntegerField(_("frames out"), default=0)
    # The digest of the last frame: the end of the hash chain (see terminals.audit.chain).
    head_digest = models.CharField(_("head digest"), max_length=64, blank=True)
    # The audit key of the chain (terminals.audit.keyring); "" for chains from before audit keys.
    key_id = models.CharField(_("audit key id"), max_length=16, blank=True, default=current_key_id)
    # The session's place in the ledger, and its seal at the end (terminals.audit.ledger).
    ledger_seq = models.BigIntegerField(_("ledger number"), null=True, blank=True)
    sealed_frames = models.BigIntegerField(_("frames when sealed"), null=True, blank=True)
    commands_digest = models.CharField(_("commands digest"), max_length=64, blank=True)
    seal = models.CharField(_("seal"), max_length=100, blank=True)
    server = models.ForeignKey(
        Server,
        verbose_name=_("server process"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sessions",
    )
    # Resuming (terminals.session.resume): the SHA-256 of the current resume token (the token
    # itself is only ever in the browser), and since when no browser is attached.
    resume_digest = models.CharField(_("resume token digest"), max_length=64, blank=True)
    # The token the latest was issued for: still good until the page uses the latest (its
    # socket may have dropped before the latest reached it).
    resume_previous_digest = models.CharField(
        _("previous resume token digest"), max_length=64, blank=True
    )
    detached_at = models.DateTimeField(_("detached since"), null=True, blank=True)

    objects = SessionQuerySet.as_manager()

    class Meta:
        verbose_name = _("terminal session")
        verbose_name_plural = _("terminal sessions")
        ordering = ["-started_at"]
        permissions = [
            ("watch_session", _("Can watch live terminal sessions")),
            ("end_session", _("Can end other people's terminal sessions")),
        ]
        indexes = [models.Index(fields=["user", "ended_at"], name="terminals_session_live")]

    def __str__(self) -> str:
        target = f"{self.cluster}/{self.namespace}/{self.pod}"
        if self.container:
            target += f"/{self.container}"
        return f"{self.username} on {target} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def is_live(self) -> bool:
        """True until the session has ended, unless its server was lost."""
        if self.ended_at is not None:
            return False
        server = self.server
        if server is None:
            return True
        return server.stopped_at is None and server.heartbeat_at >= alive_since()


class Resume(models.Model):
    """A browser that took a live session over again after its socket went away."""

    session = models.ForeignKey(
        Session, verbose_name=_("session"), on_delete=models.CASCADE, related_name="resumes"
    )
    at = models.DateTimeField(_("when"), auto_now_add=True)
    client_address = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=512, blank=True)
    # The output byte the browser said it had, and the process that took the socket.
    offset = models.BigIntegerField(_("output offset"))
    server = models.ForeignKey(
        Server,
        verbose_name=_("server process"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = _("resume")
        verbose_name_plural = _("resumes")
        ordering = ["at"]

    def __str__(self) -> str:
        return f"{self.session_id} resumed at {self.at:%Y-%m-%d %H:%M:%S}"


class Frame(models.Model):
    """One frame of a session, committed before it was delivered; frames form a hash chain."""

    class Direction(models.TextChoices):
        STDIN = "i", _("stdin")
        STDOUT = "o", _("stdout")
        RESIZE = "r", _("resize")

    # No index of its own: the unique (session, seq) serves every lookup by session, and one
    # index fewer is one write fewer for every frame stored.
    session = models.ForeignKey(
        Session,
        verbose_name=_("session"),
        on_delete=models.CASCADE,
        related_name="frames",
        db_index=False,
    )
    seq = models.BigIntegerField(_("sequence number"))
    # Microseconds since the session started, from a monotonic clock.
    offset_us = models.BigIntegerField(_("time offset (µs)"))
    direction = models.CharField(_("direction"), max_length=1, choices=Direction.choices)
    data = models.BinaryField(_("data"))
    digest = models.CharField(_("digest"), max_length=64)

    class Meta:
        verbose_name = _("frame")
        verbose_name_plural = _("frames")
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="terminals_frame_session_seq")
        ]

    def __str__(self) -> str:
        return f"{self.session_id} #{self.seq} {self.direction} {len(self.data)} bytes"


class Command(models.Model):
    """A command line as the user saw it on the screen when pressing Enter."""

    session = models.ForeignKey(
        Session, verbose_name=_("session"), on_delete=models.CASCADE, related_name="commands"
    )
    offset_us = models.BigIntegerField(_("time offset (µs)"))
    line = models.TextField(_("screen line"), help_text=_("The whole line, prompt included."))
    text = models.TextField(
        _("command"), db_index=True, help_text=_("The line without its prompt.")
    )
    # What the keyboard sent, through the line editing the shell would do: a person can hide
    # what the screen shows (stty -echo) or draw a line nobody typed, but not both at once.
    typed = models.TextField(
        _("as typed"),
        blank=True,
        db_index=True,
        help_text=_("The line rebuilt from the input (line editing applied)."),
    )
    echoed = models.BooleanField(
        _("echoed"), default=True, help_text=_("False when the input was not shown on screen.")
    )
    mismatch = models.BooleanField(
        _("shown and typed differ"),
        default=False,
        db_index=True,
        help_text=_("The screen line and the typed line disagree: look at the frames."),
    )

    class Kind(models.TextChoices):
        """How the typed line is known (``terminals.audit.lineedit.Typed``)."""

        EXACT = "exact", _("rebuilt from the keys")
        COMPLETED = "completed", _("tab completion: the screen has the rest")
        KEYS = "keys", _("keys not followed (history, search…): their transcript")
        INPUT = "input", _("from the input only: the screen was not read")
        FULLSCREEN = "fullscreen", _("entered in a full-screen program")

    kind = models.CharField(
        _("typed line"), max_length=10, choices=Kind.choices, default=Kind.EXACT, db_index=True
    )

    class Meta:
        verbose_name = _("command")
        verbose_name_plural = _("commands")
        ordering = ["session", "offset_us", "pk"]

    def __str__(self) -> str:
        return self.text

    @property
    def offset(self) -> float:
        """Seconds since the session started."""
        return self.offset_us / 1_000_000


class AuditPrune(models.Model):
    """What ``manage.py audit prune`` removed, and when."""

    at = models.DateTimeField(_("when"), auto_now_add=True)
    before = models.DateTimeField(_("sessions ended before"))
    sessions = models.BigIntegerField(_("sessions removed"))
    frames = models.BigIntegerField(_("frames removed"))
    session_ids = models.JSONField(_("session ids"), default=list)
    # Keyed, so that verification accepts exactly the sessions it removed (terminals.audit.ledger).
    seal = models.CharField(_("seal"), max_length=100, blank=True)

    class Meta:
        verbose_name = _("audit prune")
        verbose_name_plural = _("audit prunes")
        ordering = ["-at"]

    def __str__(self) -> str:
        before, at = f"{self.before:%Y-%m-%d}", f"{self.at:%Y-%m-%d}"
        return f"{self.sessions} sessions ended before {before}, removed {at}"


class LedgerEntry(models.Model):
    """A session's place in the audit ledger, keyed to the entry before (terminals.audit.ledger).

    Entries are numbered in the order sessions open and outlive their sessions: a session
    removed from the database leaves its entry behind, or, removed with it, a gap in the
    numbers. Entry 0 is no session: its row is locked to number the next one.
    """

    seq = models.BigIntegerField(_("number"), primary_key=True)
    # Not a foreign key: the entry must outlive its session.
    session_id = models.UUIDField(_("session"), unique=True, null=True, blank=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    username = models.CharField(_("username"), max_length=150, blank=True)
    target = models.CharField(_("target"), max_length=400, blank=True)
    key_id = models.CharField(_("audit key id"), max_length=16, blank=True)
    previous = models.CharField(_("previous link"), max_length=64, blank=True)
    link = models.CharField(_("link"), max_length=64, blank=True)

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.username} on {self.target}"


#: Terminal font sizes a user may choose, in CSS pixels.
MIN_FONT_SIZE, DEFAULT_FONT_SIZE, MAX_FONT_SIZE = 10, 14, 24


class TerminalPreference(models.Model):
    """How one user's terminals look: font size and theme (``terminals.preferences``)."""

    class Theme(models.TextChoices):
        DARK = "dark", _("dark")
        LIGHT = "light", _("light")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="terminal_preference",
        verbose_name=_("user"),
    )
    font_size = models.PositiveSmallIntegerField(
        _("font size"),
        default=DEFAULT_FONT_SIZE,
        validators=[MinValueValidator(MIN_FONT_SIZE), MaxValueValidator(MAX_FONT_SIZE)],
        help_text=_("CSS pixels, 10 to 24."),
    )
    theme = models.CharField(_("theme"), max_length=10, choices=Theme.choices, default=Theme.DARK)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("terminal preference")
        verbose_name_plural = _("terminal preferences")
        # The bounds hold whoever writes the row, not only the endpoint's validation.
        constraints = [
            models.CheckConstraint(
                condition=models.Q(font_size__gte=MIN_FONT_SIZE, font_size__lte=MAX_FONT_SIZE),
                name="terminals_preference_font_size_range",
            ),
            models.CheckConstraint(
                condition=models.Q(theme__in=["dark", "light"]),
                name="terminals_preference_theme_known",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.font_size} px, {self.theme}"

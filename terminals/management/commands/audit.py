"""``manage.py audit verify|export|prune|close-stale``: check, export and trim the audit trail."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ... import servers
from ...audit import store
from ...models import Session


class Command(BaseCommand):
    help = (
        "Verify session hash chains, export a session as asciicast, prune old sessions, or end "
        "the sessions of lost server processes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        verify = actions.add_parser("verify", help="Check hash chains; exit 1 if one is broken.")
        verify.add_argument("sessions", nargs="*", help="Session ids (default: every session).")
        export = actions.add_parser("export", help="Write a session as asciicast v2.")
        export.add_argument("session", help="A session id.")
        export.add_argument("-o", "--output", help="A file to write (default: standard output).")
        prune = actions.add_parser("prune", help="Delete sessions that ended before a date.")
        prune.add_argument("--before", required=True, help="YYYY-MM-DD or an ISO date-time.")
        actions.add_parser(
            "close-stale",
            help="End the sessions of server processes that stopped heartbeating (for "
            "SERVER_TIMEOUT) or stopped, as every server's reaper does on its own.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action'].replace('-', '_')}")(options)

    def _verify(self, options: dict[str, Any]) -> None:
        sessions = (
            [self._session(value) for value in options["sessions"]]
            if options["sessions"]
            else Session.objects.order_by("started_at").iterator()
        )
        broken = 0
        for session in sessions:
            verdict = store.verify_session(session)
            if verdict.ok:
                self.stdout.write(f"{session.pk}: {verdict}")
            else:
                broken += 1
                self.stdout.write(
                    self.style.ERROR(
                        f"{session.pk}: BROKEN at frame {verdict.first_bad_seq}: {verdict.problem}"
                    )
                )
        if broken:
            raise CommandError(f"{broken} session(s) failed verification.", returncode=1)

    def _export(self, options: dict[str, Any]) -> None:
        session = self._session(options["session"])
        lines = store.export_cast(session)
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as file:
                file.writelines(lines)
            self.stderr.write(f"Wrote {options['output']}.")
        else:
            sys.stdout.writelines(lines)

    def _prune(self, options: dict[str, Any]) -> None:
        before = _moment(options["before"])
        live = Session.objects.filter(ended_at__isnull=True, started_at__lt=before).count()
        record = store.prune(before)
        self.stdout.write(
            f"Removed {record.sessions} session(s) and {record.frames} frame(s) that ended "
            f"before {before:%Y-%m-%d %H:%M:%S %Z}; recorded as audit prune #{record.pk}."
        )
        if live:
            self.stdout.write(f"Kept {live} session(s) that have not ended.")

    def _close_stale(self, options: dict[str, Any]) -> None:
        # The reaper that every serving process runs, here on demand (no health wait: the
        # operator asks for it).
        count = servers.reap()
        self.stdout.write(f"Ended {count} session(s) of lost server processes.")

    def _session(self, value: str) -> Session:
        try:
            return Session.objects.get(pk=uuid.UUID(value))
        except (ValueError, Session.DoesNotExist):
            raise CommandError(f"There is no session {value!r}.") from None


def _moment(value: str) -> dt.datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO date-time.")
        moment = dt.datetime.combine(day, dt.time())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment

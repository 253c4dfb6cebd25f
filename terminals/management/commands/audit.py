"""``manage.py audit verify|export|prune|close-stale``: check, export and trim the audit trail.

``verify`` checks each session's frames, its place in the ledger and its seal, and, when it
checks every session, the ledger as a whole; each finding is printed with its kind in brackets
(``[frame changed]``, ``[session cut short]``, ``[session removed]``, ...). The ledger's newest
end can only be checked against a checkpoint kept off the host (``--checkpoint``).
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ... import servers
from ...audit import ledger, store
from ...models import Session


class Command(BaseCommand):
    help = (
        "Verify session hash chains, export a session as asciicast, prune old sessions, or end "
        "the sessions of lost server processes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        verify = actions.add_parser(
            "verify",
            help="Check sessions' chains and seals and the ledger; exit 1 if anything is wrong.",
        )
        verify.add_argument(
            "sessions", nargs="*", help="Session ids (default: every session, and the ledger)."
        )
        verify.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="NUMBER:LINK",
            help="A checkpoint from the logs ('audit checkpoint NUMBER:LINK'): the ledger must "
            "still hold that entry. Repeatable.",
        )
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
        try:
            checkpoints = [ledger.parse_checkpoint(text) for text in options["checkpoint"]]
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        everything = not options["sessions"]
        context = ledger.Context.load(check_links=not everything)
        broken = 0
        if everything:
            sessions: Any = Session.objects.order_by("started_at").iterator()
        else:
            sessions, gone = self._sessions(options["sessions"])
            broken += gone
        for session in sessions:
            report = ledger.check_session(session, context)
            if report.ok:
                self.stdout.write(f"{session.pk}: {report}")
                continue
            broken += 1
            for problem in report.problems:
                self.stdout.write(self.style.ERROR(f"{session.pk}: BROKEN {problem}"))
        ledger_problems = 0
        if everything or checkpoints:
            whole = ledger.check_ledger(context.keys, checkpoints)
            ledger_problems = len(whole.problems)
            for problem in whole.problems:
                self.stdout.write(self.style.ERROR(f"ledger: BROKEN {problem}"))
            if everything:
                self.stdout.write(f"ledger: {whole}")
                self.stdout.write(
                    "The newest end of the ledger can only be checked against a checkpoint kept "
                    "off this host: compare its head with the last 'audit checkpoint' in the "
                    "shipped logs, or pass it as --checkpoint NUMBER:LINK."
                )
        if broken or ledger_problems:
            message = f"{broken} session(s) failed verification."
            if ledger_problems:
                message += f" The ledger has {ledger_problems} problem(s)."
            raise CommandError(message, returncode=1)

    def _sessions(self, values: list[str]) -> tuple[list[Session], int]:
        """The sessions named, and how many of them are gone (each reported)."""
        sessions, gone = [], 0
        for value in values:
            try:
                session_id = uuid.UUID(value)
            except ValueError:
                raise CommandError(f"There is no session {value!r}.") from None
            session = Session.objects.filter(pk=session_id).first()
            if session is not None:
                sessions.append(session)
                continue
            removed = ledger.removed_session(session_id)
            if removed is None:
                raise CommandError(f"There is no session {value!r}.")
            if removed == "pruned":
                self.stdout.write(f"{session_id}: pruned (a sealed audit prune removed it)")
            else:
                gone += 1
                self.stdout.write(self.style.ERROR(f"{session_id}: BROKEN {removed}"))
        return sessions, gone

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

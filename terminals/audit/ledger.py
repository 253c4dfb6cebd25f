"""The audit ledger and the session seals, in the database: numbering, sealing, verifying.

Three keyed structures (HMAC-SHA256 under the audit key, ``keyring.py``) make the trail tamper-
evident to someone who can write the database but does not hold the key:

- **frames** form a chain per session (``chain.py``);
- **the ledger** numbers every session as it opens (:func:`enroll`, in the transaction that
  creates it): entry *n* holds the session's id, start, user and target, and a link keyed over
  those and entry *n - 1*'s link. Entries outlive their sessions, so a session deleted from the
  database leaves its entry behind, or, deleted with it, a gap in the numbers. Appends are
  serialised by a row lock on entry 0 (held for the few milliseconds of the opening
  transaction) and the numbers are a primary key, so concurrent processes cannot fork it;
- **the seal** of a session, written in the transaction that ends it (:func:`seal_session`),
  covers its record (who, where, when, how it ended, the byte and frame counts, its ledger
  number), its final frame count, its head digest and a digest of its commands.

``manage.py audit prune`` deletes sessions; its ``AuditPrune`` record lists them and is sealed,
so verification accepts exactly those gaps (``store.prune``).

What the database cannot show is its own newest part cut off: deleting the last sessions with
their ledger entries leaves a shorter ledger that verifies. Every opening and every end therefore
logs a checkpoint, ``audit checkpoint <number>:<link>`` (the newest entry); shipped off the host
with the logs, the last one anchors the ledger: ``manage.py audit verify --checkpoint N:LINK``
reports a ledger that no longer holds that entry, or holds another.

Verification (:func:`check_session`, :func:`check_ledger`) names each kind of tampering
(:class:`~.chain.Kind`). Sessions recorded before audit keys (``key_id`` "") have unkeyed chains,
no ledger entry and, if they ended before, no seal; they are reported as such, not as tampered,
provided they started before the ledger's first entry.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Max

from ..models import AuditPrune, Command, Frame, LedgerEntry, Session
from . import seal as seals
from .chain import Kind, verify
from .keyring import AuditKey, current_key, known_keys
from .store import chain_frames

logger = logging.getLogger(__name__)

_CHUNK = 500  # ledger entries whose sessions are looked up per query


# Writing: in the transactions of records.open_session and records.close_session.


def enroll(session: Session) -> LedgerEntry:
    """Number a new session in the ledger; call in the transaction that creates it."""
    key = current_key()
    _lock()
    last = LedgerEntry.objects.filter(seq__gt=0).order_by("-seq").values_list("seq", "link").first()
    seq, previous = (last[0] + 1, last[1]) if last else (1, "")
    # As stored: what verification will read back.
    row = (
        Session.objects.filter(pk=session.pk)
        .values("started_at", "username", "cluster", "namespace", "pod")
        .get()
    )
    target = seals.target_of(row["cluster"], row["namespace"], row["pod"])
    entry = LedgerEntry.objects.create(
        seq=seq,
        session_id=session.pk,
        started_at=row["started_at"],
        username=row["username"],
        target=target,
        key_id=key.id,
        previous=previous,
        link=seals.ledger_link(
            key, seq, previous, session.pk, row["started_at"], row["username"], target
        ),
    )
    Session.objects.filter(pk=session.pk).update(ledger_seq=seq)
    session.ledger_seq = seq
    transaction.on_commit(lambda: _log_checkpoint(entry.seq, entry.link, f"{session.pk} opened"))
    return entry


def _lock() -> None:
    """Hold entry 0's row until the transaction ends (created the first time)."""
    locked = LedgerEntry.objects.select_for_update().filter(seq=0).values_list("seq", flat=True)
    if not list(locked):
        # Tolerates a concurrent creation (get_or_create retries the read in a savepoint).
        LedgerEntry.objects.get_or_create(seq=0)
        list(locked.all())  # a new query: the first one's (empty) result is cached


def seal_session(session_id: uuid.UUID) -> str:
    """Seal an ended session; call in the transaction that ends it, holding its row.

    The final frame count is the highest stored sequence number plus one: the chain says
    whether any frame below it is missing.
    """
    key = current_key()
    last = Frame.objects.filter(session_id=session_id).aggregate(last=Max("seq"))["last"]
    Session.objects.filter(pk=session_id).update(
        sealed_frames=0 if last is None else last + 1,
        commands_digest=commands_digest(session_id),
    )
    fields = Session.objects.filter(pk=session_id).values(*seals.SESSION_FIELDS).get()
    value = seals.session_seal(key, session_id, fields)
    Session.objects.filter(pk=session_id).update(seal=value)
    head = LedgerEntry.objects.filter(seq__gt=0).order_by("-seq").values_list("seq", "link").first()
    if head is not None:
        why = f"{session_id} sealed ({fields['sealed_frames']} frames)"
        transaction.on_commit(lambda: _log_checkpoint(head[0], head[1], why))
    return value


def commands_digest(session_id: uuid.UUID) -> str:
    """The digest of a session's stored commands, in order."""
    rows = (
        Command.objects.filter(session_id=session_id)
        .order_by("offset_us", "pk")
        .values_list(*seals.COMMAND_FIELDS)
    )
    return seals.commands_digest(rows.iterator(chunk_size=_CHUNK))


def _log_checkpoint(seq: int, link: str, why: str) -> None:
    # The newest entry, for the logs shipped off the host: `audit verify --checkpoint SEQ:LINK`.
    logger.info("audit checkpoint %d:%s (session %s)", seq, link, why)


# Verifying.


@dataclass(frozen=True)
class Problem:
    """One finding, of one kind; ``seq`` is the first bad frame where there is one."""

    kind: Kind
    message: str
    seq: int | None = None

    def __str__(self) -> str:
        where = f"at frame {self.seq}: " if self.seq is not None else ""
        return f"{where}{self.message} [{self.kind}]"


@dataclass
class Report:
    """What verification found about one session."""

    session_id: uuid.UUID
    frames: int = 0
    state: str = ""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if nothing was found."""
        return not self.problems

    def add(self, kind: Kind, message: str, seq: int | None = None) -> None:
        """Record a finding."""
        self.problems.append(Problem(kind, message, seq))

    def __str__(self) -> str:
        if self.ok:
            return f"intact ({self.frames} frames, {self.state})"
        return "; ".join(str(problem) for problem in self.problems)


@dataclass
class Context:
    """What checking sessions needs besides the session: the keys and the ledger's start."""

    keys: dict[str, AuditKey]
    ledger_start: dt.datetime | None
    #: False when :func:`check_ledger` checks every entry's link anyway.
    check_links: bool = True

    @classmethod
    def load(cls, *, check_links: bool = True) -> Context:
        """The current keys and ledger."""
        start = (
            LedgerEntry.objects.filter(seq__gt=0)
            .order_by("seq")
            .values_list("started_at", flat=True)
            .first()
        )
        return cls(known_keys(), start, check_links)


def _unknown(key_id: str) -> str:
    return f"key {key_id}, which is neither AUDIT_KEY nor one of AUDIT_OLD_KEYS"


def check_session(session: Session, context: Context | None = None) -> Report:
    """Verify one session: its frames, its place in the ledger and its seal."""
    context = context or Context.load()
    report = Report(session.pk)
    key = context.keys.get(session.key_id)
    end = None  # the length the stored frames claim: the highest seq plus one
    chain_problem = None
    if key is None:
        report.add(
            Kind.WRONG_KEY,
            f"its frames were keyed with {_unknown(session.key_id)}: they cannot be checked",
        )
        stored = Frame.objects.filter(session=session).aggregate(last=Max("seq"))["last"]
        end = 0 if stored is None else stored + 1
    else:
        verdict = verify(session.pk, chain_frames(session.pk), session.head_digest, key)
        report.frames, end = verdict.frames, verdict.end
        if not verdict.ok and verdict.kind is not None:
            chain_problem = Problem(verdict.kind, verdict.problem, verdict.first_bad_seq)
    _check_entry(session, context, report)
    _check_seal(session, context, report, key, end, chain_problem)
    return report


def _check_entry(session: Session, context: Context, report: Report) -> None:
    entry = LedgerEntry.objects.filter(session_id=session.pk).first()
    if not session.key_id:
        if entry is not None:
            report.add(
                Kind.METADATA_CHANGED,
                f"it claims to be recorded before audit keys, but ledger entry #{entry.seq} "
                f"has it keyed with key {entry.key_id}: its record was rewritten",
            )
        elif context.ledger_start is not None and session.started_at >= context.ledger_start:
            report.add(
                Kind.NOT_IN_LEDGER,
                "it claims to be recorded before audit keys but started after the ledger "
                "began, and it is not in the ledger: it was inserted around the app",
            )
        return
    if entry is None:
        numbered = LedgerEntry.objects.filter(seq=session.ledger_seq or 0, seq__gt=0).first()
        if numbered is not None:
            report.add(
                Kind.NOT_IN_LEDGER,
                f"its ledger entry #{numbered.seq} is session {numbered.session_id}'s: it was "
                "inserted around the app (a copy?)",
            )
        elif session.ledger_seq is not None:
            report.add(Kind.LEDGER_CHANGED, f"its ledger entry #{session.ledger_seq} is gone")
        else:
            report.add(
                Kind.NOT_IN_LEDGER,
                "it is not in the ledger: it was inserted around the app",
            )
        return
    mine = {
        "ledger number": session.ledger_seq,
        "user": session.username,
        "target": seals.target_of(session.cluster, session.namespace, session.pod),
        "start": seals.moment(session.started_at),
        "key": session.key_id,
    }
    theirs = {
        "ledger number": entry.seq,
        "user": entry.username,
        "target": entry.target,
        "start": seals.moment(entry.started_at),
        "key": entry.key_id,
    }
    changed = [
        f"{name} {theirs[name]} → {mine[name]}" for name in mine if mine[name] != theirs[name]
    ]
    if changed:
        report.add(
            Kind.METADATA_CHANGED,
            f"its record differs from its ledger entry #{entry.seq}: {', '.join(changed)}",
        )
    if context.check_links:
        problem = _entry_problem(entry, context.keys)
        if problem is not None:
            report.problems.append(problem)


def _check_seal(
    session: Session,
    context: Context,
    report: Report,
    key: AuditKey | None,
    end: int | None,
    chain_problem: Problem | None,
) -> None:
    sealed = session.sealed_frames
    if chain_problem is not None:
        if chain_problem.kind == Kind.CUT_SHORT and sealed is not None and end is not None:
            if end < sealed:
                chain_problem = _cut_short(end, sealed, report.frames)
            else:  # every sealed frame is there: the head digest itself was changed
                chain_problem = Problem(
                    Kind.METADATA_CHANGED,
                    "its head digest is not its last frame's: the head was changed",
                )
        report.problems.insert(0, chain_problem)
    elif sealed is not None and end is not None and end < sealed:
        report.problems.insert(0, _cut_short(end, sealed, report.frames))
    if sealed is not None and end is not None and end > sealed:
        report.add(
            Kind.FRAME_INSERTED,
            f"frames {sealed} to {end - 1} were added after the session was sealed",
            sealed,
        )
    if session.ended_at is None:
        report.state = "live: sealed when it ends"
        if session.seal:
            report.add(Kind.METADATA_CHANGED, "it is sealed but has no end: its end was removed")
        return
    if not session.seal:
        if key is not None and not key.keyed:
            report.state = "recorded before audit keys: unkeyed, not sealed"
        else:
            why = "its end was written around the app, or its seal was removed"
            if session.end_reason == Session.EndReason.AUDIT_UNAVAILABLE:
                why = (
                    "it ended as the audit store failed (which may have kept the seal out), " + why
                )
            report.add(Kind.SEAL_MISSING, f"it ended without a seal: {why}")
        return
    seal_key_id = seals.key_id_of(session.seal)
    seal_key = context.keys.get(seal_key_id)
    if seal_key is None or not seal_key.keyed:
        report.add(Kind.WRONG_KEY, f"it was sealed with {_unknown(seal_key_id)}")
        return
    fields = _fields(session, seals.SESSION_FIELDS)
    if seals.session_seal(seal_key, session.pk, fields) != session.seal:
        report.add(
            Kind.METADATA_CHANGED,
            "its record does not match its seal: who, where, when, how it ended, its counts, "
            "its head digest or its ledger number were changed",
        )
    if commands_digest(session.pk) != session.commands_digest:
        report.add(
            Kind.COMMANDS_CHANGED,
            "its commands are not those sealed: commands were changed, added or removed",
        )
    report.state = "sealed" if key is not None and key.keyed else "sealed, unkeyed frames"


def _cut_short(end: int, sealed: int, stored: int) -> Problem:
    return Problem(
        Kind.CUT_SHORT,
        f"it was cut short: frames {end} to {sealed - 1} are missing at the end "
        f"({sealed} sealed, {stored} stored)",
        end,
    )


def _entry_problem(entry: LedgerEntry, keys: dict[str, AuditKey]) -> Problem | None:
    """What is wrong with an entry's own link, if anything."""
    key = keys.get(entry.key_id)
    if key is None or not key.keyed:
        return Problem(
            Kind.WRONG_KEY, f"ledger entry #{entry.seq} was made with {_unknown(entry.key_id)}"
        )
    expected = seals.ledger_link(
        key,
        entry.seq,
        entry.previous,
        entry.session_id or "",
        entry.started_at,
        entry.username,
        entry.target,
    )
    if expected != entry.link:
        return Problem(
            Kind.LEDGER_CHANGED,
            f"ledger entry #{entry.seq} does not match its link: it was changed",
        )
    return None


@dataclass
class LedgerReport:
    """What verification found about the ledger as a whole."""

    entries: int = 0
    pruned: int = 0
    head: tuple[int, str] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if nothing was found."""
        return not self.problems

    def __str__(self) -> str:
        if self.head is None:
            return "empty"
        seq, link = self.head
        return (
            f"{self.entries} entries ({self.pruned} pruned sessions among them), head {seq}:{link}"
        )


def check_ledger(
    keys: dict[str, AuditKey] | None = None, checkpoints: Iterable[tuple[int, str]] = ()
) -> LedgerReport:
    """Verify the ledger: every number present, every link keyed and chained, every session
    there or pruned by a sealed prune record; and the ``checkpoints`` (number, link) found in
    logs kept elsewhere still in it."""
    keys = known_keys() if keys is None else keys
    report = LedgerReport()
    pruned = _pruned(keys, report)
    expected, previous = 1, ""
    for chunk in _chunks(LedgerEntry.objects.filter(seq__gt=0).order_by("seq").iterator(_CHUNK)):
        ids = [entry.session_id for entry in chunk if entry.session_id is not None]
        present = set(Session.objects.filter(pk__in=ids).values_list("pk", flat=True))
        for entry in chunk:
            if entry.seq != expected:
                report.problems.append(_gap(expected, entry.seq - 1))
            elif entry.previous != previous:
                report.problems.append(
                    Problem(
                        Kind.LEDGER_CHANGED,
                        f"ledger entry #{entry.seq} does not follow entry #{entry.seq - 1}",
                    )
                )
            problem = _entry_problem(entry, keys)
            if problem is not None:
                report.problems.append(problem)
            if entry.session_id not in present:
                if str(entry.session_id) in pruned:
                    report.pruned += 1
                else:
                    report.problems.append(
                        Problem(
                            Kind.SESSION_REMOVED,
                            f"session {entry.session_id} (ledger entry #{entry.seq}: "
                            f"{entry.username} on {entry.target}, started "
                            f"{seals.moment(entry.started_at)}) is gone",
                        )
                    )
            report.entries += 1
            report.head = (entry.seq, entry.link)
            expected, previous = entry.seq + 1, entry.link
    for seq, link in checkpoints:
        problem = _checkpoint_problem(seq, link, report.head)
        if problem is not None:
            report.problems.append(problem)
    return report


def _chunks(entries: Iterator[LedgerEntry]) -> Iterator[list[LedgerEntry]]:
    chunk: list[LedgerEntry] = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _gap(first: int, last: int) -> Problem:
    numbers = f"#{first}" if first == last else f"#{first} to #{last}"
    count = last - first + 1
    return Problem(
        Kind.SESSION_REMOVED,
        f"ledger entries {numbers} are missing: {count} session(s) were removed with their entries",
    )


def _pruned(keys: dict[str, AuditKey], report: LedgerReport) -> set[str]:
    """The ids of the sessions removed by sealed prune records (the others do not count)."""
    pruned: set[str] = set()
    for record in AuditPrune.objects.order_by("pk"):
        if not record.seal:
            continue  # from before audit keys: it cannot have removed a session of the ledger
        key = keys.get(seals.key_id_of(record.seal))
        if key is None or not key.keyed:
            report.problems.append(
                Problem(
                    Kind.WRONG_KEY,
                    f"audit prune #{record.pk} was sealed with "
                    f"{_unknown(seals.key_id_of(record.seal))}",
                )
            )
            continue
        fields = _fields(record, seals.PRUNE_FIELDS)
        if seals.prune_seal(key, fields) != record.seal:
            report.problems.append(
                Problem(
                    Kind.PRUNE_CHANGED,
                    f"audit prune #{record.pk} does not match its seal: the sessions it lists "
                    "do not count as pruned",
                )
            )
            continue
        pruned.update(str(value) for value in record.session_ids)
    return pruned


def parse_checkpoint(text: str) -> tuple[int, str]:
    """``SEQ:LINK`` as logged (``audit checkpoint 57:3f9a…``)."""
    seq, sep, link = text.strip().partition(":")
    if not sep or not seq.isdigit() or len(link) < 16:
        raise ValueError(f"{text!r} is not a checkpoint: give NUMBER:LINK as logged")
    return int(seq), link.lower()


def _checkpoint_problem(seq: int, link: str, head: tuple[int, str] | None) -> Problem | None:
    entry = LedgerEntry.objects.filter(seq=seq).values_list("link", flat=True).first()
    if entry is None:
        if head is None or seq > head[0]:
            end = f"#{head[0]}" if head else "nothing"
            return Problem(
                Kind.SESSION_REMOVED,
                f"checkpoint {seq} was logged, but the ledger ends at {end}: its end was cut "
                "off, sessions and entries",
            )
        return Problem(Kind.SESSION_REMOVED, f"checkpoint {seq}'s ledger entry is gone")
    if not entry.startswith(link):
        return Problem(
            Kind.LEDGER_CHANGED,
            f"ledger entry #{seq} is not the one checkpointed: the ledger was cut and "
            "written anew from there",
        )
    return None


def removed_session(session_id: uuid.UUID) -> Problem | str | None:
    """For a session id that is not in the database: the problem, "pruned" or None (unknown)."""
    entry = LedgerEntry.objects.filter(session_id=session_id).first()
    if entry is None:
        return None
    if str(session_id) in _pruned(known_keys(), LedgerReport()):
        return "pruned"
    return Problem(
        Kind.SESSION_REMOVED,
        f"it is gone from the database, but the ledger has it as entry #{entry.seq} "
        f"({entry.username} on {entry.target}, started {seals.moment(entry.started_at)})",
    )


def _fields(record: Any, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(record, name) for name in names}

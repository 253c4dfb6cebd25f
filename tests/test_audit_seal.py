"""The keyed audit trail: each kind of tampering, done with plain SQL, is named by `audit verify`.

Sessions are recorded for real (``records.open_session``, the ``Recorder`` and
``records.close_session``), then changed the way someone with write access to the database but
without the audit key would: plain SQL.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from terminals import records, servers
from terminals.audit import keyring, ledger, store
from terminals.audit.chain import frame_digest, genesis
from terminals.audit.commands import CommandLine
from terminals.audit.keyring import AuditKey
from terminals.audit.recorder import RESIZE, STDIN, STDOUT, Recorder
from terminals.audit.writer import GroupWriter
from terminals.checks import check_audit_key
from terminals.models import AuditPrune, Frame, LedgerEntry, Session
from terminals.permissions import ExecTarget
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
TARGET = ExecTarget("kubesim", "default", "web", "main")
SCRIPT = [
    (RESIZE, b"80x24"),
    (STDIN, b"ls\r"),
    (STDOUT, b"ls\r\nnotes.txt\r\n$ "),
    (STDIN, b"cat notes.txt\r"),
    (STDOUT, b"the plans\r\n$ "),
    (STDIN, b"exit\r"),
]
COMMANDS = [CommandLine(1000, "$ ls", "ls"), CommandLine(2000, "$ cat notes.txt", "cat notes.txt")]
OTHER_KEY = "another-audit-key-of-sufficient-length-0123456789"


@pytest.fixture
def pool():
    """The recorder's executor for this test; its connection is closed afterwards."""
    executor = ThreadPoolExecutor(max_workers=1)
    yield executor
    executor.submit(connections.close_all).result()
    executor.shutdown()


@pytest.fixture
def record(pool):
    """Record a session as a terminal does: open, frames and commands committed, end."""

    def record(username: str = "ann", *, end: bool = True, **open_args) -> uuid.UUID:
        user = get_user_model().objects.filter(username=username).first() or make_user(username)
        session = records.open_session(user, TARGET, "192.0.2.7", "pytest", 0, **open_args)
        records.mark_running(session.pk, "main", ["/bin/bash"])

        async def frames() -> None:
            recorder = Recorder(session.pk, writer=GroupWriter(pool=pool))
            for direction, data in SCRIPT:
                await recorder.record(direction, data)
            recorder.add_commands(COMMANDS)
            await recorder.close()
            assert recorder.failure is None

        async_to_sync(frames)()
        if end:
            records.close_session(session.pk, Session.EndReason.EXIT, 0)
        return session.pk

    return record


def sql(statement: str, *params) -> int:
    """Run plain SQL (UUIDs are passed as the database stores them); return the row count."""
    field = Session._meta.pk
    values = [field.get_db_prep_value(p, connection) if isinstance(p, uuid.UUID) else p
              for p in params]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(statement, values)
        return cursor.rowcount


def verify(*args: str) -> tuple[int, str]:
    """``manage.py audit verify``: its exit status and everything it said."""
    out = io.StringIO()
    try:
        call_command("audit", "verify", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def delete_session(session_id: uuid.UUID) -> None:
    for table in ("terminals_frame", "terminals_command"):
        sql(f"DELETE FROM {table} WHERE session_id = %s", session_id)
    assert sql("DELETE FROM terminals_session WHERE id = %s", session_id) == 1


# What is intact says so.


def test_a_recorded_session_is_sealed_and_verifies_intact(record):
    session_id = record()
    session = Session.objects.get(pk=session_id)
    assert session.seal.startswith(keyring.current_key().id + ":")
    assert session.sealed_frames == len(SCRIPT) and session.ledger_seq == 1
    assert verify(str(session_id)) == (0, f"{session_id}: intact (6 frames, sealed)\n")
    code, out = verify()
    assert code == 0, out
    assert f"{session_id}: intact (6 frames, sealed)" in out
    entry = LedgerEntry.objects.get(seq=1)
    assert f"ledger: 1 entries (0 pruned sessions among them), head 1:{entry.link}" in out


def test_a_live_session_verifies_as_live(record):
    session_id = record(end=False)
    intact = f"{session_id}: intact (6 frames, live: sealed when it ends)\n"
    assert verify(str(session_id)) == (0, intact)


# Frames.


def change_frame(session_id):
    sql(
        "UPDATE terminals_frame SET data = %s WHERE session_id = %s AND seq = 4",
        b"nothing to see\r\n$ ",
        session_id,
    )


def remove_frame(session_id):
    sql("DELETE FROM terminals_frame WHERE session_id = %s AND seq = 3", session_id)


def insert_frame(session_id):
    # Make room at 3, then put there a keystroke that never happened, with a stolen digest.
    shift = "UPDATE terminals_frame SET seq = seq + %s WHERE session_id = %s AND seq >= %s"
    sql(shift, 100, session_id, 3)
    sql(shift, -99, session_id, 100)
    sql(
        "INSERT INTO terminals_frame (session_id, seq, offset_us, direction, data, digest)"
        " SELECT session_id, 3, offset_us, 'i', %s, digest FROM terminals_frame"
        " WHERE session_id = %s AND seq = 4",
        b"rm -rf /\r",
        session_id,
    )


def swap_frames(session_id):
    sql("UPDATE terminals_frame SET seq = -1 WHERE session_id = %s AND seq = 1", session_id)
    sql("UPDATE terminals_frame SET seq = 1 WHERE session_id = %s AND seq = 2", session_id)
    sql("UPDATE terminals_frame SET seq = 2 WHERE session_id = %s AND seq = -1", session_id)


def cut_short(session_id):
    sql("DELETE FROM terminals_frame WHERE session_id = %s AND seq >= 4", session_id)


def cut_short_and_move_the_head(session_id):
    cut_short(session_id)
    sql(
        "UPDATE terminals_session SET head_digest = (SELECT digest FROM terminals_frame"
        " WHERE session_id = %s AND seq = 3) WHERE id = %s",
        session_id,
        session_id,
    )


def rewrite_with_recomputed_digests(session_id):
    """Everything recomputed, as one could before the chain had a key (or with a guessed one)."""
    guess = AuditKey(b"not-the-key-but-a-guess-of-the-attacker-0123")
    head = genesis(session_id, guess)
    rows = Frame.objects.filter(session_id=session_id).order_by("seq")
    for frame in rows.values_list("pk", "seq", "offset_us", "direction", "data"):
        pk, seq, offset_us, direction, data = frame
        data = bytes(data).replace(b"the plans", b"the lunch")
        head = frame_digest(head, seq, offset_us, direction, data, guess)
        sql("UPDATE terminals_frame SET data = %s, digest = %s WHERE id = %s", data, head.hex(), pk)
    sql("UPDATE terminals_session SET head_digest = %s WHERE id = %s", head.hex(), session_id)


@pytest.mark.parametrize(
    ("tamper", "findings"),
    [
        (
            change_frame,
            [
                "at frame 4: frame 4 does not match its digest: its content was changed "
                "[frame changed]"
            ],
        ),
        (
            remove_frame,
            ["at frame 3: frame 3 is missing (the next stored frame is 4) [frame removed]"],
        ),
        (
            insert_frame,
            [
                "at frame 3: frame 3 does not match its digest: it was inserted (the "
                "frames after it are renumbered) [frame inserted]"
            ],
        ),
        (
            swap_frames,
            [
                "at frame 1: frame 1 does not match its digest: frames 1 and 2 were "
                "swapped [frames reordered]"
            ],
        ),
        (
            cut_short,
            [
                "at frame 4: it was cut short: frames 4 to 5 are missing at the end "
                "(6 sealed, 4 stored) [session cut short]"
            ],
        ),
        (
            cut_short_and_move_the_head,
            ["[session cut short]", "does not match its seal", "[metadata changed]"],
        ),
        (
            rewrite_with_recomputed_digests,
            [
                "at frame 0: frame 0 does not match its digest",
                "[frame changed]",
                "[metadata changed]",
            ],
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_frames_tampered_with_are_named(record, tamper, findings):
    session_id = record()
    tamper(session_id)
    code, out = verify(str(session_id))
    assert code == 1, out
    for finding in findings:
        assert finding in out
    assert f"{session_id}: BROKEN at frame" in out or f"{session_id}: BROKEN " in out
    assert "1 session(s) failed verification." in out


# The record around the frames.


def change_user(session_id):
    sql("UPDATE terminals_session SET username = 'mallory' WHERE id = %s", session_id)


def change_exit_code(session_id):
    sql("UPDATE terminals_session SET exit_code = 1 WHERE id = %s", session_id)


def change_bytes(session_id):
    sql("UPDATE terminals_session SET bytes_in = 3, frames_in = 1 WHERE id = %s", session_id)


def change_ended_at(session_id):
    sql(
        "UPDATE terminals_session SET ended_at = (SELECT started_at FROM terminals_session"
        " WHERE id = %s) WHERE id = %s",
        session_id,
        session_id,
    )


def change_command(session_id):
    sql(
        "UPDATE terminals_command SET text = 'true' WHERE session_id = %s AND text = 'ls'",
        session_id,
    )


def remove_command(session_id):
    sql(
        "DELETE FROM terminals_command WHERE session_id = %s AND text = 'cat notes.txt'",
        session_id,
    )


def remove_seal(session_id):
    sql("UPDATE terminals_session SET seal = '' WHERE id = %s", session_id)


def unkey(session_id):
    """Pretend the session predates audit keys, so that its chain needs no key."""
    sql("UPDATE terminals_session SET key_id = '', seal = '' WHERE id = %s", session_id)


SEAL = "its record does not match its seal"


@pytest.mark.parametrize(
    ("tamper", "findings"),
    [
        (
            change_user,
            [
                "its record differs from its ledger entry #1: user ann → mallory "
                "[metadata changed]",
                SEAL,
            ],
        ),
        (
            change_exit_code,
            [
                f"{SEAL}: who, where, when, how it ended, its counts, its head "
                "digest or its ledger number were changed [metadata changed]"
            ],
        ),
        (change_bytes, [SEAL]),
        (change_ended_at, [SEAL]),
        (
            change_command,
            [
                "its commands are not those sealed: commands were changed, added or "
                "removed [commands changed]"
            ],
        ),
        (remove_command, ["[commands changed]"]),
        (
            remove_seal,
            [
                "it ended without a seal: its end was written around the app, or its "
                "seal was removed [seal missing]"
            ],
        ),
        (
            unkey,
            [
                "at frame 0",
                "it claims to be recorded before audit keys, but ledger entry #1 has it keyed",
            ],
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_a_changed_record_is_named(record, tamper, findings):
    session_id = record()
    tamper(session_id)
    code, out = verify(str(session_id))
    assert code == 1, out
    for finding in findings:
        assert finding in out


def test_an_end_written_around_the_app_has_no_seal(record):
    session_id = record(end=False)
    sql(
        "UPDATE terminals_session SET ended_at = started_at, end_reason = 'exit' WHERE id = %s",
        session_id,
    )
    code, out = verify(str(session_id))
    assert code == 1 and "[seal missing]" in out


def test_an_end_that_could_not_be_sealed_is_recorded_and_reported(record):
    session_id = record(end=False)
    sql("ALTER TABLE terminals_frame RENAME TO terminals_frame_away")
    try:
        assert records.close_session(session_id, Session.EndReason.AUDIT_UNAVAILABLE, None, "down")
    finally:
        sql("ALTER TABLE terminals_frame_away RENAME TO terminals_frame")
    session = Session.objects.get(pk=session_id)
    assert session.end_reason == "audit_unavailable" and session.seal == ""
    code, out = verify(str(session_id))
    assert code == 1
    assert "it ended without a seal: it ended as the audit store failed" in out


# Sessions: removed, inserted, and the ledger itself.


def test_a_deleted_session_is_reported_as_removed(record):
    first, second, third = record(), record("bob"), record("cy")
    delete_session(second)
    code, out = verify()
    assert code == 1, out
    started = LedgerEntry.objects.get(seq=2).started_at.isoformat(timespec="microseconds")
    assert (
        f"ledger: BROKEN session {second} (ledger entry #2: bob on kubesim/default/web, started "
        f"{started}) is gone [session removed]"
    ) in out
    assert f"{first}: intact" in out and f"{third}: intact" in out
    assert "0 session(s) failed verification. The ledger has 1 problem(s)." in out
    code, out = verify(str(second))
    assert code == 1
    assert f"{second}: BROKEN it is gone from the database, but the ledger has it as entry #2" in (
        out
    )


def test_a_session_deleted_with_its_ledger_entry_leaves_a_gap(record):
    record(), record("bob"), record("cy")
    second = LedgerEntry.objects.get(seq=2).session_id
    delete_session(second)
    sql("DELETE FROM terminals_ledgerentry WHERE seq = 2")
    code, out = verify()
    assert code == 1
    assert (
        "ledger: BROKEN ledger entries #2 are missing: 1 session(s) were removed with their "
        "entries [session removed]"
    ) in out


def test_cutting_the_end_of_the_ledger_shows_against_a_logged_checkpoint(record, caplog):
    caplog.set_level("INFO", logger="terminals.audit.ledger")
    record()
    second = record("bob")
    logged = re.findall(r"audit checkpoint (\d+:[0-9a-f]{64})", caplog.text)
    checkpoint = logged[-1]
    assert checkpoint == f"2:{LedgerEntry.objects.get(seq=2).link}"
    # The newest session and its entry go: what is left verifies (the database cannot tell)...
    delete_session(second)
    sql("DELETE FROM terminals_ledgerentry WHERE seq = 2")
    code, out = verify()
    assert code == 0 and "head 1:" in out
    # ...but not against the checkpoint the logs kept.
    code, out = verify("--checkpoint", checkpoint)
    assert code == 1
    assert (
        "ledger: BROKEN checkpoint 2 was logged, but the ledger ends at #1: its end was cut "
        "off, sessions and entries [session removed]"
    ) in out
    # Nor once a new session has taken the number again.
    record("cy")
    code, out = verify("--checkpoint", checkpoint)
    assert code == 1
    assert "ledger entry #2 is not the one checkpointed" in out and "[ledger changed]" in out
    assert verify("--checkpoint", "2:nonsense")[0] == 1  # CommandError: not a checkpoint


def test_a_session_inserted_around_the_app_is_reported(record):
    original = record()
    copy = uuid.uuid4()
    columns = [f.column for f in Session._meta.concrete_fields if f.column != "id"]
    listed = ", ".join(columns)
    sql(
        f"INSERT INTO terminals_session (id, {listed}) SELECT %s, {listed}"
        " FROM terminals_session WHERE id = %s",
        copy,
        original,
    )
    code, out = verify()
    assert code == 1
    assert f"{copy}: BROKEN at frame 0" in out  # the chain starts from the session's id
    assert f"its ledger entry #1 is session {original}'s: it was inserted" in out
    assert "[session inserted]" in out
    assert f"{original}: intact" in out


def test_a_session_without_a_ledger_entry_is_reported_as_inserted(record):
    session_id = record()
    sql("UPDATE terminals_session SET ledger_seq = NULL WHERE id = %s", session_id)
    sql("DELETE FROM terminals_ledgerentry WHERE seq = 1")
    code, out = verify(str(session_id))
    assert code == 1
    assert "it is not in the ledger: it was inserted around the app [session inserted]" in out


def test_a_changed_ledger_entry_is_reported(record):
    session_id = record()
    sql("UPDATE terminals_ledgerentry SET username = 'mallory' WHERE seq = 1")
    code, out = verify()
    assert code == 1
    assert (
        "ledger: BROKEN ledger entry #1 does not match its link: it was changed [ledger changed]"
    ) in out
    assert (
        f"{session_id}: BROKEN its record differs from its ledger entry #1: user mallory → ann"
    ) in out


def test_pruned_sessions_are_accepted_and_a_changed_prune_record_is_not(record):
    record(), record("bob")
    kept = record("cy", end=False)
    call_command("audit", "prune", "--before", "2999-01-01", stdout=io.StringIO())
    prune = AuditPrune.objects.get()
    assert prune.seal.startswith(keyring.current_key().id + ":") and prune.sessions == 2
    code, out = verify()
    assert code == 0, out
    assert "ledger: 3 entries (2 pruned sessions among them)" in out
    assert f"{kept}: intact" in out
    pruned = prune.session_ids[0]
    assert verify(pruned) == (0, f"{pruned}: pruned (a sealed audit prune removed it)\n")
    sql("UPDATE terminals_auditprune SET frames = 0")
    code, out = verify()
    assert code == 1
    assert (
        f"audit prune #{prune.pk} does not match its seal: the sessions it lists do not count "
        "as pruned [prune record changed]"
    ) in out
    assert out.count("[session removed]") == 2


def test_a_deleted_session_cannot_be_passed_off_as_pruned(record):
    record()
    gone = record("bob")
    call_command("audit", "prune", "--before", "2000-01-01", stdout=io.StringIO())  # removes none
    delete_session(gone)
    sql("UPDATE terminals_auditprune SET session_ids = %s", f'["{gone}"]')
    code, out = verify()
    assert code == 1
    assert "[prune record changed]" in out and f"session {gone}" in out


def test_openings_from_many_threads_number_the_ledger_without_gaps_or_forks(record):
    users = [make_user(f"user{n}") for n in range(8)]
    barrier = threading.Barrier(len(users), timeout=10)

    def open_one(user):
        try:
            barrier.wait()
            return records.open_session(user, TARGET, None, "", 0).pk
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(users)) as threads:
        opened = list(threads.map(open_one, users))
    entries = list(LedgerEntry.objects.filter(seq__gt=0).values_list("seq", "session_id"))
    assert [seq for seq, _ in entries] == list(range(1, 9))
    assert {session for _, session in entries} == set(opened)
    assert ledger.check_ledger().ok


# Keys.


def test_a_session_keyed_with_another_key_is_reported_as_such_not_as_tampered(record, settings):
    session_id = record()
    old_id = keyring.current_key().id
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_KEY": OTHER_KEY}
    code, out = verify()
    assert code == 1
    assert (
        f"its frames were keyed with key {old_id}, which is neither AUDIT_KEY nor one of "
        "AUDIT_OLD_KEYS: they cannot be checked [wrong key]"
    ) in out
    assert f"it was sealed with key {old_id}" in out
    assert f"ledger entry #1 was made with key {old_id}" in out
    assert "[frame changed]" not in out and "[metadata changed]" not in out
    assert str(store.verify_session(Session.objects.get(pk=session_id))).startswith(
        "its frames were keyed with key"
    )


def test_after_a_rotation_the_old_key_still_verifies(record, settings):
    before = record()
    old = settings.TERMINALS["AUDIT_KEY"]
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_KEY": OTHER_KEY, "AUDIT_OLD_KEYS": [old]}
    after = record("bob")
    assert Session.objects.get(pk=before).key_id != Session.objects.get(pk=after).key_id
    code, out = verify()
    assert code == 0, out
    assert f"{before}: intact (6 frames, sealed)" in out and f"{after}: intact" in out


def test_the_reaper_seals_the_sessions_it_ends(record):
    server = servers.register("web-1", 100)
    session_id = record(end=False, server_id=server.pk)
    sql("UPDATE terminals_server SET stopped_at = heartbeat_at WHERE id = %s", server.pk)
    assert servers.reap() == 1
    session = Session.objects.get(pk=session_id)
    assert session.end_reason == Session.EndReason.SERVER_LOST and session.seal
    report = ledger.check_session(session)
    assert str(report) == "intact (6 frames, sealed)"


def test_the_check_refuses_a_missing_or_weak_key_unless_debug(settings):
    settings.DEBUG = False
    assert check_audit_key() == []

    def ids(**terminals):
        settings.TERMINALS = {**settings.TERMINALS, **terminals}
        return [message.id for message in check_audit_key()]

    assert ids(AUDIT_KEY=None) == ["terminals.E012"]
    assert ids(AUDIT_KEY="") == ["terminals.E012"]
    assert ids(AUDIT_KEY="short-key") == ["terminals.E012"]
    assert ids(AUDIT_KEY="ab" * 20) == ["terminals.E012"]  # 40 characters, 2 different
    assert ids(AUDIT_KEY=12345) == ["terminals.E012"]
    assert ids(AUDIT_KEY=OTHER_KEY) == []
    assert ids(AUDIT_KEY=os.urandom(32)) == []
    assert ids(AUDIT_KEY=OTHER_KEY, AUDIT_OLD_KEYS="not-a-list") == ["terminals.E012"]
    assert ids(AUDIT_KEY=OTHER_KEY, AUDIT_OLD_KEYS=[None]) == ["terminals.E012"]
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_KEY": None, "AUDIT_OLD_KEYS": []}
    (error,) = check_audit_key()
    assert "TERMINALS['AUDIT_KEY'] is not set" in error.msg and "WEBSHELL_AUDIT_KEY" in error.hint
    settings.DEBUG = True
    assert check_audit_key() == []


def test_manage_check_runs_the_key_check(settings):
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_KEY": "short"}
    with pytest.raises(Exception, match=r"terminals\.E012"):
        call_command("check")


def test_without_a_key_nothing_is_recorded(settings):
    settings.DEBUG = False
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_KEY": None}
    with pytest.raises(ImproperlyConfigured, match="AUDIT_KEY"):
        records.open_session(make_user("ann"), TARGET, None, "", 0)
    assert not Session.objects.exists() and not LedgerEntry.objects.filter(seq__gt=0).exists()


def test_with_debug_and_no_key_a_development_key_is_derived_and_announced(
    settings, caplog, monkeypatch
):
    monkeypatch.setattr(keyring, "_warned", False)
    settings.DEBUG = True
    settings.TERMINALS = {**settings.TERMINALS, "AUDIT_KEY": None}
    key = keyring.current_key()
    assert key.keyed and key.id == keyring.current_key().id
    assert "keyed with a DEVELOPMENT key derived from SECRET_KEY" in caplog.text
    assert caplog.text.count("DEVELOPMENT key") == 1  # once per process
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    assert keyring.current_key().id != key.id


def project(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    ours = ("DJANGO_", "WEBSHELL_", "DATABASE_URL")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    environment.update(
        DJANGO_SETTINGS_MODULE="webshell.settings",
        DJANGO_SECRET_KEY="x" * 20 + "-a-long-random-production-secret-" + "y" * 20,
        DJANGO_ALLOWED_HOSTS="shell.example.com",
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_the_project_reads_its_keys_from_files_and_refuses_to_run_without(tmp_path):
    key_file, old_file = tmp_path / "audit-key", tmp_path / "old-keys"
    key_file.write_text(OTHER_KEY + "\n")
    old_file.write_text(
        "first-old-key-0123456789-abcdefghijkl\n\nsecond-old-key-0123456789-abcdefghij\n"
    )
    show = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps([settings.TERMINALS['AUDIT_KEY'], settings.TERMINALS['AUDIT_OLD_KEYS']]))"
    )
    result = project(
        show, WEBSHELL_AUDIT_KEY_FILE=str(key_file), WEBSHELL_AUDIT_OLD_KEYS_FILE=str(old_file)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f'["{OTHER_KEY}", ["first-old-key-0123456789-abcdefghijkl", '
        '"second-old-key-0123456789-abcdefghij"]]'
    )
    from_env = project(show, WEBSHELL_AUDIT_KEY=OTHER_KEY)
    assert from_env.stdout.startswith(f'["{OTHER_KEY}", []]'), from_env.stderr
    missing = project(show, WEBSHELL_AUDIT_KEY_FILE=str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "WEBSHELL_AUDIT_KEY_FILE: cannot read" in missing.stderr
    check = "from django.core.management import execute_from_command_line; "
    check += "execute_from_command_line(['manage.py', 'check'])"
    refused = project(check)
    assert refused.returncode != 0 and "terminals.E012" in refused.stderr
    assert project(check, WEBSHELL_AUDIT_KEY=OTHER_KEY).returncode == 0


def legacy_session(**fields):
    """A session as recorded before audit keys: an unkeyed chain, no ledger entry, no seal."""
    session = Session.objects.create(
        username="old", cluster="kubesim", namespace="default", pod="web", key_id="", **fields
    )
    head = genesis(session.pk, keyring.UNKEYED)
    for seq, (direction, data) in enumerate(SCRIPT[:2]):
        head = frame_digest(head, seq, seq, direction, data, keyring.UNKEYED)
        Frame.objects.create(
            session=session, seq=seq, offset_us=seq, direction=direction, data=data,
            digest=head.hex(),
        )  # fmt: skip
    Session.objects.filter(pk=session.pk).update(head_digest=head.hex())
    return session.pk


def test_sessions_from_before_audit_keys_are_reported_as_such(record):
    from django.utils import timezone

    ended = legacy_session(ended_at=timezone.now(), end_reason="exit")
    running = legacy_session()  # opened before the upgrade, ended after it: sealed then
    record()
    records.close_session(running, Session.EndReason.SERVER_LOST)
    code, out = verify()
    assert code == 0, out
    assert f"{ended}: intact (2 frames, recorded before audit keys: unkeyed, not sealed)" in out
    assert f"{running}: intact (2 frames, sealed, unkeyed frames)" in out
    # Passing a new session off as an old one does not work once the ledger has begun.
    late = legacy_session(ended_at=timezone.now(), end_reason="exit")
    code, out = verify(str(late))
    assert code == 1
    assert "started after the ledger began, and it is not in the ledger" in out
    assert "[session inserted]" in out


def test_the_admin_shows_the_seal_and_ledger_verdict(record, client):
    session_id = record()
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    url = f"/admin/terminals/session/{session_id}/change/"
    page = client.get(url).content.decode()
    assert "seal and ledger" in page.lower() and "intact (6 frames, sealed)" in page
    change_exit_code(session_id)
    page = client.get(url).content.decode()
    assert "its record does not match its seal" in page and "[metadata changed]" in page

"""Refused attempts: recorded one by one up to a burst per client and kind, then counted.

The throttle (terminals.denials) runs on an injected clock here; tests/settings.py turns it off
for the rest of the suite, and these tests turn it back on with the defaults.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.db import OperationalError

from terminals import records
from terminals.conf import DEFAULTS
from terminals.denials import DenialThrottle
from terminals.models import DeniedAttempt
from terminals.permissions import ExecTarget
from tests.fixtures.daphne import daphne_environment, run_daphne
from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)

TARGET = ExecTarget("kubesim", "default", "web")
LOG_IN = "Log in to open a terminal."
BURST, INTERVAL = DEFAULTS["DENIAL_BURST"], DEFAULTS["DENIAL_INTERVAL"]
MORE = re.compile(r" \[\+(\d+) more like this from .* UTC, counted but not recorded one by one\]$")
LATE = re.compile(r" \[(\d+) like this from .* UTC, counted but not recorded one by one; written")


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(settings, monkeypatch) -> Clock:
    """The production throttle (default burst and interval) on a clock of the test's."""
    settings.TERMINALS = {**settings.TERMINALS, "DENIAL_BURST": BURST}
    clock = Clock()
    monkeypatch.setattr(records, "_denials", DenialThrottle(clock=clock))
    return clock


def refuse(client: str = "203.0.113.9", user=None, code: str = "not_authenticated") -> None:
    records.record_denial(user or AnonymousUser(), TARGET, code, LOG_IN, client, "UA")


def attempts_represented() -> int:
    """Refusals the rows stand for: each row itself and the refusals it notes."""
    total = 0
    for reason in DeniedAttempt.objects.values_list("reason", flat=True):
        more, late = MORE.search(reason), LATE.search(reason)
        total += int(late.group(1)) if late else 1 + (int(more.group(1)) if more else 0)
    return total


def test_a_flood_of_anonymous_refusals_writes_a_burst_then_the_count(clock):
    for _ in range(300):
        refuse()
    assert DeniedAttempt.objects.count() == BURST  # and 290 counted, in memory only

    clock.now += INTERVAL
    refuse()

    latest = DeniedAttempt.objects.order_by("-pk").first()
    assert latest.reason.startswith(LOG_IN + " [+290 more like this from ")
    assert (latest.client_address, latest.code, latest.username) == (
        "203.0.113.9",
        "not_authenticated",
        "",
    )
    assert DeniedAttempt.objects.count() == BURST + 1
    assert attempts_represented() == 301


def test_after_the_burst_one_row_per_interval(clock):
    for _ in range(60):
        for _ in range(10):
            refuse()
        clock.now += 1
    # 600 refusals in a minute: the burst, then one row each DENIAL_INTERVAL seconds.
    assert DeniedAttempt.objects.count() <= BURST + 60 // INTERVAL
    records.flush_denials()
    assert attempts_represented() == 600


def test_each_client_and_each_kind_has_its_own_budget(clock):
    for _ in range(BURST + 5):
        refuse("203.0.113.9")
        refuse("203.0.113.10")
        refuse("203.0.113.9", code="bad_request")
    assert DeniedAttempt.objects.count() == 3 * BURST


def test_a_user_is_one_client_from_any_address(clock):
    mallory = make_user("mallory")
    for index in range(BURST + 5):
        refuse(f"203.0.113.{index}", user=mallory, code="forbidden")
    assert DeniedAttempt.objects.filter(username="mallory").count() == BURST


def test_a_count_is_written_at_the_next_refusal_of_anyone_once_due(clock):
    for _ in range(BURST + 7):
        refuse("203.0.113.9")
    clock.now += INTERVAL

    refuse("198.51.100.1")  # another client: its own row, and the first client's count

    summary = DeniedAttempt.objects.get(client_address="203.0.113.9", reason__contains="written")
    assert summary.reason.startswith(LOG_IN + " [7 like this from ")
    assert summary.reason.endswith("; written later]")
    assert attempts_represented() == BURST + 7 + 1


def test_flush_writes_every_count_at_once(clock):
    for _ in range(BURST + 3):
        refuse("203.0.113.9")
        refuse("203.0.113.10")
    records.flush_denials()
    assert DeniedAttempt.objects.count() == 2 * BURST + 2
    assert attempts_represented() == 2 * (BURST + 3)
    records.flush_denials()  # nothing left to write
    assert DeniedAttempt.objects.count() == 2 * BURST + 2


def test_a_count_whose_row_fails_is_kept(clock, monkeypatch):
    for _ in range(BURST + 4):
        refuse()
    clock.now += INTERVAL
    create = DeniedAttempt.objects.create

    def failing(**fields):
        raise OperationalError("the store is down")

    monkeypatch.setattr(DeniedAttempt.objects, "create", failing)
    with pytest.raises(OperationalError):
        refuse()
    monkeypatch.setattr(DeniedAttempt.objects, "create", create)
    refuse()  # the token was spent on the failed row: this one is counted
    records.flush_denials()
    # The four counted before the failure, the failed one itself and the last one.
    assert DeniedAttempt.objects.count() == BURST + 1
    assert attempts_represented() == BURST + 4 + 1 + 1


def test_the_note_survives_a_long_reason(clock):
    for _ in range(BURST + 1):
        records.record_denial(AnonymousUser(), TARGET, "bad_request", "x" * 5000, "203.0.113.9")
    clock.now += INTERVAL
    records.record_denial(AnonymousUser(), TARGET, "bad_request", "x" * 5000, "203.0.113.9")
    latest = DeniedAttempt.objects.order_by("-pk").first()
    assert len(latest.reason) == 2000
    assert MORE.search(latest.reason).group(1) == "1"


def test_memory_is_bounded_by_sharing_a_bucket_past_the_maximum(settings, monkeypatch):
    settings.TERMINALS = {**settings.TERMINALS, "DENIAL_BURST": 2}
    clock = Clock()
    throttle = DenialThrottle(clock=clock, max_clients=3)
    monkeypatch.setattr(records, "_denials", throttle)
    for client in range(100):
        for _ in range(3):
            refuse(f"203.0.113.{client}")
    # Three clients with their own bucket (2 rows each), then one shared bucket (2 rows).
    assert DeniedAttempt.objects.count() == 3 * 2 + 2
    assert len(throttle._buckets) == 4
    records.flush_denials()
    assert attempts_represented() == 300


def test_idle_clients_are_forgotten_for_new_ones(settings, monkeypatch):
    settings.TERMINALS = {**settings.TERMINALS, "DENIAL_BURST": 2}
    clock = Clock()
    throttle = DenialThrottle(clock=clock, max_clients=3)
    monkeypatch.setattr(records, "_denials", throttle)
    for client in range(3):
        refuse(f"203.0.113.{client}")
    clock.now += 2 * INTERVAL  # their buckets have refilled: nothing to remember
    for client in range(3, 6):
        refuse(f"203.0.113.{client}")
    assert len(throttle._buckets) == 3


async def test_three_hundred_refused_anonymous_connects_through_daphne(kubesim):
    """The flood of the report, end to end: 300 connects without a login in about a second."""
    env = daphne_environment(kubesim)
    # The defaults, and a one-second interval so that the count is written soon after.
    env["WEBSHELL_TEST_TERMINALS"] = json.dumps({"DENIAL_BURST": BURST, "DENIAL_INTERVAL": 1})
    with run_daphne(env) as server:
        async with aiohttp.ClientSession() as http:
            url = f"{server.ws_url}/ws/terminals/kubesim/default/web/"

            async def connect() -> int | None:
                async with http.ws_connect(url, origin=server.origin) as socket:
                    async for _ in socket:
                        pass
                    return socket.close_code

            loop = asyncio.get_running_loop()
            started = loop.time()
            codes = await asyncio.gather(*(connect() for _ in range(300)))
            elapsed = loop.time() - started
            assert set(codes) == {4401}
            rows = await DeniedAttempt.objects.acount()
            assert rows <= BURST + elapsed + 1  # the burst, then one a second
            await asyncio.sleep(1)  # no event to await: the bucket refills with time
            assert await connect() == 4401
    represented = await sync_to_async(attempts_represented)()
    assert represented == 301


def test_the_time_span_is_in_utc(clock):
    for _ in range(BURST + 1):
        refuse()
    clock.now += INTERVAL
    refuse()
    note = DeniedAttempt.objects.order_by("-pk").first().reason
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert f"from {today} " in note and note.endswith("UTC, counted but not recorded one by one]")

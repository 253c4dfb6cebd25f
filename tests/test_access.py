"""Who may open what, end to end: users by targets by outcome, through the real consumer (Daphne
and kubesim), the portal listing and the terminal page; and the denials they leave behind."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from terminals.models import DeniedAttempt
from tests.fixtures.terminal_client import TerminalClient
from tests.fixtures.users import grant, make_user, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

TARGETS = ["default/web", "dev/api", "default/alpine"]

# user → the targets they may open; anonymous and inactive users are not logged in at all.
EXPECTED = {
    "root": {"default/web", "dev/api", "default/alpine"},  # superuser, no rules needed
    "grace": {"dev/api"},  # member of "ops", whose rule grants namespace dev
    "pat": {"default/web"},  # a pod-glob rule: default/web*
    "old": set(),  # a rule for everything, expired
    "gone": None,  # inactive, with a rule for everything
    "anonymous": None,
}


def make_people() -> dict[str, str | None]:
    """Create the table's users and rules; return their session cookies."""
    User = get_user_model()
    cookies: dict[str, str | None] = {"anonymous": None}
    cookies["root"] = session_cookie(User.objects.create_superuser("root", password="pw"))
    ops = Group.objects.create(name="ops")
    grace = make_user("grace")
    grace.groups.add(ops)
    grant(ops, name="ops in dev", namespaces="dev")
    cookies["grace"] = session_cookie(grace)
    pat = make_user("pat")
    grant(pat, name="pat's web pods", namespaces="default", pods="web*")
    cookies["pat"] = session_cookie(pat)
    old = make_user("old")
    grant(old, name="expired", expires_at=timezone.now() - dt.timedelta(minutes=1))
    cookies["old"] = session_cookie(old)
    gone = make_user("gone")
    grant(gone, name="gone's rule")
    cookies["gone"] = session_cookie(gone)
    gone.is_active = False  # deactivated after logging in: the session no longer counts
    gone.save()
    return cookies


async def outcome(daphne, cookie, target) -> int | str:
    """ "ready" if a terminal opens, else the close code."""
    path = f"/ws/terminals/kubesim/{target}/?container=main"
    client = await TerminalClient.connect(daphne.ws_url, path, cookie)
    try:
        while True:
            if any(message["type"] == "ready" for message in client.messages):
                return "ready"
            if not await client._read_one():
                return client.close_code or 0
    finally:
        await client.close()


async def test_the_consumer_follows_the_table(daphne):
    from asgiref.sync import sync_to_async

    cookies = await sync_to_async(make_people)()
    results = {}
    for person, cookie in cookies.items():
        for target in TARGETS:
            results[person, target] = await outcome(daphne, cookie, target)
    for (person, target), result in results.items():
        allowed = EXPECTED[person]
        expected = 4401 if allowed is None else "ready" if target in allowed else 4403
        assert result == expected, (person, target, result)
    # Every refusal is on record, with who, where and from where.
    denial = await DeniedAttempt.objects.aget(username="pat", namespace="dev", pod="api")
    assert denial.code == "forbidden"
    assert denial.client_address == "127.0.0.1"
    assert denial.reason == "You may not open a terminal on kubesim/dev/api/main."
    assert await DeniedAttempt.objects.filter(username="", code="not_authenticated").acount() == 6


@pytest.mark.parametrize("person", list(EXPECTED))
def test_the_portal_and_the_page_follow_the_table(person, kubesim_settings):
    cookies = make_people()
    client = Client()
    if cookies[person]:
        client.cookies["sessionid"] = cookies[person]
    portal = client.get("/")
    allowed = EXPECTED[person]
    if allowed is None:
        assert portal.status_code == 302 and "/accounts/login/" in portal["Location"]
    else:
        page = portal.content.decode()
        for target in TARGETS:
            link = f"/terminals/kubesim/{target}/?container=main"
            assert (link in page) == (target in allowed), (person, target)
    for target in TARGETS:
        response = client.get(f"/terminals/kubesim/{target}/?container=main")
        if allowed is None:
            assert response.status_code == 302
        else:
            assert response.status_code == (200 if target in allowed else 403), (person, target)


def test_a_refused_page_is_on_record(client, kubesim_settings):
    client.force_login(make_user("nosy"))
    assert client.get("/terminals/kubesim/prod/db/?container=main").status_code == 403
    denial = DeniedAttempt.objects.get()
    assert (denial.username, denial.namespace, denial.pod, denial.code) == (
        "nosy",
        "prod",
        "db",
        "forbidden",
    )


async def test_bad_names_get_4400_and_never_reach_the_cluster(daphne, kubesim):
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(lambda: session_cookie(make_user("eve", everywhere=True)))()
    before = len(kubesim.transcript_events())
    for path in (
        "/ws/terminals/kubesim/default/..%2F..%2Fsecrets/",
        "/ws/terminals/kubesim/Default/web/",
        "/ws/terminals/kubesim/default/web/?container=--privileged",
        "/ws/terminals/kubesim/default/web/?command=sh%20-c%20id",
    ):
        client = await TerminalClient.connect(daphne.ws_url, path, cookie)
        assert await client.until_closed() == 4400, path
        assert client.messages[-1]["code"] == "bad_request"
        await client.close()
    assert len(kubesim.transcript_events()) == before
    assert await DeniedAttempt.objects.filter(username="eve", code="bad_request").acount() == 4

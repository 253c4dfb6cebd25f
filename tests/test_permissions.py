"""ExecTarget's name validation: whole Kubernetes names only, never a trailing newline."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from terminals.conf import get_config
from terminals.models import DeniedAttempt
from terminals.permissions import ExecTarget, is_label, is_subdomain
from terminals.protocol import CloseCode
from terminals.session.admission import Admission
from terminals.session.ending import EndSession
from tests.fixtures.users import make_user

GOOD = ExecTarget("kubesim", "dev", "api-0.shard", "main", "/bin/bash")


def test_kubernetes_names_pass():
    assert GOOD.invalid_reason() is None
    assert is_label("a") and is_label("a" * 63) and is_subdomain("a.b-c.d")


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\r", " ", "\t", "\x00", "\n\n"])
@pytest.mark.parametrize("field", ["namespace", "pod", "container", "command"])
def test_a_name_with_trailing_whitespace_is_refused(field, suffix):
    # re.match with "$" let "main\n" through: "$" also matches before a final newline.
    value = getattr(GOOD, field) + suffix
    target = ExecTarget(**{**GOOD.__dict__, field: value})
    assert str(target.invalid_reason()).startswith(f"{value!r} is not a valid {field}")


@pytest.mark.parametrize("name", ["main\n", "\nmain", "ma\nin", "Main", "-main", "a" * 64])
def test_labels_are_whole_dns_labels(name):
    assert not is_label(name)


@pytest.mark.parametrize("name", ["api.0\n", "api..0", ".api", "a" * 254])
def test_subdomains_are_whole_dns_subdomains(name):
    assert not is_subdomain(name)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        (
            ("kubesim", "dev", "api"),
            b"container=main%0a",
            "'main\\n' is not a valid container name.",
        ),
        (("kubesim", "dev\n", "api"), b"", "'dev\\n' is not a valid namespace name."),
        (("kubesim", "dev", "api\n"), b"", "'api\\n' is not a valid pod name."),
        (("kubesim", "dev", "api"), b"command=bash%0A", "'bash\\n' is not a valid command."),
    ],
)
async def test_a_connect_with_a_trailing_newline_is_refused_with_4400(path, query, message):
    """Refused in admission, before anything is asked of a cluster, and recorded."""
    cluster, namespace, pod = path
    user = await sync_to_async(make_user)("alice", everywhere=True)
    scope = {
        "url_route": {"kwargs": {"cluster": cluster, "namespace": namespace, "pod": pod}},
        "query_string": query,
        "user": user,
        "client": ("10.0.0.7", 5555),
        "headers": [],
    }
    with pytest.raises(EndSession) as refused:
        await Admission(scope, get_config()).admit()
    assert (refused.value.ending.code, refused.value.ending.message) == (
        CloseCode.BAD_REQUEST,
        message,
    )
    denial = await DeniedAttempt.objects.aget()
    assert (denial.username, denial.code, denial.reason) == ("alice", "bad_request", message)

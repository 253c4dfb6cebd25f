"""The workspace page (terminals in tabs beside the pods' tree), as the Django client sees it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.fixtures.users import grant, make_user

pytestmark = pytest.mark.django_db

WORKSPACE = "/terminals/workspace/"


def open_buttons(page: str) -> set[tuple[str, str, str, str]]:
    """(cluster, namespace, pod, container) of every button that opens a tab."""
    found = re.findall(
        r'<button type="button" class="ws-open [^"]*" data-cluster="([^"]*)" '
        r'data-namespace="([^"]*)"\s+data-pod="([^"]*)" data-container="([^"]*)"',
        page,
    )
    return set(found)


def test_the_url_is_named_and_not_taken_by_the_terminal_route() -> None:
    assert reverse("terminals:workspace") == WORKSPACE


def test_anonymous_users_are_sent_to_the_login_page(client: Client) -> None:
    response = client.get(WORKSPACE)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={WORKSPACE}"


def test_the_tree_offers_every_container_the_user_may_open(
    client: Client, kubesim_settings: Any
) -> None:
    client.force_login(make_user("sam", everywhere=True))
    response = client.get(WORKSPACE)
    assert response.status_code == 200
    page = response.content.decode()
    assert open_buttons(page) == {
        ("kubesim", "default", "alpine", "main"),
        ("kubesim", "default", "multi", "app"),  # the pod's own button: its first container
        ("kubesim", "default", "multi", "sidecar"),
        ("kubesim", "default", "web", "main"),
        ("kubesim", "dev", "api", "main"),
        ("kubesim", "prod", "db", "main"),
    }
    # multi's containers each have a button beside the pod's.
    assert page.count('data-pod="multi"') == 3
    # A pod that is not running is listed, but opens nothing.
    assert 'class="ws-pod-name ws-not-running"' in page and ">done<" in page
    assert 'data-pod="done"' not in page
    # Grouped cluster → namespace → pods, with the filter and what the script needs.
    assert re.search(r'<details class="ws-cluster" open data-cluster="kubesim">', page)
    for namespace in ("default", "dev", "prod"):
        assert f'<details class="ws-namespace" open data-namespace="{namespace}">' in page
    assert 'id="ws-filter"' in page
    assert 'data-socket-prefix="/ws/terminals/"' in page
    assert 'role="tablist"' in page
    assert "terminals/js/workspace.js" in page
    assert 'id="terminal-preferences"' in page


def test_the_tree_lists_only_what_the_user_may_open(client: Client, kubesim_settings: Any) -> None:
    user = make_user("dev")
    grant(user, name="dev only", namespaces="dev")
    grant(user, name="multi's sidecar", namespaces="default", pods="multi", containers="sidecar")
    client.force_login(user)
    page = client.get(WORKSPACE).content.decode()
    assert open_buttons(page) == {
        ("kubesim", "dev", "api", "main"),
        ("kubesim", "default", "multi", "sidecar"),  # the pod's button opens what it may
    }
    assert 'data-namespace="prod"' not in page
    assert ">web<" not in page and ">db<" not in page
    # One container it may open: no list of containers under the pod.
    assert "Containers of multi" not in page


def test_users_who_may_open_nothing_see_no_pods(client: Client, kubesim_settings: Any) -> None:
    client.force_login(get_user_model().objects.create_user("nobody", password="pw"))
    page = client.get(WORKSPACE).content.decode()
    assert open_buttons(page) == set()
    assert "No pods here that you may open." in page


def test_an_unreachable_cluster_is_shown_as_such(
    client: Client, settings: Any, tmp_path: Any
) -> None:
    client.force_login(make_user("sam", everywhere=True))
    settings.TERMINALS = {"CLUSTERS": {"gone": {"kubeconfig": str(tmp_path / "missing")}}}
    page = client.get(WORKSPACE).content.decode()
    assert "Cluster &#x27;gone&#x27; is not configured" in page
    assert 'role="alert"' in page


def test_the_portal_and_the_header_link_to_the_workspace(
    client: Client, kubesim_settings: Any
) -> None:
    client.force_login(make_user("sam", everywhere=True))
    portal = client.get("/").content.decode()
    assert f'<a class="open-workspace" href="{WORKSPACE}">Open the workspace</a>' in portal
    terminal = client.get("/terminals/kubesim/default/web/?container=main").content.decode()
    assert f'<a href="{WORKSPACE}">Workspace</a>' in terminal

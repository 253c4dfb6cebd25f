"""The portal and the terminal page, as a logged-in user sees them."""

import pytest
from django.contrib.auth import get_user_model

from tests.fixtures.users import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = make_user("sam", everywhere=True)
    client.force_login(user)
    return user


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    login = client.get(response["Location"])
    assert b'name="username"' in login.content and b"csrfmiddlewaretoken" in login.content


def test_the_portal_lists_pods_with_a_link_per_container(client, staff, kubesim_settings):
    page = client.get("/").content.decode()
    assert 'id="pod-filter"' in page
    assert "/terminals/kubesim/default/web/?container=main" in page
    assert "/terminals/kubesim/default/multi/?container=app" in page
    assert "/terminals/kubesim/default/multi/?container=sidecar" in page
    assert "/terminals/kubesim/prod/db/?container=main" in page
    # A completed pod is listed but cannot be opened.
    assert "/terminals/kubesim/default/done/" not in page
    assert "Succeeded" in page and "not running" in page


def test_users_who_may_open_nothing_see_no_pods(client, kubesim_settings):
    client.force_login(get_user_model().objects.create_user("nobody", password="pw"))
    page = client.get("/").content.decode()
    assert "/terminals/kubesim/" not in page
    assert "No pods here that you may open." in page


def test_an_unreachable_cluster_is_shown_as_such(client, staff, settings, tmp_path):
    settings.TERMINALS = {"CLUSTERS": {"gone": {"kubeconfig": str(tmp_path / "missing")}}}
    page = client.get("/").content.decode()
    assert "Cluster &#x27;gone&#x27; is not configured" in page


def test_the_terminal_page_carries_the_socket_path(client, staff, kubesim_settings):
    page = client.get("/terminals/kubesim/default/web/?container=main").content.decode()
    assert 'data-socket-path="/ws/terminals/kubesim/default/web/"' in page
    assert 'data-container="main"' in page
    assert "terminals/vendor/xterm/xterm.css" in page
    assert "terminals/js/terminal.js" in page


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/terminals/elsewhere/default/web/", 404),
        ("/terminals/kubesim/default/Bad_Pod/", 404),
        ("/terminals/kubesim/default/web/?container=a%20b", 404),
        ("/terminals/kubesim/default/web/?command=vi", 403),
    ],
)
def test_bad_terminal_urls_are_refused(client, staff, kubesim_settings, path, status):
    assert client.get(path).status_code == status


def test_users_without_permission_get_403_on_the_page(client, kubesim_settings):
    client.force_login(get_user_model().objects.create_user("nobody", password="pw"))
    assert client.get("/terminals/kubesim/default/web/").status_code == 403


def test_a_refused_page_says_why_in_the_site_layout_and_links_back(client, kubesim_settings):
    client.force_login(get_user_model().objects.create_user("nobody", password="pw"))
    response = client.get("/terminals/kubesim/default/web/")
    page = response.content.decode()
    assert response.status_code == 403
    assert "You may not open a terminal on kubesim/default/web" in page
    assert 'class="site-header"' in page and 'href="/">Back to your pods' in page


def test_a_missing_page_says_what_is_missing_in_the_site_layout(client, staff, kubesim_settings):
    response = client.get("/terminals/elsewhere/default/web/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "No such cluster." in page and 'href="/">Back to your pods' in page
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "There is nothing at /no/such/page/" in response.content.decode()


def test_a_server_error_gets_the_site_layout_and_no_details(client):
    from django.views.defaults import server_error

    response = server_error(client.request().wsgi_request)
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in page and 'href="/">Back to your pods' in page
    assert "Traceback" not in page

"""Single sign-on in-process: settings from the environment, the backend's users, groups and
token checks, and the login page's two ways in (webshell/oidc.py, webshell/oidc_settings.py).

The browser test through a real provider is tests/test_browser_oidc.py.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from tests.fixtures.users import make_user
from webshell import oidc
from webshell.oidc_settings import (
    BACKEND,
    PASSWORD_BACKEND,
    authentication_backends,
    content_security_policy,
    oidc_settings,
)

ISSUER = "https://idp.example.test/realms/team"
CLIENT_ID = "webshell"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
ENVIRONMENT = {
    "WEBSHELL_OIDC_ISSUER": ISSUER,
    "WEBSHELL_OIDC_CLIENT_ID": CLIENT_ID,
    "WEBSHELL_OIDC_CLIENT_SECRET": "secret",
    "WEBSHELL_OIDC_PROVIDER_NAME": "Team IdP",
    "WEBSHELL_OIDC_GROUP_PATTERN": "ops|dev|team-.*",
    # Explicit endpoints: nothing here fetches a discovery document.
    "WEBSHELL_OIDC_AUTHORIZATION_ENDPOINT": f"{ISSUER}/auth",
    "WEBSHELL_OIDC_TOKEN_ENDPOINT": f"{ISSUER}/token",
    "WEBSHELL_OIDC_JWKS_ENDPOINT": f"{ISSUER}/jwks",
}


def apply(settings: Any, environment: dict[str, str]) -> None:
    """What the settings modules do with these variables."""
    values = oidc_settings(environment)
    for name, value in values.items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = authentication_backends(
        settings.AUTHENTICATION_BACKENDS, values
    )


@pytest.fixture
def sso(settings: Any) -> Any:
    apply(settings, ENVIRONMENT)
    settings.OIDC_RP_IDP_SIGN_KEY = PUBLIC_PEM  # instead of the provider's JWKS
    return settings


@pytest.fixture
def backend(sso: Any) -> oidc.OIDCBackend:
    backend = oidc.OIDCBackend()
    backend.request = RequestFactory().get("/oidc/callback/")
    return backend


def token(**claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "u-1",
        "iat": now,
        "exp": now + 300,
        "nonce": "the-nonce",
        **claims,
    }
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, KEY, algorithm="RS256", headers={"kid": "k"})


def groups_of(user: Any) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


# Settings.


def test_nothing_set_means_single_sign_on_off_and_local_login_on() -> None:
    values = oidc_settings({})
    assert values == {"WEBSHELL_OIDC_ENABLED": False, "WEBSHELL_LOCAL_LOGIN": True}
    backends = ["a", PASSWORD_BACKEND, "b"]
    assert authentication_backends(backends, values) == backends


def test_the_defaults_with_an_issuer() -> None:
    values = oidc_settings({"WEBSHELL_OIDC_ISSUER": ISSUER + "/", "WEBSHELL_OIDC_CLIENT_ID": "c"})
    assert values["WEBSHELL_OIDC_ISSUER"] == ISSUER
    assert values["OIDC_RP_SCOPES"] == "openid email profile groups"
    assert values["WEBSHELL_OIDC_GROUPS_CLAIM"] == "groups"
    assert values["WEBSHELL_OIDC_USERNAME_CLAIM"] == "preferred_username"
    assert values["WEBSHELL_OIDC_GROUP_PREFIX"] == "oidc:"
    assert values["OIDC_RP_SIGN_ALGO"] == "RS256" and values["OIDC_USE_PKCE"] is True
    assert "OIDC_OP_TOKEN_ENDPOINT" not in values  # discovered at the first sign-in


def test_the_backend_follows_the_password_backend_which_local_login_off_removes() -> None:
    backends = ["axes", PASSWORD_BACKEND, "terminals"]
    on = oidc_settings(ENVIRONMENT)
    assert authentication_backends(backends, on) == ["axes", PASSWORD_BACKEND, BACKEND, "terminals"]
    off = oidc_settings({**ENVIRONMENT, "WEBSHELL_LOCAL_LOGIN": "0"})
    assert authentication_backends(backends, off) == ["axes", BACKEND, "terminals"]


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WEBSHELL_LOCAL_LOGIN": "0"}, "nobody could log in|no single sign-on"),
        ({"WEBSHELL_OIDC_ISSUER": ISSUER}, "WEBSHELL_OIDC_CLIENT_ID"),
        ({**ENVIRONMENT, "WEBSHELL_OIDC_GROUP_PATTERN": "ops("}, "not a regular expression"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_fix(environment, message) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        oidc_settings(environment)


def test_forms_may_lead_to_the_provider_and_nowhere_else() -> None:
    policy = {"default-src": ["'self'"], "form-action": ["'self'"]}
    values = oidc_settings(
        {**ENVIRONMENT, "WEBSHELL_OIDC_END_SESSION_ENDPOINT": "https://logout.example.test/x"}
    )
    result = content_security_policy(policy, values)
    assert result["form-action"] == [
        "'self'",
        "https://idp.example.test",
        "https://logout.example.test",
    ]
    assert policy["form-action"] == ["'self'"]  # not changed in place
    assert content_security_policy(policy, oidc_settings({})) == policy


# Users and groups.


@pytest.mark.django_db
def test_a_first_sign_in_creates_the_user_without_a_password_and_with_the_groups(backend) -> None:
    claims = {
        "sub": "u-1",
        "preferred_username": "olga",
        "email": "olga@example.test",
        "given_name": "Olga",
        "family_name": "Ops",
        "groups": ["ops", "team-db", "finance"],
        "amr": ["pwd", "otp"],
    }
    assert backend.verify_claims(claims)
    user = backend.create_user(claims)
    assert user.username == "olga" and user.email == "olga@example.test"
    assert (user.first_name, user.last_name) == ("Olga", "Ops")
    assert not user.has_usable_password()
    # Only the groups the pattern takes, with the prefix.
    assert groups_of(user) == {"oidc:ops", "oidc:team-db"}
    assert backend.request.webshell_oidc_amr == ["pwd", "otp"]


@pytest.mark.django_db
def test_each_sign_in_sets_the_groups_the_directory_has_now_and_leaves_others_alone(
    backend,
) -> None:
    user = get_user_model().objects.create_user("olga")  # no password: made by a sign-in
    hand_made = [Group.objects.create(name=name) for name in ("auditors", "oidc:legacy-x")]
    user.groups.add(*hand_made)
    backend.update_user(user, {"preferred_username": "olga", "groups": ["ops", "dev"]})
    assert groups_of(user) == {"auditors", "oidc:legacy-x", "oidc:ops", "oidc:dev"}

    # Removed from "ops" in the directory: out of oidc:ops at this sign-in.
    backend.update_user(user, {"preferred_username": "olga", "groups": ["dev"]})
    assert groups_of(user) == {"auditors", "oidc:legacy-x", "oidc:dev"}
    # No groups claim at all: out of every group the provider manages, and only those.
    backend.update_user(user, {"preferred_username": "olga"})
    assert groups_of(user) == {"auditors", "oidc:legacy-x"}


@pytest.mark.django_db
def test_an_empty_prefix_manages_only_the_groups_the_pattern_matches(backend, settings) -> None:
    settings.WEBSHELL_OIDC_GROUP_PREFIX = ""
    settings.WEBSHELL_OIDC_GROUP_PATTERN = "team-.*"
    user = get_user_model().objects.create_user("olga")
    user.groups.add(Group.objects.create(name="auditors"), Group.objects.create(name="team-old"))
    backend.update_user(user, {"groups": ["team-db", "ops"]})
    assert groups_of(user) == {"auditors", "team-db"}


@pytest.mark.django_db
def test_an_access_rule_of_a_group_follows_the_directory(backend) -> None:
    from terminals.permissions import ExecTarget
    from tests.fixtures.users import grant

    grant(Group.objects.create(name="oidc:ops"), namespaces="prod", name="ops in prod")
    user = get_user_model().objects.create_user("olga")
    target = ExecTarget("kubesim", "prod", "db", "main")
    backend.update_user(user, {"groups": ["ops"]})
    assert get_user_model().objects.get(pk=user.pk).has_perm("terminals.exec_pod", target)
    backend.update_user(user, {"groups": ["dev"]})
    assert not get_user_model().objects.get(pk=user.pk).has_perm("terminals.exec_pod", target)


@pytest.mark.parametrize(
    ("claims", "username"),
    [
        ({"preferred_username": "olga", "email": "o@x.test", "sub": "1"}, "olga"),
        ({"email": "o@x.test", "sub": "1"}, "o@x.test"),
        ({"sub": "1"}, "1"),
        ({"preferred_username": "  ", "sub": "1"}, "1"),
    ],
)
def test_the_username_comes_from_the_claim_then_email_then_subject(
    backend, claims, username
) -> None:
    assert backend.username(claims) == username


def test_the_username_claim_is_configurable(backend, settings) -> None:
    settings.WEBSHELL_OIDC_USERNAME_CLAIM = "upn"
    assert backend.username({"upn": "olga@corp", "preferred_username": "x"}) == "olga@corp"


@pytest.mark.django_db
def test_a_local_account_with_a_password_is_not_taken_over(backend, settings) -> None:
    local = make_user("admin")
    with pytest.raises(oidc.SignInRefused, match="WEBSHELL_OIDC_LINK_LOCAL_USERS"):
        backend.update_user(local, {"preferred_username": "admin", "groups": ["ops"]})
    assert backend.request.webshell_oidc_refusal.startswith("A local account named admin")
    assert groups_of(local) == set()
    settings.WEBSHELL_OIDC_LINK_LOCAL_USERS = True
    backend.update_user(local, {"preferred_username": "admin", "groups": ["ops"]})
    assert groups_of(local) == {"oidc:ops"}


def test_allowed_domains_refuse_other_and_unverified_addresses(backend, settings) -> None:
    settings.WEBSHELL_OIDC_ALLOWED_DOMAINS = ["example.test"]
    assert backend.verify_claims({"sub": "1", "email": "a@Example.test"})
    for claims in (
        {"sub": "1", "email": "a@gmail.com"},
        {"sub": "1", "email": "a@example.test", "email_verified": False},
        {"sub": "1"},
    ):
        with pytest.raises(oidc.SignInRefused, match="domain"):
            backend.verify_claims(claims)


def test_amr_is_a_list_of_strings() -> None:
    assert oidc.amr_list(["pwd", "otp", 3]) == ["pwd", "otp"]
    assert oidc.amr_list("pwd") == ["pwd"]
    assert oidc.amr_list(None) == []


# The ID token.


def test_a_good_id_token_is_accepted(backend) -> None:
    claims = backend.verify_token(token(amr=["pwd"]), nonce="the-nonce")
    assert claims["sub"] == "u-1" and claims["amr"] == ["pwd"]


@pytest.mark.parametrize(
    ("claims", "nonce", "message"),
    [
        ({}, "another-nonce", "nonce does not match"),
        ({"nonce": None}, "the-nonce", "nonce does not match"),
        ({}, None, "nonce does not match"),
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 420}, "the-nonce", "expired"),
        ({"aud": "another-client"}, "the-nonce", "not valid for this site"),
        ({"iss": "https://evil.example.test"}, "the-nonce", "not valid for this site"),
        ({"exp": None}, "the-nonce", "not valid for this site"),
    ],
)
def test_a_bad_id_token_is_refused_with_a_reason(backend, claims, nonce, message) -> None:
    with pytest.raises(oidc.SignInRefused) as refused:
        backend.verify_token(token(**claims), nonce=nonce)
    assert message in refused.value.message
    assert backend.request.webshell_oidc_refusal == refused.value.message


def test_an_expired_token_within_the_leeway_is_accepted(backend, settings) -> None:
    settings.WEBSHELL_OIDC_LEEWAY = 60
    now = int(time.time())
    backend.verify_token(token(exp=now - 30, iat=now - 330), nonce="the-nonce")


def test_a_token_signed_another_way_is_refused(backend) -> None:
    forged = jwt.encode(
        {"iss": ISSUER, "aud": CLIENT_ID, "sub": "u-1", "nonce": "the-nonce"},
        "secret" * 8,  # a client secret as an HMAC key: the algorithm confusion attack
        algorithm="HS256",
    )
    with pytest.raises(oidc.SignInRefused) as refused:
        backend.verify_token(forged, nonce="the-nonce")
    assert "unexpected algorithm" in refused.value.message
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    signed_elsewhere = jwt.encode(
        {"iss": ISSUER, "aud": CLIENT_ID, "sub": "u", "nonce": "the-nonce", "iat": now,
         "exp": now + 60},
        other_key,
        algorithm="RS256",
    )  # fmt: skip
    with pytest.raises(oidc.SignInRefused) as refused:
        backend.verify_token(signed_elsewhere, nonce="the-nonce")
    assert "not valid for this site" in refused.value.message


# Pages.


@pytest.mark.django_db
def test_without_single_sign_on_the_login_page_is_the_password_form(client) -> None:
    page = client.get("/accounts/login/").content.decode()
    assert 'name="password"' in page and "Sign in with" not in page
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


@pytest.mark.django_db
def test_the_login_page_offers_the_provider_beside_the_password_form(client, sso) -> None:
    page = client.get("/accounts/login/?next=/workspace/").content.decode()
    assert "Sign in with Team IdP" in page and 'name="password"' in page
    redirect = client.get("/oidc/authenticate/?next=/workspace/")
    assert redirect.status_code == 302 and redirect["Location"].startswith(f"{ISSUER}/auth?")
    assert "code_challenge_method=S256" in redirect["Location"]
    assert (
        "nonce=" in redirect["Location"]
        and "scope=openid+email+profile+groups" in redirect["Location"]
    )


@pytest.mark.django_db
def test_with_local_login_off_a_password_is_refused_everywhere(client, settings) -> None:
    apply(settings, {**ENVIRONMENT, "WEBSHELL_LOCAL_LOGIN": "0"})
    make_user("ann")
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with Team IdP" in page and 'name="password"' not in page
    refused = client.post("/accounts/login/", {"username": "ann", "password": "pw-for-tests"})
    assert refused.status_code == 403
    assert "Passwords are switched off here" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    # No backend checks a password at all, whoever asks.
    request = RequestFactory().post("/accounts/login/")
    assert authenticate(request, username="ann", password="pw-for-tests") is None
    # The admin's login page leads to the site's.
    admin = client.get("/admin/login/?next=/admin/")
    assert admin.status_code == 302 and admin["Location"] == "/accounts/login/?next=%2Fadmin%2F"


@pytest.mark.django_db
def test_an_unknown_state_is_refused_with_a_message_and_nobody_logged_in(client, sso) -> None:
    client.force_login(make_user("ann"))
    response = client.get("/oidc/callback/?code=abc&state=forged", follow=True)
    assert response.redirect_chain[-1][0] == "/accounts/login/"
    assert "state does not match" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_the_providers_refusal_is_shown(client, sso) -> None:
    response = client.get(
        "/oidc/callback/?error=access_denied&error_description=End-User+aborted&state=s",
        follow=True,
    )
    assert "The identity provider refused the sign-in: End-User aborted" in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_a_provider_that_cannot_be_reached_is_said_on_the_login_page(client, settings) -> None:
    apply(settings, {"WEBSHELL_OIDC_ISSUER": "http://127.0.0.1:9", "WEBSHELL_OIDC_CLIENT_ID": "c"})
    settings.WEBSHELL_OIDC_DISCOVERY_TIMEOUT = 2
    response = client.get("/oidc/authenticate/", follow=True)
    assert response.redirect_chain[-1][0] == "/accounts/login/"
    assert "The identity provider could not be reached." in response.content.decode()


def test_discovery_refuses_a_document_of_another_issuer(settings, monkeypatch) -> None:
    apply(settings, {"WEBSHELL_OIDC_ISSUER": ISSUER, "WEBSHELL_OIDC_CLIENT_ID": "c"})

    class Answer:
        def raise_for_status(self) -> None:
            pass

        def json(self) -> dict[str, str]:
            return {"issuer": "https://evil.example.test", "token_endpoint": "x"}

    monkeypatch.setattr(oidc.requests, "get", lambda *args, **kwargs: Answer())
    oidc._discovered.clear()
    with pytest.raises(oidc.ProviderUnavailable, match="names the issuer"):
        oidc.discovery()

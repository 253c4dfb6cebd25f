"""Single sign-on with OpenID Connect: the backend and the views around mozilla-django-oidc.

At each sign-in the provider's claims (the ID token's, then the userinfo endpoint's) create or
update the Django user named by ``WEBSHELL_OIDC_USERNAME_CLAIM`` and set the user's Django groups
named ``WEBSHELL_OIDC_GROUP_PREFIX`` + a provider group matching ``WEBSHELL_OIDC_GROUP_PATTERN``:
joined when the directory lists them, left when it no longer does. Groups outside that prefix
and pattern are never touched, so rules granted by hand stay. The ID token is checked for its
signature, issuer, audience, expiry and the sign-in's nonce; any refusal lands on the login page
with a message saying why, and nobody is logged in.

Settings: ``webshell/oidc_settings.py``. The session keeps ``oidc_id_token`` (the hint for
RP-initiated logout) and ``oidc_amr``, the provider's authentication methods (a list).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.translation import gettext as _
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from .views import LogoutView as LocalLogoutView

logger = logging.getLogger(__name__)

#: Where a discovery document's endpoints go (``OIDC_OP_*`` settings of mozilla-django-oidc).
DISCOVERED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
    "OIDC_OP_END_SESSION_ENDPOINT": "end_session_endpoint",
}
DISCOVERY_TTL = 3600.0  # seconds: providers change endpoints rarely, keys are fetched each time
# Attributes of the callback's request: a refusal's message, and what login_success keeps.
REFUSAL = "webshell_oidc_refusal"
ID_TOKEN = "webshell_oidc_id_token"
AMR = "webshell_oidc_amr"


class SignInRefused(SuspiciousOperation):
    """A sign-in that must not log anyone in; ``message`` is for the user, ``detail`` the log."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(detail or message)
        self.message = message


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be had."""


def conf(name: str) -> Any:
    """A setting of single sign-on (the settings modules set them from the environment)."""
    return getattr(settings, name)


def enabled() -> bool:
    return bool(getattr(settings, "WEBSHELL_OIDC_ENABLED", False))


def local_login() -> bool:
    return bool(getattr(settings, "WEBSHELL_LOCAL_LOGIN", True))


# Discovery.

_discovery_lock = threading.Lock()
_discovered: dict[str, tuple[float, dict[str, Any]]] = {}


def discovery() -> dict[str, Any]:
    """The issuer's ``/.well-known/openid-configuration``, fetched once an hour at most."""
    issuer: str = conf("WEBSHELL_OIDC_ISSUER")
    with _discovery_lock:
        cached = _discovered.get(issuer)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            response = requests.get(
                url,
                timeout=conf("WEBSHELL_OIDC_DISCOVERY_TIMEOUT"),
                verify=conf("OIDC_VERIFY_SSL"),
            )
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(f"{url}: {exc}") from exc
        if not isinstance(document, dict) or document.get("issuer", "").rstrip("/") != issuer:
            found = document.get("issuer") if isinstance(document, dict) else None
            raise ProviderUnavailable(f"{url} names the issuer {found!r}, not {issuer!r}")
        _discovered[issuer] = (time.monotonic() + DISCOVERY_TTL, document)
        return document


def oidc_setting(name: str, *default: Any) -> Any:
    """A mozilla-django-oidc setting; endpoints not set explicitly come from discovery."""
    if name in DISCOVERED and not hasattr(settings, name) and enabled():
        value = discovery().get(DISCOVERED[name])
        if value:
            return value
        if default:
            return default[0]
        raise ProviderUnavailable(f"the provider's discovery document has no {DISCOVERED[name]}")
    return import_from_settings(name, *default)


# The backend.


class OIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """mozilla-django-oidc's backend with the web shell's users, groups and token checks.

    Endpoints are resolved when a sign-in needs them, not when Django loads the backend (at
    every request of a signed-in user), so a provider that is down only stops new sign-ins.
    """

    request: HttpRequest

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()

    get_settings = staticmethod(oidc_setting)

    # The attributes mozilla-django-oidc's methods read, resolved on use.
    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:
        return str(oidc_setting("OIDC_OP_TOKEN_ENDPOINT"))

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str | None:
        return oidc_setting("OIDC_OP_USER_ENDPOINT", None)  # type: ignore[no-any-return]

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return str(oidc_setting("OIDC_OP_JWKS_ENDPOINT"))

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:
        return str(conf("OIDC_RP_CLIENT_ID"))

    @property
    def OIDC_RP_CLIENT_SECRET(self) -> str:
        return str(conf("OIDC_RP_CLIENT_SECRET"))

    @property
    def OIDC_RP_SIGN_ALGO(self) -> str:
        return str(conf("OIDC_RP_SIGN_ALGO"))

    @property
    def OIDC_RP_IDP_SIGN_KEY(self) -> Any:
        return getattr(settings, "OIDC_RP_IDP_SIGN_KEY", None)

    def refuse(self, message: str, detail: str = "") -> SignInRefused:
        """Remember why for the callback view's message, and say it in the log."""
        request = getattr(self, "request", None)
        if request is not None:
            setattr(request, REFUSAL, message)
        logger.warning("OIDC sign-in refused: %s", detail or message)
        return SignInRefused(message, detail)

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        """The code flow; a provider that does not answer or refuses the code is a refusal."""
        if not enabled() or request is None or "nonce" not in kwargs:
            return None  # a password login, or single sign-on is off
        try:
            return super().authenticate(request, **kwargs)
        except ProviderUnavailable as exc:
            raise self.refuse(_("The identity provider could not be reached."), str(exc)) from exc
        except requests.RequestException as exc:
            response = getattr(exc, "response", None)
            detail = response.text[:300] if response is not None else str(exc)
            raise self.refuse(
                _("The identity provider did not accept this sign-in. Please sign in again."),
                f"token or userinfo request failed: {detail}",
            ) from exc

    def get_user(self, user_id: Any) -> Any:
        """As Django's: an inactive user is nobody (mozilla-django-oidc's would return them)."""
        return ModelBackend.get_user(self, user_id)

    # The ID token.

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Signature, issuer, audience, times, and the nonce this browser's sign-in sent."""
        if self.OIDC_RP_SIGN_ALGO.startswith(("RS", "ES", "PS")):
            key = self.OIDC_RP_IDP_SIGN_KEY or self.retrieve_matching_jwk(token)
        else:
            key = self.OIDC_RP_CLIENT_SECRET
        payload = self.get_payload_data(token, key)
        nonce = kwargs.get("nonce")
        if not nonce or payload.get("nonce") != nonce:
            raise self.refuse(
                _(
                    "The identity provider's answer does not belong to this sign-in (its nonce "
                    "does not match). Please sign in again."
                ),
                "ID token nonce does not match the sign-in's",
            )
        return payload

    def get_payload_data(self, token: str, key: Any) -> dict[str, Any]:
        """The verified claims of a JWT; mozilla-django-oidc checks neither issuer nor audience."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            message = _("The identity provider sent a malformed ID token.")
            raise self.refuse(message, str(exc)) from exc
        if algorithm != self.OIDC_RP_SIGN_ALGO:
            raise self.refuse(
                _("The identity provider signed the ID token with an unexpected algorithm."),
                f"alg {algorithm!r}, expected {self.OIDC_RP_SIGN_ALGO!r}",
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=conf("WEBSHELL_OIDC_ISSUER"),
                leeway=conf("WEBSHELL_OIDC_LEEWAY"),
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise self.refuse(
                _(
                    "The identity provider's ID token has expired. If this repeats, the clocks "
                    "of this server and the provider disagree."
                ),
                "ID token expired",
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise self.refuse(
                _("The identity provider's ID token is not valid for this site."),
                f"ID token refused: {exc}",
            ) from exc
        return claims

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        """The ID token's claims, overlaid with the userinfo endpoint's (if it has one): some
        providers put groups only in the one, some only in the other."""
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            response = requests.get(
                self.OIDC_OP_USER_ENDPOINT,
                headers={"Authorization": f"Bearer {access_token}"},
                verify=conf("OIDC_VERIFY_SSL"),
                timeout=conf("OIDC_TIMEOUT"),
            )
            response.raise_for_status()
            if response.headers.get("content-type", "").lower().startswith("application/jwt"):
                info = self.get_payload_data(response.text, self._userinfo_key(response.text))
            else:
                info = response.json()
            if info.get("sub") != payload.get("sub"):
                raise self.refuse(
                    _("The identity provider's answers disagree about who you are."),
                    "userinfo sub differs from the ID token's",
                )
            claims.update(info)
        claims["amr"] = payload.get("amr")  # the authentication itself: the ID token's word
        return claims

    def _userinfo_key(self, token: str) -> Any:
        """The key of a signed userinfo answer."""
        return self.OIDC_RP_IDP_SIGN_KEY or self.retrieve_matching_jwk(token)

    def store_tokens(self, access_token: str, id_token: str) -> None:
        """Keep the ID token and ``amr`` on the request: the callback view puts them in the
        session after ``login()``, which would flush them when another user was logged in."""
        setattr(self.request, ID_TOKEN, id_token)

    # Users.

    def username(self, claims: Mapping[str, Any]) -> str:
        """The configured claim, else the e-mail address, else the subject."""
        for claim in (conf("WEBSHELL_OIDC_USERNAME_CLAIM"), "email", "sub"):
            value = claims.get(claim)
            if isinstance(value, str) and value.strip():
                return value.strip()[:150]
        return ""

    def verify_claims(self, claims: Mapping[str, Any]) -> bool:
        """A name to go by and, where domains are listed, a verified address in one of them."""
        if not self.username(claims):
            raise self.refuse(_("The identity provider did not say who you are."), "no username")
        domains: list[str] = conf("WEBSHELL_OIDC_ALLOWED_DOMAINS")
        if domains:
            email = str(claims.get("email") or "")
            domain = email.rpartition("@")[2].lower()
            if domain not in domains or claims.get("email_verified") is False:
                raise self.refuse(
                    _("Your account's e-mail domain may not sign in here."),
                    f"e-mail domain {domain!r} is not in WEBSHELL_OIDC_ALLOWED_DOMAINS",
                )
        return True

    def filter_users_by_claims(self, claims: Mapping[str, Any]) -> Any:
        return self.UserModel.objects.filter(username=self.username(claims))

    def create_user(self, claims: Mapping[str, Any]) -> Any:
        """A new user without a password: they sign in through the provider only."""
        user = self.UserModel.objects.create_user(self.username(claims))
        logger.info("OIDC sign-in created the user %s", user.get_username())
        return self.update_user(user, claims, created=True)

    def update_user(self, user: Any, claims: Mapping[str, Any], created: bool = False) -> Any:
        """Name, e-mail and the provider's groups, as the directory has them now."""
        if (
            not created
            and user.has_usable_password()
            and not conf("WEBSHELL_OIDC_LINK_LOCAL_USERS")
        ):
            raise self.refuse(
                _(
                    "A local account named %(username)s exists here; an administrator must "
                    "allow it to sign in through the identity provider."
                )
                % {"username": user.get_username()},
                f"{user.get_username()} has a password; WEBSHELL_OIDC_LINK_LOCAL_USERS is off",
            )
        fields = {
            "email": claims.get("email"),
            "first_name": claims.get("given_name"),
            "last_name": claims.get("family_name"),
        }
        changed = [
            name
            for name, value in fields.items()
            if isinstance(value, str) and getattr(user, name) != value[:150]
        ]
        for name in changed:
            setattr(user, name, str(fields[name])[:150])
        if changed:
            user.save(update_fields=changed)
        set_groups(user, claims.get(conf("WEBSHELL_OIDC_GROUPS_CLAIM")))
        setattr(self.request, AMR, amr_list(claims.get("amr")))
        return user


def amr_list(value: Any) -> list[str]:
    """The ``amr`` claim as a list of strings (absent or malformed: empty)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def managed_groups(provider_groups: Any) -> set[str]:
    """The Django group names the provider's groups map to: prefix + name, pattern-matched."""
    prefix: str = conf("WEBSHELL_OIDC_GROUP_PREFIX")
    pattern = re.compile(conf("WEBSHELL_OIDC_GROUP_PATTERN"))
    if isinstance(provider_groups, str):
        provider_groups = [provider_groups]
    if not isinstance(provider_groups, list | tuple):
        return set()
    names = set()
    for group in provider_groups:
        if not isinstance(group, str) or not pattern.fullmatch(group):
            continue
        if len(prefix + group) > 150:
            logger.warning("OIDC group %r is too long for a Django group; ignored", group)
            continue
        names.add(prefix + group)
    return names


def is_managed(name: str) -> bool:
    """Whether a Django group is the provider's to give and take: prefix + matching name."""
    prefix: str = conf("WEBSHELL_OIDC_GROUP_PREFIX")
    pattern = conf("WEBSHELL_OIDC_GROUP_PATTERN")
    return name.startswith(prefix) and re.fullmatch(pattern, name[len(prefix) :]) is not None


@transaction.atomic
def set_groups(user: Any, provider_groups: Any) -> None:
    """Join the groups the directory lists, leave the managed ones it no longer does."""
    wanted = managed_groups(provider_groups)
    current = {group.name: group for group in user.groups.all() if is_managed(group.name)}
    leave = [group for name, group in current.items() if name not in wanted]
    join = [Group.objects.get_or_create(name=name)[0] for name in sorted(wanted - set(current))]
    if leave:
        user.groups.remove(*leave)
    if join:
        user.groups.add(*join)
    if leave or join:
        logger.info(
            "OIDC sign-in of %s: joined %s, left %s",
            user.get_username(),
            sorted(group.name for group in join) or "none",
            sorted(group.name for group in leave) or "none",
        )


# Views.


def _require_enabled() -> None:
    if not enabled():
        raise Http404("Single sign-on is not configured.")


class AuthenticateView(OIDCAuthenticationRequestView):  # type: ignore[misc]
    """Send the browser to the provider; say so on the login page when it cannot be reached."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)  # no discovery yet

    def get(self, request: HttpRequest) -> HttpResponse:
        _require_enabled()
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except ProviderUnavailable as exc:
            logger.warning("OIDC discovery failed: %s", exc)
            messages.error(request, _("The identity provider could not be reached."))
            return HttpResponseRedirect(resolve_url("login"))
        self.OIDC_RP_CLIENT_ID = conf("OIDC_RP_CLIENT_ID")
        return super().get(request)  # type: ignore[no-any-return]


class CallbackView(OIDCAuthenticationCallbackView):  # type: ignore[misc]
    """The provider's answer: log the user in, or say on the login page why not."""

    def get(self, request: HttpRequest) -> HttpResponse:
        _require_enabled()
        if request.GET.get("error"):
            reason = request.GET.get("error_description") or request.GET["error"]
            logger.warning("OIDC provider refused the sign-in: %s", reason[:300])
            setattr(
                request,
                REFUSAL,
                _("The identity provider refused the sign-in: %(reason)s")
                % {"reason": reason[:300]},
            )
        elif "code" in request.GET and "state" in request.GET:
            state = request.GET["state"]
            if state not in request.session.get("oidc_states", {}):
                # Not this browser's sign-in, or one already used (a replayed answer).
                logger.warning("OIDC callback with an unknown or used state")
                setattr(
                    request,
                    REFUSAL,
                    _(
                        "This sign-in answer is unknown or was already used (its state does not "
                        "match). Please sign in again."
                    ),
                )
                return self.login_failure()
        try:
            return super().get(request)  # type: ignore[no-any-return]
        except (SignInRefused, PermissionDenied):
            return self.login_failure()
        except SuspiciousOperation as exc:
            logger.warning("OIDC sign-in refused: %s", exc)
            return self.login_failure()

    def login_failure(self) -> HttpResponse:
        """Nobody is logged in: log out whoever was, and say why on the login page."""
        message = getattr(self.request, REFUSAL, None)
        if message is None:
            user = getattr(self, "user", None)
            if user is not None and not user.is_active:
                message = _("Your account here is deactivated.")
            else:
                message = _("The sign-in did not succeed. Please sign in again.")
        from django.contrib.auth import logout

        if getattr(self.request, "user", None) and self.request.user.is_authenticated:
            logout(self.request)
        messages.error(self.request, message)
        return HttpResponseRedirect(resolve_url("login"))

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        session = self.request.session
        session["oidc_id_token"] = getattr(self.request, ID_TOKEN, None)
        session["oidc_amr"] = getattr(self.request, AMR, [])
        return response  # type: ignore[no-any-return]


class LoginView(auth_views.LoginView):
    """The login page: "Sign in with <provider>", and the password form unless it is off."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = enabled()
        context["oidc_provider_name"] = getattr(settings, "WEBSHELL_OIDC_PROVIDER_NAME", "")
        context["local_login"] = local_login()
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not local_login():
            logger.warning("password login refused: WEBSHELL_LOCAL_LOGIN is off")
            messages.error(
                request, _("Passwords are switched off here: sign in with the identity provider.")
            )
            response = self.get(request, *args, **kwargs)
            response.status_code = 403
            return response
        return super().post(request, *args, **kwargs)


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's password form, unless passwords are off: then the site's login page."""
    from django.contrib import admin

    if local_login():
        return admin.site.login(request)
    query = urlencode({"next": request.GET.get("next", reverse("admin:index"))})
    return HttpResponseRedirect(f"{resolve_url('login')}?{query}")


class LogoutView(LocalLogoutView):
    """Log out here, then at the provider too where it has an ``end_session_endpoint``."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        id_token = request.session.get("oidc_id_token")
        response = super().post(request, *args, **kwargs)
        if not (enabled() and id_token):
            return response
        try:
            endpoint = oidc_setting("OIDC_OP_END_SESSION_ENDPOINT", None)
        except ProviderUnavailable as exc:
            logger.warning("OIDC logout at the provider skipped: %s", exc)
            return response
        if not endpoint:
            return response  # the provider has no RP-initiated logout (Google)
        query = urlencode(
            {
                "id_token_hint": id_token,
                "client_id": conf("OIDC_RP_CLIENT_ID"),
                "post_logout_redirect_uri": request.build_absolute_uri(resolve_url("login")),
            }
        )
        separator = "&" if "?" in endpoint else "?"
        return HttpResponseRedirect(f"{endpoint}{separator}{query}")


__all__ = [
    "AuthenticateView",
    "CallbackView",
    "LoginView",
    "LogoutView",
    "OIDCBackend",
    "SignInRefused",
    "admin_login",
    "discovery",
]

"""The second factor and step-up: what a login session must prove before a terminal opens.

Two requirements, checked by the terminal page (which redirects to the page that meets them)
and again by admission on the WebSocket (which Django's middleware never reaches):

* ``TERMINALS["REQUIRE_MFA"]``: the login session is verified by a second factor, i.e.
  django-otp's session key (``otp_device_id``, written by ``django_otp.login``) names a
  confirmed device of the user, or the OIDC login reported one of ``TERMINALS["MFA_AMR"]`` in
  its ``amr`` claim (kept in ``session["oidc_amr"]`` by the OIDC login). A user with no TOTP
  device is sent to enrol one; a user with one is asked for a code once per login session.
* Step-up (``AccessRule.fresh_auth_minutes``): the session's last authentication (login,
  second factor, or this module's step-up page; ``session["terminals_auth_at"]``) is at most
  that many minutes old, as sudo's timestamp. Where several rules grant the target the least
  demanding applies: a rule only grants, so a rule without step-up that grants the target
  grants it without, and so does a grant that needs no rule (a superuser, another backend).

The recovery codes are django-otp's static device: ten single-use codes shown once when a
device is enrolled and whenever they are made anew.

The django-otp models are imported inside functions: the app stays importable in a project
that does not install django-otp (and so cannot turn ``REQUIRE_MFA`` on: terminals.E018).
"""

from __future__ import annotations

import base64
import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from .conf import get_config
from .permissions import ExecTarget

logger = logging.getLogger(__name__)

#: Epoch seconds of the login session's last authentication (login, second factor, step-up).
AUTH_AT = "terminals_auth_at"
#: The OIDC ID token's ``amr`` claim, a list, stored by the OIDC login.
OIDC_AMR = "oidc_amr"
#: Where django-otp keeps the persistent id of the device that verified the session.
OTP_DEVICE = "otp_device_id"  # django_otp.DEVICE_ID_SESSION_KEY
RECOVERY_CODES = 10
TOTP_NAME = "authenticator"
STATIC_NAME = "recovery codes"


class Need(enum.Enum):
    """What a login session lacks before it may open a terminal."""

    ENROL = "enrol"  # REQUIRE_MFA, and the user has no TOTP device yet
    VERIFY = "verify"  # REQUIRE_MFA, and this login session has not given a code
    STEP_UP = "step_up"  # an access rule asks for a fresher authentication


@dataclass(frozen=True)
class Requirement:
    """A need, and for step-up the freshness asked for."""

    need: Need
    minutes: int | None = None

    @property
    def word(self) -> str:
        """The error code word a refused WebSocket gets (close 4403)."""
        return "step_up_required" if self.need is Need.STEP_UP else "mfa_required"

    @property
    def message(self) -> str:
        """What the terminal page shows when the socket is refused."""
        if self.need is Need.ENROL:
            return _(
                "Opening a terminal needs a second factor, and you have none set up yet: "
                "reload the page to set one up."
            )
        if self.need is Need.VERIFY:
            return _(
                "Opening a terminal needs your second factor in this login session: reload "
                "the page to enter a code."
            )
        minutes = self.minutes or 0
        return ngettext(
            "This target needs an authentication within the last %(minutes)d minute: reload "
            "the page to confirm it is you.",
            "This target needs an authentication within the last %(minutes)d minutes: reload "
            "the page to confirm it is you.",
            minutes,
        ) % {"minutes": minutes}

    def url(self, next_url: str) -> str:
        """The page that meets this need, coming back to ``next_url``."""
        name = {Need.ENROL: "mfa-enrol", Need.VERIFY: "mfa-verify", Need.STEP_UP: "reauth"}
        return with_next(reverse(f"terminals:{name[self.need]}"), next_url)


# The policy: plain functions of the session, the user and the target (ORM work: call them in
# a thread from async code).


def requirement(
    session: Mapping[str, Any], user: Any, target: ExecTarget, now: float | None = None
) -> Requirement | None:
    """What ``user``'s login session still needs before a terminal on ``target``, if anything.

    Call it after the permission check: step-up reads the rules that grant ``target``.
    """
    need = second_factor_requirement(session, user)
    if need is not None:
        return need
    minutes = step_up_minutes(user, target)
    if minutes is not None and not authenticated_within(session, minutes * 60, now):
        return Requirement(Need.STEP_UP, minutes)
    return None


def second_factor_requirement(session: Mapping[str, Any], user: Any) -> Requirement | None:
    """What ``REQUIRE_MFA`` still asks of the login session, if anything.

    A resume asks only this: step-up is for opening a shell, not for coming back to one.
    """
    if get_config()["REQUIRE_MFA"] and not session_verified(session, user):
        return Requirement(Need.VERIFY if has_totp_device(user) else Need.ENROL)
    return None


def session_verified(session: Mapping[str, Any], user: Any) -> bool:
    """True if the login session was verified by a second factor (here or at the provider)."""
    amr = session.get(OIDC_AMR)
    if isinstance(amr, list) and set(map(str, amr)) & set(get_config()["MFA_AMR"]):
        return True
    persistent_id = session.get(OTP_DEVICE)
    if not isinstance(persistent_id, str) or not persistent_id:
        return False
    from django_otp.models import Device

    # As django_otp.middleware.OTPMiddleware, which does not run for WebSockets: the device
    # must still exist, be the user's and be confirmed (deleting it unverifies the session).
    device = Device.from_persistent_id(persistent_id)
    return device is not None and device.user_id == user.pk and bool(device.confirmed)


def has_totp_device(user: Any) -> bool:
    """True if ``user`` has a confirmed TOTP device (else they are sent to enrol one)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return bool(TOTPDevice.objects.devices_for_user(user, confirmed=True).exists())


def step_up_minutes(user: Any, target: ExecTarget) -> int | None:
    """The freshness, in minutes, that the rules granting ``target`` ask of ``user``, if any.

    The least demanding grant applies: None if any granting rule asks none, or if ``target``
    is granted without a rule (a superuser, another backend); else the longest window.
    """
    if user.is_active and user.is_superuser:
        return None
    from .backends import TerminalsBackend

    shells = get_config()["SHELLS"]
    # The backend's own rule list, cached on the user by the permission check just made.
    granting = [rule for rule in TerminalsBackend()._rules(user) if rule.allows(target, shells)]
    if not granting or any(rule.fresh_auth_minutes is None for rule in granting):
        return None
    return max(rule.fresh_auth_minutes for rule in granting if rule.fresh_auth_minutes)


def authenticated_within(
    session: Mapping[str, Any], seconds: float, now: float | None = None
) -> bool:
    """True if the session's last authentication is at most ``seconds`` old."""
    at = session.get(AUTH_AT)
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        return False  # a login from before this was recorded: ask
    age = (time.time() if now is None else now) - at
    return 0 <= age <= seconds


def record_authentication(session: Any, now: float | None = None) -> None:
    """Write down that the user just authenticated (login, second factor, step-up)."""
    session[AUTH_AT] = time.time() if now is None else now


def _on_login(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if session is not None:
        record_authentication(session)


def connect_signals() -> None:
    """Record the time of every login (for step-up)."""
    user_logged_in.connect(_on_login, dispatch_uid="terminals.mfa.record_login")


def with_next(url: str, next_url: str) -> str:
    """``url`` with ``?next=next_url``."""
    return f"{url}?{urlencode({'next': next_url})}"


# The pages.


def _next(request: HttpRequest) -> str:
    """Where to go afterwards: a ``next`` on this site, else the portal."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("terminals:portal")


def _token(request: HttpRequest) -> str:
    """The code typed, without the spaces and dashes people add when copying."""
    return "".join(request.POST.get("token", "").split()).replace("-", "").lower()


def _secret_text(device: Any) -> str:
    """The TOTP secret as authenticator apps take it by hand: base32, in groups of four."""
    secret = base64.b32encode(device.bin_key).decode("ascii").rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _qr_svg(text: str) -> str:
    """``text`` as a QR code, inline SVG drawn here (the secret goes to no other service)."""
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    svg: str = image.to_string(encoding="unicode")
    return svg


def _new_recovery_codes(user: Any) -> list[str]:
    """Replace ``user``'s recovery codes with ten new ones; return them (shown once)."""
    from django_otp.plugins.otp_static.models import StaticDevice, StaticToken

    with transaction.atomic():
        StaticDevice.objects.filter(user=user).delete()
        device = StaticDevice.objects.create(user=user, name=STATIC_NAME, confirmed=True)
        codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
        StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def _verified(request: HttpRequest, device: Any) -> None:
    """Mark the login session verified by ``device``, now."""
    from django_otp import login as otp_login

    otp_login(request, device)
    record_authentication(request.session)


def _show_codes(request: HttpRequest, codes: list[str], next_url: str) -> HttpResponse:
    return render(request, "terminals/mfa/recovery_codes.html", {"codes": codes, "next": next_url})


@never_cache
@login_required
def enrol(request: HttpRequest) -> HttpResponse:
    """Set up a TOTP device: a QR code and the secret, confirmed by a first code.

    Only for a user without a confirmed device: adding one to an account that has one would
    let a stolen password replace the second factor. The unconfirmed device is kept across
    reloads, so that a scanned code stays valid until it is confirmed.
    """
    from django_otp.plugins.otp_totp.models import TOTPDevice

    next_url = _next(request)
    user = request.user
    if has_totp_device(user):
        return redirect(with_next(reverse("terminals:mfa-verify"), next_url))
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_NAME, confirmed=False)
    error = ""
    if request.method == "POST":
        with transaction.atomic():
            locked = TOTPDevice.objects.select_for_update().get(pk=device.pk)
            allowed = bool(locked.verify_is_allowed()[0])
            accepted = allowed and bool(locked.verify_token(_token(request)))
            if accepted:
                locked.confirmed = True
                locked.save(update_fields=["confirmed"])
        if accepted:
            codes = _new_recovery_codes(user)
            _verified(request, locked)
            logger.info("User %s enrolled a TOTP device", user.pk)
            return _show_codes(request, codes, next_url)
        error = (
            _("That code is not right. Check the time on your phone and try the next one.")
            if allowed
            else _throttled()
        )
    return render(
        request,
        "terminals/mfa/enrol.html",
        {
            "qr_svg": _qr_svg(device.config_url),
            "secret": _secret_text(device),
            "next": next_url,
            "error": error,
        },
        status=400 if error else 200,
    )


def _throttled() -> str:
    return _("Too many wrong codes in a row: wait a few seconds, then try again.")


def _check_code(request: HttpRequest) -> tuple[Any, str]:
    """The user's device that accepts the posted code (TOTP or recovery), or the error."""
    from django_otp import devices_for_user, verify_token

    token = _token(request)
    devices = list(devices_for_user(request.user))
    # django-otp waits longer after each wrong code (1 s, 2 s, 4 s…): say so rather than
    # refuse a right code with "not right".
    if any(not device.verify_is_allowed()[0] for device in devices):
        return None, _throttled()
    for device in devices if token else []:
        # verify_token locks the device row, so a code (a recovery code above all) is
        # accepted once even when posted twice at the same moment; it counts failures too.
        verified = verify_token(request.user, device.persistent_id, token)
        if verified is not None:
            return verified, ""
    return None, _("That code is not right, or was used already.")


@never_cache
@login_required
def verify(request: HttpRequest) -> HttpResponse:
    """Ask for a code (from the authenticator, or a recovery code) once per login session."""
    next_url = _next(request)
    if not has_totp_device(request.user):
        return redirect(with_next(reverse("terminals:mfa-enrol"), next_url))
    if request.method == "GET" and session_verified(request.session, request.user):
        return redirect(next_url)
    error = ""
    if request.method == "POST":
        device, error = _check_code(request)
        if device is not None:
            _verified(request, device)
            return redirect(next_url)
        logger.info("User %s gave a wrong second-factor code", request.user.pk)
    return render(
        request,
        "terminals/mfa/verify.html",
        {"next": next_url, "error": error},
        status=400 if error else 200,
    )


@never_cache
@login_required
def recovery(request: HttpRequest) -> HttpResponse:
    """How many recovery codes are left; make ten new ones (the old ones stop working)."""
    from django_otp.plugins.otp_static.models import StaticToken

    next_url = _next(request)
    if not session_verified(request.session, request.user) or not has_totp_device(request.user):
        # Only a session that gave a code may see new codes: a password alone must not.
        return redirect(with_next(reverse("terminals:mfa-verify"), request.get_full_path()))
    if request.method == "POST":
        codes = _new_recovery_codes(request.user)
        logger.info("User %s made new recovery codes", request.user.pk)
        return _show_codes(request, codes, next_url)
    left = StaticToken.objects.filter(device__user=request.user).count()
    return render(request, "terminals/mfa/recovery.html", {"left": left, "next": next_url})


@never_cache
@sensitive_post_parameters("password", "token")
@login_required
def reauth(request: HttpRequest) -> HttpResponse:
    """Step-up: the password again, or a code when the user has a second factor.

    A wrong password goes through ``authenticate()``, so django-axes counts it toward the
    login lockout (and a locked-out user sees the lockout page).
    """
    next_url = _next(request)
    user: Any = request.user
    uses_code = has_totp_device(user)
    # A user without a usable password and no device (an OIDC account) signs in again.
    relogin = not uses_code and not user.has_usable_password()
    error = ""
    if request.method == "POST" and not relogin:
        if uses_code:
            device, error = _check_code(request)
            if device is not None:
                _verified(request, device)
                return redirect(next_url)
        else:
            password = request.POST.get("password", "")
            checked = auth.authenticate(request, username=user.get_username(), password=password)
            if checked is not None and checked.pk == user.pk:
                record_authentication(request.session)
                return redirect(next_url)
            error = _("That password is not right.")
        logger.info("User %s failed a step-up authentication", user.pk)
    return render(
        request,
        "terminals/mfa/reauth.html",
        {
            "next": next_url,
            "error": error,
            "uses_code": uses_code,
            "relogin": relogin,
            "login_url": with_next(resolve_url(settings.LOGIN_URL), next_url) if relogin else "",
        },
        status=400 if error else 200,
    )

"""Terminal settings kept per user: font size and theme, read and saved as JSON.

``GET`` answers ``{"font_size": 14, "theme": "dark"}`` (the defaults until the user saves);
``POST`` takes a JSON object with either key or both and answers the saved values. A value
out of bounds, an unknown key or a body that is not a JSON object gets a 400 whose ``error``
says what is wrong; nothing is saved then. Logged-in users only (403 otherwise, as JSON, not a
redirect to the login page: the caller is a script); ``POST`` needs the CSRF token, like any
form of the site.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypedDict

from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from .models import DEFAULT_FONT_SIZE, MAX_FONT_SIZE, MIN_FONT_SIZE, TerminalPreference

logger = logging.getLogger(__name__)

THEMES = tuple(TerminalPreference.Theme.values)


class Preferences(TypedDict):
    """What the terminal page needs to draw a terminal the user's way."""

    font_size: int
    theme: str


class InvalidPreferences(ValueError):
    """A request's preferences cannot be saved; the message says why, for the user."""


def preferences_for(user: Any) -> Preferences:
    """The user's saved preferences, or the defaults (anonymous users included)."""
    if user.is_authenticated:
        saved = TerminalPreference.objects.filter(user=user).first()
        if saved is not None:
            return {"font_size": saved.font_size, "theme": saved.theme}
    return {"font_size": DEFAULT_FONT_SIZE, "theme": TerminalPreference.Theme.DARK.value}


def parse_changes(body: bytes) -> dict[str, Any]:
    """The changes a request body asks for, checked; raises InvalidPreferences."""
    try:
        changes = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidPreferences(_("The body must be a JSON object.")) from None
    if not isinstance(changes, dict):
        raise InvalidPreferences(_("The body must be a JSON object."))
    unknown = sorted(set(changes) - {"font_size", "theme"})
    if unknown:
        raise InvalidPreferences(
            _("Unknown setting(s): %(names)s. Known: font_size, theme.")
            % {"names": ", ".join(unknown)}
        )
    if not changes:
        raise InvalidPreferences(_("Nothing to save: send font_size, theme or both."))
    if "font_size" in changes:
        size = changes["font_size"]
        # bool is an int in Python; true is no font size.
        if not isinstance(size, int) or isinstance(size, bool):
            raise InvalidPreferences(_("font_size must be a whole number of pixels."))
        if not MIN_FONT_SIZE <= size <= MAX_FONT_SIZE:
            raise InvalidPreferences(
                _("font_size must be between %(low)d and %(high)d, not %(size)d.")
                % {"low": MIN_FONT_SIZE, "high": MAX_FONT_SIZE, "size": size}
            )
    if "theme" in changes and changes["theme"] not in THEMES:
        raise InvalidPreferences(
            _("theme must be one of %(themes)s.") % {"themes": ", ".join(THEMES)}
        )
    return changes


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest) -> JsonResponse:
    """The logged-in user's terminal preferences: read (GET) or change (POST)."""
    if not request.user.is_authenticated:
        return _error(_("Log in to read or save terminal settings."), 403)
    if request.method == "POST":
        try:
            changes = parse_changes(request.body)
        except InvalidPreferences as error:
            return _error(str(error), 400)
        TerminalPreference.objects.update_or_create(user=request.user, defaults=changes)
        logger.info("Terminal preferences of %s saved: %s", request.user, sorted(changes))
    return JsonResponse(preferences_for(request.user))

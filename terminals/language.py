"""The language of a WebSocket connection, chosen as ``LocaleMiddleware`` chooses a request's.

The messages a socket sends (the ``message`` of an error frame, a session's ``end_message``)
are in that language: the consumer activates it first thing in ``connect``. Django keeps the
active language in an asgiref ``Local``, a context variable in async code, so the tasks the
connection starts afterwards (the session's) inherit it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http.cookie import parse_cookie
from django.utils.translation import get_supported_language_variant
from django.utils.translation.trans_real import language_code_re, parse_accept_lang_header


def language_of(scope: Mapping[str, Any]) -> str:
    """The language for a connection's ``scope``: the language cookie if it names a supported
    language, else the best supported one of Accept-Language, else ``LANGUAGE_CODE``."""
    cookie = _cookies(scope).get(settings.LANGUAGE_COOKIE_NAME)
    if cookie:
        try:
            return get_supported_language_variant(cookie)
        except LookupError:
            pass
    for language, _quality in parse_accept_lang_header(_header(scope, b"accept-language")):
        if language == "*":
            break
        if not language_code_re.search(language):
            continue
        try:
            return get_supported_language_variant(language)
        except LookupError:
            continue
    try:
        return get_supported_language_variant(settings.LANGUAGE_CODE)
    except LookupError:
        return str(settings.LANGUAGE_CODE)


def _cookies(scope: Mapping[str, Any]) -> Mapping[str, str]:
    """Channels' ``CookieMiddleware`` parses them into the scope; else the header's."""
    cookies = scope.get("cookies")
    if cookies is not None:
        return dict(cookies)
    return parse_cookie(_header(scope, b"cookie", "; "))


def _header(scope: Mapping[str, Any], name: bytes, separator: str = ",") -> str:
    """A request header's value, repeated ones joined (as HTTP allows)."""
    values = [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]
    return separator.join(values)

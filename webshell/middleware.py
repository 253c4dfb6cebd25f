"""A Content-Security-Policy header on every response, from ``settings.SECURE_CSP``.

Django 5.2 has no CSP support; Django 6.0 adds ``django.middleware.csp`` with a ``SECURE_CSP``
setting of the same shape (directive name to a list of sources, ``"'self'"`` quoted as in
the header), so moving to it later is a change of middleware path only.

``SECURE_CSP_VIEWS`` loosens the policy for the few pages that need it, by view name: their
directives replace the site's (Django 6.0 would say the same with its per-view decorators).
A response that already carries the header (a view with its own policy) keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

HEADER = "Content-Security-Policy"


def build_policy(directives: Mapping[str, Sequence[str] | bool]) -> str:
    """``{"default-src": ["'self'"], "upgrade-insecure-requests": True}`` as a header value."""
    parts = []
    for name, sources in directives.items():
        if sources is True:
            parts.append(name)
        elif sources:
            parts.append(" ".join([name, *sources]))
    return "; ".join(parts)


def policy_for(view_name: str | None) -> str:
    """The header value for a page of ``view_name`` ("terminals:terminal"), or for none."""
    directives = dict(getattr(settings, "SECURE_CSP", {}))
    if directives and view_name:
        directives.update(getattr(settings, "SECURE_CSP_VIEWS", {}).get(view_name, {}))
    return build_policy(directives)


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds ``Content-Security-Policy`` from ``SECURE_CSP`` (nothing when that is empty)."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """Set the header unless the response has one."""
        match = getattr(request, "resolver_match", None)
        policy = policy_for(match.view_name if match else None)
        if policy and HEADER not in response:
            response[HEADER] = policy
        return response

"""App configuration: registers the system checks; under Daphne, starts the server registry."""

from __future__ import annotations

import sys

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TerminalsConfig(AppConfig):
    name = "terminals"
    verbose_name = _("Pod terminals")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the checks)
            conf,
            mfa,
        )

        conf.connect_signals()
        mfa.connect_signals()  # the time of each login, for step-up
        # Daphne imports its server (installing the asyncio reactor) before the application,
        # so this is true in a Daphne process: heartbeats start with the reactor, not at the
        # first terminal. Elsewhere (tests, management commands, other ASGI servers) nothing
        # starts here; consumers start the registry when a terminal connects.
        if "daphne.server" in sys.modules:
            from .daphne import install
            from .servers import start_with_daphne

            install()
            start_with_daphne()

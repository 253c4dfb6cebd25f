"""App configuration: registers the system checks."""

from __future__ import annotations

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
        )

        conf.connect_signals()

"""Create or update the "Auditors" group with the permissions to review terminal sessions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandParser

#: What an auditor may do: read session records and denials, watch live sessions, end them.
AUDITOR_PERMISSIONS = [
    "view_session",
    "watch_session",
    "end_session",
    "view_deniedattempt",
]


class Command(BaseCommand):
    help = "Create or update a group (default 'Auditors') that may review, watch and end sessions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default="Auditors", help="The group's name.")

    def handle(self, *args: Any, **options: Any) -> None:
        group, created = Group.objects.get_or_create(name=options["name"])
        permissions = Permission.objects.filter(
            content_type__app_label="terminals", codename__in=AUDITOR_PERMISSIONS
        )
        group.permissions.add(*permissions)
        verb = "Created" if created else "Updated"
        names = ", ".join(sorted(f"terminals.{p.codename}" for p in permissions))
        self.stdout.write(f"{verb} group {group.name!r} with {names}.")

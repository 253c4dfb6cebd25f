"""Create the demo superuser ``admin`` for ``make run``, once; with ``WEBSHELL_DEMO_OIDC=1``
also the access rules of the demo identity provider's groups (scripts/run_demo.py)."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the superuser 'admin' if it does not exist. Its password is "
        "WEBSHELL_ADMIN_PASSWORD, else a generated one, printed once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if os.environ.get("WEBSHELL_DEMO_OIDC") == "1":
            self._sso_rules()
        User = get_user_model()
        wanted = os.environ.get("WEBSHELL_ADMIN_PASSWORD", "")
        user = User.objects.filter(username="admin").first()
        if user is not None:
            if wanted and not user.check_password(wanted):
                user.set_password(wanted)
                user.save(update_fields=["password"])
                self.stdout.write("Demo admin 'admin': password set from WEBSHELL_ADMIN_PASSWORD.")
            else:
                self.stdout.write("Demo admin 'admin' exists; its password is unchanged.")
            return
        password = wanted or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", email="", password=password)
        if wanted:
            self.stdout.write("Demo admin 'admin' created with WEBSHELL_ADMIN_PASSWORD.")
        else:
            self.stdout.write(
                self.style.WARNING(f"Demo admin 'admin' created with password: {password}")
                + "\n(shown once; set WEBSHELL_ADMIN_PASSWORD to choose it)"
            )

    def _sso_rules(self) -> None:
        """The demo provider's groups, as single sign-on maps them (prefix "oidc:"): ops may
        open every pod, dev those of the namespace dev. Made once; edited in the admin."""
        from django.contrib.auth.models import Group

        from terminals.models import AccessRule

        for group_name, namespaces in (("oidc:ops", "*"), ("oidc:dev", "dev")):
            group, _ = Group.objects.get_or_create(name=group_name)
            rule, created = AccessRule.objects.get_or_create(
                name=f"demo: {group_name}",
                defaults={"namespaces": namespaces, "reason": "the demo identity provider"},
            )
            rule.groups.add(group)
            if created:
                self.stdout.write(f"Demo rule for {group_name}: namespaces {namespaces}.")

"""The migrations match the models, and build the schema the audit's writes are sized for."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.django_db


def test_the_models_have_no_change_without_its_migration():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_frames_have_one_index_by_session_the_unique_one():
    """Every frame stored writes each index of the table: the foreign key's own index, which
    Django makes by default, is left out (migration 0009), as the unique (session, seq) serves
    every lookup by session."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "terminals_frame")
    by_session = [c for c in constraints.values() if c["index"] or c["unique"]]
    by_session = [c for c in by_session if c["columns"][:1] == ["session_id"]]
    assert [(c["columns"], c["unique"]) for c in by_session] == [(["session_id", "seq"], True)]

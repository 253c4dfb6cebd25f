"""Frames lose the index Django gives every foreign key: the unique (session, seq) serves every
lookup by session, and each frame stored wrote both.

Written by hand: Django's own AlterField drops and re-adds the foreign key constraint, which
checks every frame again under a lock that holds off the audit's inserts; dropping the index
alone takes a moment whatever the table's size.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "terminals_frame_session_id_341dbe63"  # Django's name for it (table, column, hash)


class Migration(migrations.Migration):
    dependencies = [
        ("terminals", "0008_session_resume_previous"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="frame",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="frames",
                        to="terminals.session",
                        verbose_name="session",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {INDEX}",
                    reverse_sql=f"CREATE INDEX IF NOT EXISTS {INDEX}"
                    " ON terminals_frame (session_id)",
                ),
            ],
        ),
    ]

"""API tokens stored as digests (`api.models.ApiToken`), the plain keys of DRF's
``authtoken_token`` table moved over: each key hashed, then deleted.

Clients keep their keys: a request's key is hashed and found. On SQLite the rows are
deleted with ``secure_delete`` on, so the file keeps no copy of a key; PostgreSQL reuses
the space at its next VACUUM, and backups taken before hold the plain keys: re-issue the
tokens (``manage.py create_token NAME``) where a backup may have leaked (README, "Access").
"""

import hashlib
from datetime import UTC

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

OLD_TABLE = "authtoken_token"  # rest_framework.authtoken's, no longer installed


def hash_plain_keys(apps, schema_editor) -> None:
    """Copy every key of ``authtoken_token`` as its digest, then delete the keys."""
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    api_token = apps.get_model("api", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
        api_token.objects.using(connection.alias).bulk_create(
            api_token(
                digest=hashlib.sha256(key.encode()).hexdigest(),
                prefix=key[:8],
                user_id=user_id,
                created=aware(created),
            )
            for key, user_id, created in rows
        )
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA secure_delete = ON")  # zero the deleted rows' bytes
        cursor.execute(f"DELETE FROM {OLD_TABLE}")


def aware(created):
    """DRF's ``created`` as an aware datetime (SQLite's raw cursor gives text, naive)."""
    if isinstance(created, str):
        created = parse_datetime(created) or timezone.now()
    return created if timezone.is_aware(created) else timezone.make_aware(created, UTC)


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0002_idempotency_key"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("digest", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("prefix", models.CharField(max_length=8)),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_token",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"db_table": "api_tokens"},
        ),
        migrations.RunPython(
            hash_plain_keys, migrations.RunPython.noop, hints={"model_name": "apitoken"}
        ),
    ]

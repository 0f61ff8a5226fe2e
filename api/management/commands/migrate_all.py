"""``manage.py migrate_all``: apply migrations to every configured database alias, and
create the database cache's table when the cache is one.

A PostgreSQL alias whose database does not exist yet on its (reachable) server is created
first, so pointing ``DATABASE_URL_<ALIAS>`` at a fresh server is all the set-up it needs.
"""

from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections


def create_missing_database(alias: str) -> bool:
    """Create ``alias``'s PostgreSQL database if its server does not hold it yet.

    Returns whether it was created. Raises `django.db.OperationalError` when the server
    is unreachable or refuses. Connects as Django's test runner does (``_nodb_cursor``:
    the server's ``postgres`` database).
    """
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return False
    name = connection.settings_dict["NAME"]
    with connection._nodb_cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone():
            return False
        cursor.execute(f"CREATE DATABASE {connection.ops.quote_name(name)}")
    return True


class Command(BaseCommand):
    help = "Apply migrations to every database alias (default, users, products, orders)."

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        for alias, config in settings.DATABASES.items():
            if config["ENGINE"].endswith("sqlite3"):
                Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
            elif create_missing_database(alias) and verbosity:
                self.stdout.write(f"Created database {config['NAME']!r} for {alias!r}.")
            if verbosity:
                self.stdout.write(self.style.MIGRATE_HEADING(f"Database {alias!r}:"))
            call_command("migrate", database=alias, interactive=False, verbosity=verbosity)
        # The database cache's table (settings.CACHES without REDIS_URL); a no-op otherwise.
        call_command("createcachetable", verbosity=verbosity)

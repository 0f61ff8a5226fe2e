"""``manage.py migrate_all``: apply migrations to every configured database alias, and
create the database cache's table when the cache is one."""

from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Apply migrations to every database alias (default, users, products, orders)."

    def handle(self, *args, **options) -> None:
        verbosity = options["verbosity"]
        for alias, config in settings.DATABASES.items():
            if config["ENGINE"].endswith("sqlite3"):
                Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
            if verbosity:
                self.stdout.write(self.style.MIGRATE_HEADING(f"Database {alias!r}:"))
            call_command("migrate", database=alias, interactive=False, verbosity=verbosity)
        # The database cache's table (settings.CACHES without REDIS_URL); a no-op otherwise.
        call_command("createcachetable", verbosity=verbosity)

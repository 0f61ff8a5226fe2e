"""``manage.py expire_idempotency_keys``: delete the ``Idempotency-Key`` rows whose time is up.

Expired keys are also deleted when a request reads one (`api.http.idempotency`); this command
clears those nobody asks for again. Run it from cron, say hourly.
"""

from django.core.management.base import BaseCommand

from api.http.idempotency import idempotency_keys_expire


class Command(BaseCommand):
    help = "Delete expired Idempotency-Key rows from the default database; print how many."

    def handle(self, *args, **options) -> None:
        deleted = idempotency_keys_expire()
        self.stdout.write(f"{deleted} expired idempotency keys deleted")

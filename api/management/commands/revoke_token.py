"""``manage.py revoke_token NAME``: delete a client's API token."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from api.http.access import TOKEN_CACHE_SECONDS_NOTE
from api.models import ApiToken


class Command(BaseCommand):
    help = f"Delete client NAME's API token. {TOKEN_CACHE_SECONDS_NOTE}"

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the client's name (a Django username)")

    @transaction.atomic
    def handle(self, *args, name: str, **options) -> None:
        deleted, _ = ApiToken.objects.filter(user__username=name).delete()
        if not deleted:
            raise CommandError(f"client {name!r} has no token")
        self.stdout.write(f"revoked {name}'s token")

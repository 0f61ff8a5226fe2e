"""``manage.py create_token NAME --scope read --scope write [--tier benchmark]``."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from api.http.access import TIER_GROUP_PREFIX, TOKEN_SCOPES
from api.models import ApiToken


class Command(BaseCommand):
    help = (
        "Create an API token for client NAME (a Django user made if missing) with the given "
        "scopes, replacing any it had, and print its key: the only time it is shown (only "
        "its digest is stored). Scopes: "
        + ", ".join(f"{name} ({', '.join(sorted(perms))})" for name, perms in TOKEN_SCOPES.items())
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the client's name (a Django username)")
        parser.add_argument(
            "--scope", action="append", choices=sorted(TOKEN_SCOPES), default=[], dest="scopes"
        )
        parser.add_argument(
            "--tier", default=None, help="its throttle tier in settings.THROTTLE_RATES"
        )

    @transaction.atomic
    def handle(self, *args, name: str, scopes: list[str], tier: str | None, **options):
        user, _ = get_user_model().objects.get_or_create(username=name)
        if not user.is_active:
            raise CommandError(f"user {name!r} is inactive")
        codenames = sorted(
            {perm.split(".", 1)[1] for scope in scopes for perm in TOKEN_SCOPES[scope]}
        )
        permissions = list(
            Permission.objects.filter(content_type__app_label="api", codename__in=codenames)
        )
        if len(permissions) != len(codenames):
            raise CommandError("the API's permissions are missing: run manage.py migrate_all")
        user.user_permissions.set(permissions)
        user.groups.remove(*user.groups.filter(name__startswith=TIER_GROUP_PREFIX))
        if tier:
            user.groups.add(Group.objects.get_or_create(name=f"{TIER_GROUP_PREFIX}{tier}")[0])
        _, key = ApiToken.issue(user)
        self.stdout.write(key)

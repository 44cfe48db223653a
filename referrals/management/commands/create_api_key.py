from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ...api.keys import ApiKeyInvalid, api_key_create
from ...models import Account, ApiKey


class Command(BaseCommand):
    help = "Create an integration API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="who or what uses the key, e.g. billing-prod")
        parser.add_argument("--scopes", required=True,
                            help=f"comma-separated: {','.join(ApiKey.Scope.values)}")
        parser.add_argument("--account", help="bind the key to this account id (a partner key: reads only it)")
        parser.add_argument("--expires-days", type=int, help="the key stops working after this many days")

    def handle(self, *args, name, scopes, account, expires_days, **options):
        bound = None
        if account:
            bound = Account.objects.filter(external_id=account).first()
            if bound is None:
                raise CommandError(f"--account: unknown account {account!r}")
        expires_at = None
        if expires_days is not None:
            if expires_days <= 0:
                raise CommandError("--expires-days must be a positive number of days")
            expires_at = timezone.now() + timedelta(days=expires_days)
        try:
            key, plaintext = api_key_create(name=name, scopes=scopes, account=bound, expires_at=expires_at)
        except ApiKeyInvalid as exc:
            options = {"expires_at": "--expires-days"}
            raise CommandError("; ".join(f"{options.get(field, '--' + field)}: {message}"
                                         for field, message in exc.fields.items())) from exc
        details = f"scopes {', '.join(key.scopes)}"
        if bound:
            details += f"; reads only account {bound.external_id}"
        if expires_at:
            details += f"; expires {expires_at:%Y-%m-%d %H:%M} UTC"
        self.stdout.write(f"Created API key {key.name!r} ({details}):")
        self.stdout.write(plaintext)
        self.stdout.write(self.style.WARNING("Store it now: it will not be shown again."))

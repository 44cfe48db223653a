"""`manage.py reconcile_payouts [--since ISO8601] [--provider NAME ...] [--strict]`: list every
difference between our payouts and the providers' records."""
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from payouts.models import MethodType
from payouts.reconciliation import reconcile


class Command(BaseCommand):
    help = "Compare payouts with the providers' records and list every difference."

    def add_arguments(self, parser):
        parser.add_argument("--since", help="ISO 8601 date-time with a zone (default: 30 days ago)")
        parser.add_argument("--provider", action="append", choices=MethodType.values,
                            help="only this provider (repeatable; default: all)")
        parser.add_argument("--strict", action="store_true", help="exit with an error when there are differences")

    def handle(self, *args, since=None, provider=None, strict=False, **options):
        when = timezone.now() - timedelta(days=30)
        if since:
            when = parse_datetime(since)
            if when is None or when.tzinfo is None:
                raise CommandError("--since must be an ISO 8601 date-time with a time zone, e.g. 2026-01-01T00:00Z")
        differences = reconcile(since=when, providers=provider)
        for difference in differences:
            self.stdout.write(str(difference))
        self.stdout.write(f"{len(differences)} difference(s) since {when.isoformat()}")
        if differences and strict:
            raise CommandError(f"{len(differences)} difference(s) between our payouts and the providers")

from datetime import UTC, datetime

import stripe
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from billing import services


class Command(BaseCommand):
    help = ("Backfill customers, paid invoices, charges, refunds and disputes created since DATE from the "
            "connected Stripe account into the event log, through Stripe's list endpoints. Resumable: run it "
            "again with the same --since after an interruption; idempotent with the webhooks.")

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="a date (2026-01-31) or ISO 8601 date-time, UTC")
        parser.add_argument("--restart", action="store_true", help="start every list again from the newest object")
        parser.add_argument("--page-size", type=int, default=100, help="objects per list request (1-100)")

    def handle(self, *args, since, restart, page_size, **options):
        when = parse_datetime(since) if "T" in since else None
        if when is None:
            day = parse_date(since) if since[:4].isdigit() else None
            if day is None:
                raise CommandError("--since: must be a date (2026-01-31) or an ISO 8601 date-time")
            when = datetime(day.year, day.month, day.day, tzinfo=UTC)
        elif when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if not 1 <= page_size <= 100:
            raise CommandError("--page-size: must be between 1 and 100")
        try:
            counts = services.import_since(since=int(when.timestamp()), restart=restart, page_size=page_size,
                                           out=self.stdout.write)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except stripe.StripeError as exc:
            raise CommandError(f"Stripe: {exc.user_message or exc}; run the same command again to resume") from None
        self.stdout.write(self.style.SUCCESS(
            "imported " + ", ".join(f"{n} {resource}" for resource, n in counts.items())))

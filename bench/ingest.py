"""Batch ingestion speed: events/s through `POST /api/v1/events` next to a raw multi-row
INSERT of the same rows into the same table, measured in the same run on PostgreSQL.

    DATABASE_URL=postgres://... .venv/bin/python bench/ingest.py [--batches 20] [--accounts 200]

The database must be a scratch one: the script migrates it, loads the `runpod` preset, creates
accounts and writes events (all prefixed with a per-run tag, so runs do not collide).

The API side goes through the whole Django stack in-process (Django's test client: WSGI
handler, middleware, bearer-key authentication, throttle, JSON parsing, per-event validation,
one dedupe query, one account query, one multi-row INSERT, JSON rendering). It leaves out the
HTTP server and the network, which are not ours to speed up. Each 1000-event batch is larger
than INGEST_INLINE_APPLY_MAX, so its application is queued on commit as a Celery task; here
the broker is Celery's in-memory transport, so queueing is counted but no worker runs during
the timing. Applying those events (the ledger work) is then timed separately and printed too.

The raw side is one `INSERT INTO referrals_event (...) VALUES (...), (...), ...` per 1000 rows
with the same column values (pre-serialised JSON, hashes computed outside the timing) through
the same connection: the floor set by PostgreSQL for storing these rows.
"""
import argparse
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

import django  # noqa: E402

django.setup()

from celery import current_app  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from referrals import events as ev  # noqa: E402
from referrals.api.keys import api_key_create  # noqa: E402
from referrals.ingestion import apply_pending  # noqa: E402
from referrals.models import Account, Event  # noqa: E402
from referrals.presets import load_preset  # noqa: E402
from referrals.services import ingest_event  # noqa: E402

BATCH = 1000


def make_batches(tag: str, accounts: list[str], n_batches: int) -> list[list[dict]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batches = []
    for b in range(n_batches):
        batch = []
        for i in range(BATCH):
            n = b * BATCH + i
            batch.append({"id": f"{tag}-{n}", "type": ev.USAGE_CHARGED, "account": accounts[n % len(accounts)],
                          "occurred_at": (start + timedelta(seconds=n)).isoformat(),
                          "amount": f"{1 + n % 50}.{n % 100:02d}", "product": "pods" if n % 3 else "serverless"})
        batches.append(batch)
    return batches


def raw_rows(batch: list[dict], tag: str, account_ids: dict[str, int]) -> list[tuple]:
    now = timezone.now()
    rows = []
    for raw in batch:
        valid = ev.validate_event(raw)
        rows.append((f"raw-{tag}-{raw['id']}", valid.type, "api", account_ids[valid.account], valid.occurred_at, now,
                     json.dumps(raw), valid.content_hash, valid.amount, valid.product, 0, 0, None))
    return rows


RAW_COLUMNS = ("external_id", "type", "source", "account_id", "occurred_at", "received_at", "payload",
               "content_hash", "amount", "product", "refunded", "runtime_seconds", "applied_at")


def raw_insert(rows: list[tuple]) -> None:
    one = "(" + ", ".join(["%s"] * len(RAW_COLUMNS)) + ")"
    sql = (f"INSERT INTO referrals_event ({', '.join(RAW_COLUMNS)}, apply_error) VALUES "
           + ", ".join(f"{one[:-1]}, '')" for _ in rows))
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="1000-event batches per side (default 20)")
    parser.add_argument("--accounts", type=int, default=200, help="distinct accounts charged (default 200)")
    parser.add_argument("--apply-sample", type=int, default=500,
                        help="how many of the stored events to apply afterwards, timed (default 500)")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/ingest.py measures PostgreSQL: set DATABASE_URL=postgres://... (a scratch database)")

    call_command("migrate", verbosity=0)
    load_preset("runpod")
    tag = uuid.uuid4().hex[:8]
    referrer = f"bench-{tag}-referrer"
    ingest_event({"id": f"{referrer}-signup", "type": ev.ACCOUNT_CREATED, "account": referrer,
                  "occurred_at": "2026-01-01T00:00:00Z", "email": f"{referrer}@example.com"})
    code = Account.objects.get(external_id=referrer).referral_code
    accounts = [f"bench-{tag}-{i}" for i in range(args.accounts)]
    for name in accounts:
        ingest_event({"id": f"{name}-signup", "type": ev.ACCOUNT_CREATED, "account": name,
                      "occurred_at": "2026-01-01T00:00:00Z", "email": f"{name}@example.com",
                      "referral_code": code})
    account_ids = dict(Account.objects.filter(external_id__in=accounts).values_list("external_id", "pk"))

    batches = make_batches(f"bench-{tag}", accounts, args.batches)
    bodies = [json.dumps({"events": batch}) for batch in batches]
    raw_batches = [raw_rows(batch, tag, account_ids) for batch in batches]

    # Queue the apply task on the in-memory broker, not eagerly: no worker runs during the timing.
    current_app.conf.CELERY_BROKER_URL = "memory://"
    current_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "1000000/minute"}}
    key = api_key_create(name=f"bench-{tag}", scopes=["events:write"])[1]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    # Warm-up (imports, connection, query plans) on a batch outside both timings.
    warm = make_batches(f"warm-{tag}", accounts, 1)[0]
    client.post("/api/v1/events", json.dumps({"events": warm}), content_type="application/json")
    raw_insert(raw_rows(warm, f"warm-{tag}", account_ids))

    # Interleave the two sides so both see the same table size and the same machine noise.
    api_seconds = raw_seconds = 0.0
    for body, rows in zip(bodies, raw_batches, strict=True):
        started = time.perf_counter()
        response = client.post("/api/v1/events", body, content_type="application/json")
        api_seconds += time.perf_counter() - started
        assert response.status_code == 200, response.content[:500]
        results = response.json()["results"]
        assert all(r["status"] == "accepted" for r in results), [r for r in results if r["status"] != "accepted"][:3]

        started = time.perf_counter()
        raw_insert(rows)
        raw_seconds += time.perf_counter() - started

    n = args.batches * BATCH
    stored = Event.objects.filter(external_id__startswith=f"bench-{tag}-", applied_at__isnull=True).count()
    assert stored == n, f"{stored} of {n} events stored unapplied"
    # Applying is the ledger work the queued tasks do; a sample of it is timed (the rest stays
    # stored, not applied, in this scratch database).
    sample = list(Event.objects.filter(external_id__startswith=f"bench-{tag}-", applied_at__isnull=True)
                  .order_by("id").values_list("pk", flat=True)[:args.apply_sample])
    started = time.perf_counter()
    applied = apply_pending(event_ids=sample)
    apply_seconds = time.perf_counter() - started

    api_rate, raw_rate = n / api_seconds, n / raw_seconds
    print(f"events: {n} in batches of {BATCH}, {args.accounts} accounts, PostgreSQL {connection.pg_version}")
    print(f"API (POST /api/v1/events, in-process): {api_rate:,.0f} events/s ({api_seconds:.2f} s)")
    print(f"raw multi-row INSERT of the same rows: {raw_rate:,.0f} events/s ({raw_seconds:.2f} s)")
    print(f"ratio API / raw: {api_rate / raw_rate:.2f}")
    print(f"applying them afterwards (ledger, commissions: the queued tasks' work), a sample: "
          f"{applied / apply_seconds:,.0f} events/s ({applied} events, {apply_seconds:.2f} s)")


if __name__ == "__main__":
    main()

"""Applied events/s end to end: `POST /api/v1/events` until every event is applied to the
ledger, next to COPY and a raw multi-row INSERT of the same rows, in the same run on PostgreSQL;
and the latency of a single-event POST (stored and applied inside the request).

    DATABASE_URL=postgres://... .venv/bin/python bench/ingest.py [--batches 10] [--accounts 5000] [--referrers 50]
        [--profile FILE]   # cProfile of the timed batches, for `python -m pstats FILE`

The database must be a scratch one (e.g. `scripts/pg-throwaway.sh start DIR`): the script
migrates it, loads the `runpod` preset, signs up `--referrers` referrers (through the API's
ingestion) and writes `--accounts` accounts referred by them (round robin; rows written in bulk,
as their sign-ups would leave them), and writes events (all prefixed with a per-run tag, so
runs do not collide). Sign-ups are set-up, outside every timing.

Each round sends one 1000-event batch of `usage.charged` spread at random over all the accounts
(two products, so the serverless milestone and the per-product spend are exercised) through
each side, the sides interleaved so both see the same table size and the same machine noise:

- applied: the whole Django stack in-process (Django's test client: WSGI handler, middleware,
  bearer-key authentication, throttle, JSON parsing, validation, storing), then
  `ingestion.apply_pending()` (what the queued task or the sweeper runs) until the batch is
  applied: accruals, ledger legs, balances, rollups, milestones, outbox messages. Timed from
  the POST until the apply returns; the store part alone is printed too. A batch of up to
  `--inline-max` events (default: the `INGEST_INLINE_APPLY_MAX` setting) is applied inside its
  request, in the transaction that stores it; a larger one is queued and applied here.
- COPY: `COPY referrals_event FROM STDIN` of the same rows (pre-serialised, hashes computed
  outside the timing) through the same connection: the floor set by PostgreSQL for storing them.
- raw INSERT: one multi-row `INSERT ... VALUES` per batch of the same rows.

The copies are stored as already applied with an `apply_error` mark, so no applier takes them.
Then `--singles` single-event POSTs (one request each, applied inline) give the p50/p99 latency.
Finally the ledger is checked (balanced, projection equal to the entries, pending = held).
"""
import argparse
import cProfile
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from contextlib import contextmanager
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

from ledger.services import open_books  # noqa: E402
from referrals.api.keys import api_key_create  # noqa: E402
from referrals.engine import events as ev  # noqa: E402
from referrals.engine.ingestion import apply_pending, ingest_batch  # noqa: E402
from referrals.engine.verification import check_integrity  # noqa: E402
from referrals.models import Account, Event, Referral  # noqa: E402
from referrals.presets import load_preset  # noqa: E402

BATCH = 1000
START = datetime(2026, 1, 1, tzinfo=UTC)


def make_batch(tag: str, accounts: list[str], number: int, rng: random.Random) -> list[dict]:
    batch = []
    for i in range(BATCH):
        n = number * BATCH + i
        batch.append({"id": f"{tag}-{n}", "type": ev.USAGE_CHARGED, "account": rng.choice(accounts),
                      "occurred_at": (START + timedelta(days=1, seconds=n)).isoformat(),
                      "amount": f"{1 + n % 50}.{n % 100:02d}", "product": "pods" if n % 3 else "serverless"})
    return batch


COLUMNS = ("external_id", "type", "source", "account_id", "occurred_at", "received_at", "payload",
           "content_hash", "amount", "product", "refunded", "runtime_seconds", "applied_at", "apply_error")


class StatementTimes:
    """An `execute_wrapper` adding up the time of each statement (by its first 90 characters,
    counted from the first keyword after any WITH), for `--statements`."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = " ".join(sql.split())[:90]
            self.seconds[key] += time.perf_counter() - started
            self.calls[key] += 1

    @contextmanager
    def commits(self):
        """Count COMMIT (where the deferred triggers and foreign-key checks run) as a statement."""
        original = connection._commit

        def timed_commit():
            started = time.perf_counter()
            try:
                return original()
            finally:
                self.seconds["COMMIT"] += time.perf_counter() - started
                self.calls["COMMIT"] += 1
        connection._commit = timed_commit
        try:
            yield
        finally:
            connection._commit = original

    @contextmanager
    def recording(self, on: bool = True):
        """Time the statements and COMMITs run inside (nothing when `on` is false)."""
        if not on:
            yield
            return
        with connection.execute_wrapper(self), self.commits():
            yield

    def report(self, top: int = 15, label: str = "timed batches") -> None:
        total = sum(self.seconds.values())
        print(f"SQL statements of the {label}: {sum(self.calls.values())} taking {total:.2f} s; the longest:")
        for key, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {seconds:6.3f} s {self.calls[key]:5d} x  {key}")


def copy_rows(batch: list[dict], prefix: str, account_ids: dict[str, int]) -> list[tuple]:
    now = timezone.now()
    rows = []
    for raw in batch:
        valid = ev.validate_event(raw)
        rows.append((f"{prefix}-{raw['id']}", valid.type, "api", account_ids[valid.account], valid.occurred_at, now,
                     json.dumps(raw), valid.content_hash, valid.amount, valid.product, 0, 0, now,
                     "bench: copy, not an event to apply"))
    return rows


def raw_insert(rows: list[tuple]) -> None:
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    sql = f"INSERT INTO referrals_event ({', '.join(COLUMNS)}) VALUES " + ", ".join([one] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])


def copy_in(rows: list[tuple]) -> None:
    connection.ensure_connection()
    statement = f"COPY referrals_event ({', '.join(COLUMNS)}) FROM STDIN"
    with connection.connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def post(client: Client, body: str) -> list[dict]:
    response = client.post("/api/v1/events", body, content_type="application/json")
    assert response.status_code == 200, response.content[:500]
    results = response.json()["results"]
    assert all(r["status"] == "accepted" for r in results), [r for r in results if r["status"] != "accepted"][:3]
    return results


def sign_up(tag: str, referrers: int, accounts: int) -> list[str]:
    names = [f"bench-{tag}-ref{i}" for i in range(referrers)]
    ingest_batch([{"id": f"{name}-signup", "type": ev.ACCOUNT_CREATED, "account": name,
                   "occurred_at": START.isoformat(), "email": f"{name}@example.com"} for name in names])
    codes = list(Account.objects.filter(external_id__in=names).order_by("id").values_list("referral_code", flat=True))
    referrer_ids = list(Account.objects.filter(external_id__in=names).order_by("id").values_list("pk", flat=True))
    assert len(codes) == len(referrer_ids) == referrers
    # The referred accounts and their referrals are written in bulk (sign-ups one by one would
    # take most of the run): the rows an attributed `account.created` leaves, without its event.
    referred = [f"bench-{tag}-{i}" for i in range(accounts)]
    created = Account.objects.bulk_create([
        Account(external_id=name, email=f"{name}@example.com", email_normalized=f"{name}@example.com",
                signed_up_at=START) for name in referred])
    ids = [a.pk for a in created] if created[0].pk else list(
        Account.objects.filter(external_id__in=referred).order_by("id").values_list("pk", flat=True))
    open_books(ids)
    Referral.objects.bulk_create([Referral(referrer_id=referrer_ids[i % referrers], referred_id=pk, created_at=START)
                                  for i, pk in enumerate(ids)])
    return referred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10, help="1000-event batches per side (default 10)")
    parser.add_argument("--accounts", type=int, default=5000, help="referred accounts charged (default 5000)")
    parser.add_argument("--referrers", type=int, default=50, help="referrers sharing them (default 50)")
    parser.add_argument("--singles", type=int, default=200, help="single-event POSTs timed one by one (default 200)")
    parser.add_argument("--inline-max", type=int, default=None,
                        help="INGEST_INLINE_APPLY_MAX for the run: batches up to this size are applied in their "
                             "request, larger ones by apply_pending (default: the setting)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--profile", metavar="FILE",
                        help="write a cProfile of the timed batches (POST + apply) to FILE (pstats format)")
    parser.add_argument("--statements", action="store_true",
                        help="print the SQL statements of the timed batches that took the most time")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/ingest.py measures PostgreSQL: set DATABASE_URL=postgres://... (a scratch database)")

    call_command("migrate", verbosity=0)
    load_preset("runpod")
    tag = uuid.uuid4().hex[:8]
    rng = random.Random(args.seed)
    started = time.perf_counter()
    accounts = sign_up(tag, args.referrers, args.accounts)
    setup_seconds = time.perf_counter() - started
    account_ids = dict(Account.objects.filter(external_id__in=accounts).values_list("external_id", "pk"))
    batches = [make_batch(f"bench-{tag}", accounts, b, rng) for b in range(args.batches + 1)]
    bodies = [json.dumps({"events": batch}) for batch in batches]
    copies = [copy_rows(batch, "copy", account_ids) for batch in batches]
    inserts = [copy_rows(batch, "insert", account_ids) for batch in batches]

    # Batches above INGEST_INLINE_APPLY_MAX are queued on commit: Celery's in-memory transport
    # takes the task and no worker runs it; this process applies instead.
    inline_max = settings.INGEST_INLINE_APPLY_MAX
    if args.inline_max is not None:
        settings.INGEST_INLINE_APPLY_MAX = args.inline_max
    current_app.conf.CELERY_BROKER_URL = "memory://"
    current_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "1000000/minute"}}
    key = api_key_create(name=f"bench-{tag}", scopes=["events:write"])[1]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    seconds = {"store": 0.0, "applied": 0.0, "copy": 0.0, "insert": 0.0}
    applied = 0
    profiler = cProfile.Profile() if args.profile else None
    statements = StatementTimes()
    for number in range(args.batches + 1):  # batch 0 warms up (imports, plans), outside the timing
        if profiler and number:
            profiler.enable()
        with statements.recording(args.statements and number):
            t0 = time.perf_counter()
            post(client, bodies[number])
            t1 = time.perf_counter()
            apply_pending()
            t2 = time.perf_counter()
        if profiler:
            profiler.disable()
        done = Event.objects.filter(external_id__any_of=[raw["id"] for raw in batches[number]],
                                    applied_at__isnull=False).count()
        assert done == BATCH, f"{done} of {BATCH} events applied"
        copy_in(copies[number])
        t3 = time.perf_counter()
        raw_insert(inserts[number])
        t4 = time.perf_counter()
        if number:
            applied += done
            seconds["store"] += t1 - t0
            seconds["applied"] += t2 - t0
            seconds["copy"] += t3 - t2
            seconds["insert"] += t4 - t3

    if profiler:
        profiler.dump_stats(args.profile)

    mode = "in the request" if BATCH <= settings.INGEST_INLINE_APPLY_MAX else "by apply_pending"
    mode += f", INGEST_INLINE_APPLY_MAX={settings.INGEST_INLINE_APPLY_MAX}"
    settings.INGEST_INLINE_APPLY_MAX = max(inline_max, 1)  # the single POSTs are applied in their request
    latencies = []
    single_statements = StatementTimes()
    for i in range(args.singles):
        body = json.dumps({"id": f"single-{tag}-{i}", "type": ev.USAGE_CHARGED, "account": rng.choice(accounts),
                           "occurred_at": (START + timedelta(days=2, seconds=i)).isoformat(), "amount": "1.25",
                           "product": "pods"})
        with single_statements.recording(args.statements):
            t0 = time.perf_counter()
            response = client.post("/api/v1/events", body, content_type="application/json")
            latencies.append(time.perf_counter() - t0)
        assert response.status_code == 200 and response.json()["results"][0]["status"] == "accepted", response.content
    assert not Event.objects.filter(applied_at__isnull=True, apply_error="").exists(), "events left unapplied"
    problems = check_integrity()
    assert problems == [], problems[:5]

    n = args.batches * BATCH
    rate = {side: n / s for side, s in seconds.items()}
    latencies.sort()
    print(f"{n} usage.charged in batches of {BATCH} over {args.accounts} accounts of {args.referrers} referrers, "
          f"PostgreSQL {connection.pg_version} (set-up {setup_seconds:.0f} s, load {os.getloadavg()})")
    print(f"applied end to end (POST + apply_pending): {rate['applied']:,.0f} events/s ({seconds['applied']:.2f} s; "
          f"batches applied {mode})")
    print(f"  of which storing (POST alone):           {rate['store']:,.0f} events/s ({seconds['store']:.2f} s)")
    print(f"COPY of the same rows:                     {rate['copy']:,.0f} events/s ({seconds['copy']:.2f} s)")
    print(f"raw multi-row INSERT of the same rows:     {rate['insert']:,.0f} events/s ({seconds['insert']:.2f} s)")
    print(f"ratio applied / COPY: {rate['applied'] / rate['copy']:.3f}; applied / INSERT: "
          f"{rate['applied'] / rate['insert']:.3f}")
    if args.statements:
        statements.report()
    print(f"single-event POST ({args.singles}, applied inline): p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms")
    if args.statements:
        print(f"per single-event POST: {sum(single_statements.calls.values()) / args.singles:.1f} statements taking "
              f"{sum(single_statements.seconds.values()) / args.singles * 1000:.1f} ms")
        single_statements.report(label="single-event POSTs")


if __name__ == "__main__":
    main()

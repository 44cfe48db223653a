"""Batch ingestion speed: events/s through `POST /api/v1/events` next to a raw multi-row
INSERT of the same rows into the same table, measured in the same run on PostgreSQL.

    DATABASE_URL=postgres://... .venv/bin/python bench/ingest.py [--batches 20] [--accounts 200] [--clients 1]

The database must be a scratch one: the script migrates it, loads the `runpod` preset, creates
accounts and writes events (all prefixed with a per-run tag, so runs do not collide).

The API side goes through the whole Django stack in-process (Django's test client: WSGI
handler, middleware, bearer-key authentication, throttle, JSON parsing, per-event validation,
one dedupe query, one account query, one multi-row INSERT, JSON rendering). It leaves out the
HTTP server and the network, which are not ours to speed up. Each 1000-event batch is larger
than INGEST_INLINE_APPLY_MAX, so its application is queued on commit as a Celery task; here
the broker is Celery's in-memory transport, so queueing is counted but no worker runs during
the timing. Applying those events (the ledger work) is then timed separately: a sample one by
one through the per-event path, the rest set-based through `apply_pending`, and the ledger is
checked (balanced, projection equal to the entries) afterwards.

The raw side is one `INSERT INTO referrals_event (...) VALUES (...), (...), ...` per 1000 rows
with the same column values (pre-serialised JSON, hashes computed outside the timing) through
the same connection: the floor set by PostgreSQL for storing these rows.

With `--clients N` both sides run in N sender processes (forked after the setup, each with its
own Django state and database connection, as N web workers would be): each sender posts its own
batches (its own event ids and its own share of the accounts) and warms up on its own batch.
The two sides alternate in rounds: all senders start each round together at a barrier, each
sends `--round-batches` batches of the side, and the round lasts until the last one is done;
events/s is all the events over the sum of the rounds' wall times. With one client and one
batch a round this is the sequential, batch-by-batch interleaving of the two sides.
"""
import argparse
import json
import multiprocessing
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path
from threading import BrokenBarrierError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

import django  # noqa: E402

django.setup()

from celery import current_app  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from referrals import events as ev  # noqa: E402
from referrals.api.keys import api_key_create  # noqa: E402
from referrals.ingestion import _apply_one, apply_pending  # noqa: E402
from referrals.models import Account, Event  # noqa: E402
from referrals.presets import load_preset  # noqa: E402
from referrals.services import ingest_event  # noqa: E402
from referrals.verification import check_integrity  # noqa: E402

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


SIDES = ("api", "raw")


def post_batch(client: Client, body: str) -> None:
    response = client.post("/api/v1/events", body, content_type="application/json")
    assert response.status_code == 200, response.content[:500]
    results = response.json()["results"]
    assert all(r["status"] == "accepted" for r in results), [r for r in results if r["status"] != "accepted"][:3]


def sender(key: str, warm: tuple[str, list[tuple]], work: dict[str, list], round_batches: int,
           barrier: Barrier) -> None:
    """One concurrent client (a forked process with its own connection): warm up, then for each
    round and side wait for the others at the barrier, send this round's batches, and wait for
    the others to finish."""
    try:
        client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
        # Warm-up (imports, connection, query plans) on a batch outside both timings.
        post_batch(client, warm[0])
        raw_insert(warm[1])
        for start in range(0, len(work["api"]), round_batches):
            for side in SIDES:
                barrier.wait()
                for item in work[side][start:start + round_batches]:
                    if side == "api":
                        post_batch(client, item)
                    else:
                        raw_insert(item)
                barrier.wait()
    except BaseException:
        barrier.abort()  # the parent and the other senders stop waiting
        raise
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="1000-event batches per side (default 20)")
    parser.add_argument("--accounts", type=int, default=200, help="distinct accounts charged (default 200)")
    parser.add_argument("--apply-sample", type=int, default=500,
                        help="how many of the stored events to apply one by one, timed, before applying the "
                             "rest set-based (default 500)")
    parser.add_argument("--clients", type=int, default=1,
                        help="concurrent sender processes, each with its own connection (default 1)")
    parser.add_argument("--round-batches", type=int, default=1,
                        help="batches each client sends of one side before the other side's round (default 1)")
    args = parser.parse_args()
    if args.clients < 1 or args.round_batches < 1 or args.batches % (args.clients * args.round_batches):
        parser.error("--batches must be a multiple of --clients × --round-batches (both at least 1)")
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

    # Each client charges its own share of the accounts, under its own event ids.
    per_client = args.batches // args.clients
    shares = [accounts[c::args.clients] for c in range(args.clients)]
    work = []
    for c, share in enumerate(shares):
        batches = make_batches(f"bench-{tag}-c{c}", share, per_client)
        work.append({"api": [json.dumps({"events": batch}) for batch in batches],
                     "raw": [raw_rows(batch, tag, account_ids) for batch in batches]})
    warms = []
    for c, share in enumerate(shares):
        warm = make_batches(f"warm-{tag}-c{c}", share, 1)[0]
        warms.append((json.dumps({"events": warm}), raw_rows(warm, f"warm-{tag}", account_ids)))

    # Queue the apply task on the in-memory broker, not eagerly: no worker runs during the timing.
    current_app.conf.CELERY_BROKER_URL = "memory://"
    current_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "1000000/minute"}}
    key = api_key_create(name=f"bench-{tag}", scopes=["events:write"])[1]

    # Forked senders inherit the setup above; none may share this process's connection.
    connections.close_all()
    barrier = multiprocessing.get_context("fork").Barrier(args.clients + 1, timeout=600)
    processes = [multiprocessing.get_context("fork").Process(
        target=sender, args=(key, warms[c], work[c], args.round_batches, barrier)) for c in range(args.clients)]
    for process in processes:
        process.start()
    # Interleave the two sides round by round so both see the same table size and the same
    # machine noise; a round's wall time runs from the common start to the last sender's end.
    seconds = dict.fromkeys(SIDES, 0.0)
    try:
        for _ in range(per_client // args.round_batches):
            for side in SIDES:
                barrier.wait()
                started = time.perf_counter()
                barrier.wait()
                seconds[side] += time.perf_counter() - started
    except BrokenBarrierError:
        for process in processes:
            process.join()
        sys.exit(f"a sender failed (exit codes {[p.exitcode for p in processes]}); see its traceback above")
    for process in processes:
        process.join()
        assert process.exitcode == 0, process.exitcode
    api_seconds, raw_seconds = seconds["api"], seconds["raw"]

    n = args.batches * BATCH
    stored = Event.objects.filter(external_id__startswith=f"bench-{tag}-", applied_at__isnull=True).count()
    assert stored == n, f"{stored} of {n} events stored unapplied"
    # Applying is the ledger work the queued tasks do. A sample goes through the per-event path
    # (`services.apply_event` per event, what applying was before it became set-based), the
    # rest through `apply_pending` (set-based runs per account), both timed.
    # The raw side's rows are copies made to time the INSERT, not events to apply.
    Event.objects.filter(external_id__regex=rf"^raw-(warm-)?{tag}-").update(apply_error="bench: raw INSERT copy")
    stored_ids = list(Event.objects.filter(external_id__startswith=f"bench-{tag}-", applied_at__isnull=True)
                      .order_by("id").values_list("pk", flat=True))
    sample = Event.objects.filter(pk__in=stored_ids[:args.apply_sample]).order_by("id")
    started = time.perf_counter()
    one_by_one = sum(_apply_one(event) for event in sample)
    one_by_one_seconds = time.perf_counter() - started
    started = time.perf_counter()
    set_based = apply_pending(event_ids=stored_ids[args.apply_sample:])
    set_based_seconds = time.perf_counter() - started
    # The set-based side also applies the warm-up batches (same accounts, older ids).
    expected = n + args.clients * BATCH
    assert one_by_one + set_based == expected, f"{one_by_one + set_based} of {expected} events applied"
    assert not Event.objects.filter(external_id__startswith=f"bench-{tag}-", applied_at__isnull=True).exists()
    problems = check_integrity()
    assert problems == [], problems[:5]

    api_rate, raw_rate = n / api_seconds, n / raw_seconds
    print(f"events: {n} in batches of {BATCH}, {args.accounts} accounts, {args.clients} concurrent client(s), "
          f"{args.round_batches} batch(es) per client and round, PostgreSQL {connection.pg_version}")
    print(f"API (POST /api/v1/events, in-process): {api_rate:,.0f} events/s ({api_seconds:.2f} s)")
    print(f"raw multi-row INSERT of the same rows: {raw_rate:,.0f} events/s ({raw_seconds:.2f} s)")
    print(f"ratio API / raw: {api_rate / raw_rate:.2f}")
    if one_by_one:
        print(f"applying, per event (services.apply_event each), a sample: "
              f"{one_by_one / one_by_one_seconds:,.0f} events/s ({one_by_one} events, {one_by_one_seconds:.2f} s)")
    print(f"applying, set-based (apply_pending), the rest: "
          f"{set_based / set_based_seconds:,.0f} events/s ({set_based} events, {set_based_seconds:.2f} s)")


if __name__ == "__main__":
    main()

"""Dashboard at scale (issue 9, part 3): the pages of a referrer with 100,000 referrals.

Generates with SQL only (generate_series, no ORM per row) one referrer, Alice, under the
`runpod` preset: 100,000 referred accounts signed up over the past year (about 60 % converted,
3 % ineligible after a self-referral review, the rest pending), 3 clicks per sign-up, 10 % of
sign-ups through one of her 20 templates, and a year of usage for the referred accounts
(about 900,000 `usage.charged` events). The earnings follow the programme rules and the ledger
balances: a 2 % revenue-share accrual per event, held until her application was approved 45
days in and then released by one `release` transaction; 1 % template share on template
launches; a $500 + $500 serverless milestone for 1 % of the accounts; 0.5 % of the events
refunded with their claw-back (`reversal`); every accrual, reversal and release a balanced
ledger transaction, the balances their projection. `--verify` runs `verify_ledger --no-replay`
on the result (replaying a million events through `apply_event` would take hours).

Then it times, through Django's test client logged in as Alice, each page after a warm-up:
p50 and p95 of the server time and the query count, next to the same numbers for a bare view
behind the same middleware and session (`/__bare__/`), measured in the same run.

    d=$(mktemp -d); url=$(scripts/pg-throwaway.sh start $d)
    DATABASE_URL=$url .venv/bin/python bench/dashboard.py            # --scale 10 for 10,000 referrals
    DATABASE_URL=$url .venv/bin/python bench/dashboard.py --reuse --profile   # time again, with a profile
    scripts/pg-throwaway.sh stop $d

The database is emptied and migrated first (unless `--reuse`): point it at a throwaway database.
"""
import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.bench_settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from referrals.engine import rollups, services  # noqa: E402
from referrals.models import Account, LedgerLine, Program, Referral  # noqa: E402
from referrals.presets import load_preset  # noqa: E402

TARGET_P50_MS = 100
ALICE = "alice@example.com"
PASSWORD = "Sturdy-pass-9911"


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, list(params))
        return cursor.rowcount


def scalar(statement: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, list(params))
        return cursor.fetchone()[0]


def timed(label: str, statement: str, params=()) -> None:
    started = time.perf_counter()
    n = sql(statement, params)
    print(f"  {label:<48} {n:>9} rows {time.perf_counter() - started:6.1f} s", flush=True)


def reset_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    call_command("migrate", verbosity=0)


def generate(n_referrals: int) -> None:
    now = timezone.now().replace(microsecond=0)
    start = now - timedelta(days=365)
    approved_at = start + timedelta(days=45)
    programs = {p.kind: p for p, _ in load_preset("runpod")}
    share = programs[Program.Kind.REVENUE_SHARE]
    milestone = programs[Program.Kind.MILESTONE]
    template_share = programs[Program.Kind.TEMPLATE_SHARE]
    user = get_user_model().objects.create_user(ALICE, ALICE, PASSWORD)
    alice = Account.objects.create(external_id="alice", user=user, email=ALICE, signed_up_at=start,
                                   referral_code="alice001")
    a = alice.pk
    print(f"generating: Alice (account {a}) with {n_referrals} referrals over {start:%Y-%m-%d} .. {now:%Y-%m-%d}",
          flush=True)
    # Loading only: skip the foreign-key and ledger triggers of the bulk inserts (superuser,
    # throwaway database); `--verify` checks the result instead.
    sql("SET session_replication_role = replica")
    # Referred accounts get ids a+1 .. a+n; sign-ups spread evenly over the year.
    timed("referred accounts", """
        INSERT INTO referrals_account (id, external_id, email, email_normalized, referral_code, code_enabled, track,
                                       device_id, purchased_credits, signed_up_at, created_at)
        SELECT %s + g, 'ref-' || g, 'ref-' || g || '@example.net', 'ref-' || g || '@example.net',
               lpad(to_hex(%s + g), 8, 'x'), true, 'basic', '', 0,
               %s::timestamptz + (g - 1) * (INTERVAL '365 days' / %s), %s
        FROM generate_series(1, %s) g""", [a, a, start, n_referrals, now, n_referrals])
    sql("SELECT setval(pg_get_serial_sequence('referrals_account', 'id'), %s)", [a + n_referrals])
    timed("balances (4 books per account)", """
        INSERT INTO ledger_balance (account_id, book, amount)
        SELECT %s + g, b, 0 FROM generate_series(1, %s) g, unnest(ARRAY['pending', 'credits', 'cash', 'reserved']) b
        """, [a, n_referrals])
    timed("templates (20, by Alice)", """
        INSERT INTO referrals_template (external_id, creator_id, name, runtime_seconds, created_at, qualified_at)
        SELECT 'alice-tpl-' || g, %s, 'Template ' || g, 0, %s, %s + INTERVAL '2 days'
        FROM generate_series(1, 20) g""", [a, start, start])
    timed("clicks (3 per sign-up, 5/6 unique)", """
        INSERT INTO referrals_click (public_id, referrer_id, visitor_id, ip_hash, user_agent, path, template_id,
                                     is_unique, created_at)
        SELECT gen_random_uuid(), %s, 'v' || (g / 6 * 5 + g %% 6 %% 5), '', 'Mozilla/5.0', '/', NULL, g %% 6 <> 5,
               %s::timestamptz + g * (INTERVAL '365 days' / %s)
        FROM generate_series(0, 3 * %s - 1) g""", [a, start, 3 * n_referrals, n_referrals])
    # Status: 3 % ineligible (self-referral signals at sign-up), then 60 % of the others converted.
    timed("referrals", """
        INSERT INTO referrals_referral (referrer_id, referred_id, click_id, template_id, status, ineligible_reason,
                                        spend, purchases, created_at)
        SELECT %s, acc.id, NULL,
               CASE WHEN acc.id %% 10 = 3 THEN (SELECT min(id) FROM referrals_template) + acc.id %% 20 END,
               CASE WHEN acc.id %% 33 = 0 THEN 'ineligible' WHEN acc.id %% 10 < 6 THEN 'converted' ELSE 'pending' END,
               CASE WHEN acc.id %% 33 = 0 THEN 'same sign-up IP as the referrer' ELSE '' END, 0, 0, acc.signed_up_at
        FROM referrals_account acc WHERE acc.id > %s""", [a, a])
    # A year of usage: converted accounts (and half the ineligible ones) spend 4 to 26 times
    # between their sign-up and now, $0.10 to $19.10 a time; 30 % serverless, 10 % of the
    # launches from one of Alice's templates. 1 % of the accounts also run one $1,500
    # serverless job, which crosses the $1,000 milestone.
    timed("usage events", """
        INSERT INTO referrals_event (external_id, type, source, account_id, occurred_at, received_at, payload,
                                     content_hash, amount, product, template_id, refunded, runtime_seconds,
                                     applied_at, apply_error)
        SELECT 'use-' || r.referred_id || '-' || i, 'usage.charged', 'api', r.referred_id, t, t, '{}', '',
               CASE WHEN i = 0 THEN 15000000000000 ELSE 1000000000 + (r.referred_id * 7919 + i * 104729) %% 190000000000
               END,
               CASE WHEN i = 0 OR (r.referred_id + i) %% 10 < 3 THEN 'serverless' ELSE 'pods' END,
               CASE WHEN i > 0 AND (r.referred_id + i) %% 10 = 9 THEN tpl.first + (r.referred_id + i) / 10 %% 20 END,
               0,
               CASE WHEN i > 0 AND (r.referred_id + i) %% 10 = 9 THEN 3600 ELSE 0 END, t, ''
        FROM referrals_referral r
        CROSS JOIN (SELECT min(id) AS first FROM referrals_template) tpl
        CROSS JOIN LATERAL generate_series(CASE WHEN r.referred_id %% 100 = 1 THEN 0 ELSE 1 END,
                                           4 + r.referred_id %% 23) i
        CROSS JOIN LATERAL (SELECT r.created_at + (%s - r.created_at) * (i + 0.5) / (6 + r.referred_id %% 23) AS t) x
        WHERE r.referrer_id = %s AND (r.status = 'converted' OR (r.status = 'ineligible' AND r.referred_id %% 2 = 0))
        ORDER BY t""", [now, a])
    # 0.5 % of the usage is refunded in full a day later (or now, if that is in the future).
    timed("refund events", """
        INSERT INTO referrals_event (external_id, type, source, account_id, occurred_at, received_at, payload,
                                     content_hash, amount, product, refunds_id, refunded, runtime_seconds,
                                     applied_at, apply_error)
        SELECT 'refund-' || e.external_id, 'payment.refunded', 'api', e.account_id,
               LEAST(e.occurred_at + INTERVAL '1 day', %s), LEAST(e.occurred_at + INTERVAL '1 day', %s), '{}', '',
               e.amount, '', e.id, 0, 0, LEAST(e.occurred_at + INTERVAL '1 day', %s), ''
        FROM referrals_event e WHERE e.type = 'usage.charged' AND e.id %% 200 = 7""", [now, now, now])
    sql("UPDATE referrals_event e SET refunded = e.amount WHERE e.type = 'usage.charged' AND e.id %% 200 = 7")
    timed("referral spend and conversion", """
        UPDATE referrals_referral r SET spend = s.spend, converted_at = s.first,
               status = CASE WHEN r.status = 'pending' THEN 'converted' ELSE r.status END
        FROM (SELECT account_id, SUM(amount - refunded) AS spend, MIN(occurred_at) AS first FROM referrals_event
              WHERE type = 'usage.charged' GROUP BY account_id) s
        WHERE s.account_id = r.referred_id""")
    timed("template runtime", """
        UPDATE referrals_template t SET runtime_seconds = s.runtime
        FROM (SELECT template_id, SUM(runtime_seconds) AS runtime FROM referrals_event
              WHERE template_id IS NOT NULL GROUP BY 1) s WHERE s.template_id = t.id""")
    # Her revenue-share application, approved 45 days in: what was held for the gate was released then.
    sql("""INSERT INTO referrals_event (external_id, type, source, account_id, occurred_at, received_at, payload,
                                        content_hash, product, refunded, runtime_seconds, applied_at, apply_error)
           VALUES ('alice-approved', 'application.approved', 'staff', %s, %s, %s, '{}', '', '', 0, 0, %s, '')""",
        [a, approved_at, approved_at, approved_at])
    sql("""INSERT INTO referrals_application (program_id, account_id, status, referrals_at_open, spend_at_open,
                                              opened_at, decided_at, reason)
           VALUES (%s, %s, 'approved', 25, 0, %s, %s, '')""", [share.pk, a, approved_at - timedelta(days=1),
                                                                approved_at])
    # Revenue share: 2 % of each usage charge. Held for the gate before approval (released at
    # approval), held for review on ineligible referrals, otherwise released at once.
    timed("revenue-share accruals", """
        INSERT INTO referrals_accrual (program_id, rule, beneficiary_id, event_id, referral_id, template_id, amount,
                                       reversed, destination, track, state, held_for_gate, held_for_template,
                                       held_for_fraud, expires_days, created_at, released_at)
        SELECT %s, 'runpod-revenue-share:2.00%%', %s, e.id, r.id, NULL, e.amount / 50, e.refunded / 50, 'credits',
               '', CASE WHEN r.status = 'ineligible' THEN 'held' ELSE 'released' END, false, false,
               r.status = 'ineligible', 0, e.occurred_at,
               CASE WHEN r.status = 'ineligible' THEN NULL ELSE GREATEST(e.occurred_at, %s) END
        FROM referrals_event e JOIN referrals_referral r ON r.referred_id = e.account_id
        WHERE e.type = 'usage.charged'""", [share.pk, a, approved_at])
    timed("template-share accruals", """
        INSERT INTO referrals_accrual (program_id, rule, beneficiary_id, event_id, referral_id, template_id, amount,
                                       reversed, destination, track, state, held_for_gate, held_for_template,
                                       held_for_fraud, expires_days, created_at, released_at)
        SELECT %s, 'runpod-template-share:1.00%%', %s, e.id, NULL, e.template_id, e.amount / 100, e.refunded / 100,
               'credits', '', 'released', false, false, false, 0, e.occurred_at, e.occurred_at
        FROM referrals_event e WHERE e.type = 'usage.charged' AND e.template_id IS NOT NULL""",
          [template_share.pk, a])
    timed("milestone accruals (referrer and referred)", """
        INSERT INTO referrals_accrual (program_id, rule, beneficiary_id, event_id, referral_id, template_id, amount,
                                       reversed, destination, track, state, held_for_gate, held_for_template,
                                       held_for_fraud, expires_days, created_at, released_at)
        SELECT %s, 'runpod-serverless-milestone:milestone', who, e.id, r.id, NULL, 5000000000000, 0, 'credits', '',
               CASE WHEN r.status = 'ineligible' THEN 'held' ELSE 'released' END, false, false,
               r.status = 'ineligible', 0, e.occurred_at, CASE WHEN r.status <> 'ineligible' THEN e.occurred_at END
        FROM referrals_event e JOIN referrals_referral r ON r.referred_id = e.account_id
        CROSS JOIN LATERAL (VALUES (r.referrer_id), (r.referred_id)) w(who)
        WHERE e.type = 'usage.charged' AND e.amount = 15000000000000""", [milestone.pk])
    sql("""INSERT INTO referrals_milestoneaward (program_id, referral_id, event_id)
           SELECT DISTINCT program_id, referral_id, event_id FROM referrals_accrual WHERE program_id = %s""",
        [milestone.pk])
    # The ledger: one transaction per accrual (sharing its id), its account leg in pending when
    # it was held at the time (before approval, or under review), else in credits.
    timed("ledger: accrual transactions", """
        INSERT INTO ledger_transaction (id, kind, rule, event_id, memo, created_at)
        SELECT id, 'accrual', rule, event_id, '', created_at FROM referrals_accrual""")
    timed("ledger: accrual entries", """
        INSERT INTO ledger_entry (transaction_id, account_id, book, program_id, amount)
        SELECT id, beneficiary_id,
               CASE WHEN state = 'held' OR released_at > created_at THEN 'pending' ELSE destination END,
               program_id, amount FROM referrals_accrual
        UNION ALL SELECT id, NULL, 'platform:earnings', program_id, -amount FROM referrals_accrual
        ORDER BY 1""")
    first_free = scalar("SELECT MAX(id) + 1 FROM ledger_transaction")
    # Refunds claw back from whichever book the accrual sat in at the time.
    timed("ledger: reversal transactions and entries", """
        WITH reversed AS (
            SELECT a.*, f.id AS refund_id, f.occurred_at AS refunded_at FROM referrals_accrual a
            JOIN referrals_event f ON f.refunds_id = a.event_id AND f.type = 'payment.refunded' WHERE a.reversed > 0),
        txns AS (
            INSERT INTO ledger_transaction (id, kind, rule, event_id, memo, created_at)
            SELECT %s + ROW_NUMBER() OVER (ORDER BY refund_id), 'reversal', 'refund', refund_id, '', refunded_at
            FROM (SELECT DISTINCT refund_id, refunded_at FROM reversed) d RETURNING id, event_id)
        INSERT INTO ledger_entry (transaction_id, account_id, book, program_id, amount)
        SELECT t.id, r.beneficiary_id,
               CASE WHEN r.state = 'held' OR r.released_at > r.refunded_at THEN 'pending' ELSE r.destination END,
               r.program_id, -r.reversed FROM reversed r JOIN txns t ON t.event_id = r.refund_id
        UNION ALL SELECT t.id, NULL, 'platform:earnings', r.program_id, r.reversed
        FROM reversed r JOIN txns t ON t.event_id = r.refund_id""", [first_free])
    release_txn = scalar("SELECT MAX(id) + 1 FROM ledger_transaction")
    sql("""INSERT INTO ledger_transaction (id, kind, rule, event_id, memo, created_at)
           SELECT %s, 'release', 'runpod-revenue-share:approved', id, '', occurred_at FROM referrals_event
           WHERE external_id = 'alice-approved'""", [release_txn])
    # What the approval released is what sat in pending then (accrued before, less what was
    # refunded before) and is not held for review still.
    timed("ledger: release at approval", """
        INSERT INTO ledger_entry (transaction_id, account_id, book, program_id, amount)
        SELECT %s, p.account_id, b.book, p.program_id, b.sign * (p.total - COALESCE(h.held, 0))
        FROM (SELECT account_id, program_id, SUM(amount) AS total FROM ledger_entry
              WHERE account_id = %s AND book = 'pending' GROUP BY 1, 2) p
        LEFT JOIN (SELECT beneficiary_id, program_id, SUM(amount - reversed) AS held FROM referrals_accrual
                   WHERE state = 'held' GROUP BY 1, 2) h
               ON h.beneficiary_id = p.account_id AND h.program_id = p.program_id
        CROSS JOIN (VALUES ('pending', -1), ('credits', 1)) b(book, sign)
        WHERE p.total <> COALESCE(h.held, 0)""", [release_txn, a])
    sql("SELECT setval(pg_get_serial_sequence('ledger_transaction', 'id'), %s)", [release_txn])
    timed("balances from the ledger", """
        UPDATE ledger_balance b SET amount = s.total FROM (
            SELECT account_id, book, SUM(amount) AS total FROM ledger_entry WHERE account_id IS NOT NULL
            GROUP BY 1, 2) s
        WHERE b.account_id = s.account_id AND b.book = s.book""")
    sql("INSERT INTO ledger_balance (account_id, book, amount) SELECT %s, b, 0 FROM unnest(ARRAY['pending', "
        "'credits', 'cash', 'reserved']) b ON CONFLICT DO NOTHING", [a])
    sql("""UPDATE ledger_balance b SET amount = s.total FROM (
               SELECT book, SUM(amount) AS total FROM ledger_entry WHERE account_id = %s GROUP BY 1) s
           WHERE b.account_id = %s AND b.book = s.book""", [a, a])
    sql("SET session_replication_role = DEFAULT")
    # The rollup's triggers did not fire during the load (replica mode): roll up what was loaded.
    started = time.perf_counter()
    for table, n in rollups.rebuild().items():
        print(f"  {'rebuilt ' + table:<48} {n:>9} rows")
    print(f"  {'rollups and ledger lines rebuilt':<48} {'':>9}      {time.perf_counter() - started:6.1f} s")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # VACUUM sets the hint bits and visibility map of the freshly loaded rows, as autovacuum
        # would long have done on a live database (index-only scans depend on it).
        cursor.execute("VACUUM ANALYZE")
    print(f"  {'vacuum analyze':<48} {'':>9}      {time.perf_counter() - started:6.1f} s", flush=True)
    for table in ("referrals_referral", "referrals_click", "referrals_event", "referrals_accrual", "ledger_entry"):
        print(f"  {table:<48} {scalar(f'SELECT COUNT(*) FROM {table}'):>9} rows")


# --------------------------------------------------------------------------- timing


def pages(alice: Account, n_referrals: int) -> dict[str, str]:
    deep = max(n_referrals // 25 // 2, 1)
    # 500 pages of 50 into her earnings (or half-way, when smaller), as "Older" links get there.
    lines = LedgerLine.objects.filter(account_id=alice.pk).order_by("-happened_at", "-entry_id")
    line = lines[min(500 * 50, lines.count() // 2)]
    cursor = f"{round(line.happened_at.timestamp() * 1_000_000)}.{line.entry_id}"
    newest = Referral.objects.filter(referrer=alice).order_by("-created_at", "-id")
    boundary = newest[min(deep * 25, n_referrals - 1) - 1]
    referral_cursor = f"{round(boundary.created_at.timestamp() * 1_000_000)}.{boundary.pk}"
    return {
        "bare logged-in view (baseline)": "/__bare_user__/",
        "overview": "/dashboard/",
        "referrals, page 1": "/dashboard/referrals/",
        f"referrals, page {deep} (Older link)": f"/dashboard/referrals/?page={deep}&before={referral_cursor}",
        f"referrals, ?page={deep} typed": f"/dashboard/referrals/?page={deep}",
        "referrals, converted, search": "/dashboard/referrals/?status=converted&q=ref-99",
        "earnings, page 1": "/dashboard/earnings/",
        "earnings, deep (keyset)": f"/dashboard/earnings/?before={cursor}",
    }


def measure(client: Client, path: str, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        assert client.get(path).status_code == 200, path
    times, cpu, db, queries = [], [], [], []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            # CPU time of this process (Django, templates, the driver): unlike the wall time it
            # does not grow while the process waits for a core on a busy machine.
            cpu.append((time.process_time() - started_cpu) * 1000)
        assert response.status_code == 200, path
        queries.append(len(captured.captured_queries))
        db.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
    times.sort()
    return {"p50": statistics.median(times), "p95": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
            "cpu": statistics.median(cpu), "db": statistics.median(db), "queries": max(queries),
            "body": len(response.content)}


def round_trip_ms(runs: int = 200) -> float:
    """What one trivial query costs here: the floor under every query of a page."""
    times = []
    with connection.cursor() as cursor:
        for _ in range(runs):
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def profile(client: Client, path: str, top: int = 5) -> None:
    """The page's slowest queries (database time) and the plan of the slowest."""
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        client.get(path)
        total = (time.perf_counter() - started) * 1000
    queries = sorted(captured.captured_queries, key=lambda q: -float(q["time"]))
    db_ms = sum(float(q["time"]) for q in queries) * 1000
    print(f"\n--- {path}: {total:.1f} ms, {len(queries)} queries, {db_ms:.1f} ms in the database, "
          f"{total - db_ms:.1f} ms outside")
    for q in queries[:top]:
        print(f"  {float(q['time']) * 1000:7.1f} ms  {q['sql'][:300]}")
    slowest = queries[0]["sql"]
    if slowest.lstrip().upper().startswith("SELECT"):
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest)
            print("  plan of the slowest:")
            for (line,) in cursor.fetchall():
                print("    " + line)


ROLLUP_TRIGGERS = [("referrals_accrual", "referrals_earnings_rollup_insert"),
                   ("referrals_accrual", "referrals_earnings_rollup_update"),
                   ("referrals_referral", "referrals_referral_rollup_update"),
                   ("ledger_entry", "referrals_ledger_line_insert")]


def write_cost(alice: Account, rounds: int = 5, per_round: int = 20) -> None:
    """What the rollup and ledger-line triggers add to applying a usage event: the same events
    through `ingest_event`, alternately with those triggers on and off, in one transaction that
    is rolled back (so nothing is left half rolled up)."""
    accounts = list(Referral.objects.filter(referrer=alice, status="converted").order_by("id")
                    .values_list("referred__external_id", flat=True)[:per_round])
    now = timezone.now()
    timings = {"on": [], "off": []}
    n = 0
    with transaction.atomic():
        for _ in range(rounds):
            for mode in ("on", "off"):
                # Django's foreign keys are deferred: run their pending checks, or ALTER TABLE refuses.
                sql("SET CONSTRAINTS ALL IMMEDIATE")
                for table, trigger in ROLLUP_TRIGGERS:
                    sql(f"ALTER TABLE {table} {'ENABLE' if mode == 'on' else 'DISABLE'} TRIGGER {trigger}")
                sql("SET CONSTRAINTS ALL DEFERRED")
                for account in accounts:
                    n += 1
                    raw = {"id": f"bench-write-{n}", "type": "usage.charged", "account": account, "amount": "1.25",
                           "product": "pods", "occurred_at": (now - timedelta(seconds=n)).isoformat()}
                    started = time.perf_counter()
                    assert services.ingest_event(raw, now=now).status == "accepted"
                    timings[mode].append((time.perf_counter() - started) * 1000)
        transaction.set_rollback(True)
    on, off = statistics.median(timings["on"]), statistics.median(timings["off"])
    print(f"\nwrite path, one usage.charged through ingest_event ({len(timings['on'])} events each, interleaved):"
          f"\n  rollup and ledger-line triggers on  p50 {on:6.2f} ms\n  triggers off                        "
          f"p50 {off:6.2f} ms\n  cost of the triggers {on - off:+.2f} ms ({(on - off) / off:+.0%})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1, help="divide the 100,000 referrals by this")
    parser.add_argument("--reuse", action="store_true", help="time the data already in the database")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per page (0: time no page)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print each page's slowest queries and a plan")
    parser.add_argument("--verify", action="store_true", help="run verify_ledger --no-replay on the data")
    parser.add_argument("--write-cost", action="store_true",
                        help="also time applying usage events with the rollup triggers on and off")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print("bench/dashboard.py needs PostgreSQL: set DATABASE_URL to a throwaway database", file=sys.stderr)
        return 2
    if args.scale < 1 or args.runs < 0:
        parser.error("--scale and --runs: whole numbers >= 1")
    print(f"PostgreSQL {connection.pg_version}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if not args.reuse:
        reset_database()
        started = time.perf_counter()
        generate(100_000 // args.scale)
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    if args.verify:
        started = time.perf_counter()
        call_command("verify_ledger", "--no-replay")
        problems = rollups.earnings_differences() + rollups.referrer_differences()
        print("\n".join(problems[:20]) or "rollups match the accruals, referrals, clicks and the ledger")
        if problems:
            return 1
        print(f"verified in {time.perf_counter() - started:.0f} s", flush=True)
    alice = Account.objects.get(email=ALICE)
    n_referrals = alice.referrals.count()
    client = Client()
    client.force_login(alice.user, backend="django.contrib.auth.backends.ModelBackend")
    print(f"\n{n_referrals} referrals; {args.runs} runs per page after {args.warmup} warm-up runs; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'/ bare':>7} {'cpu ms':>7} {'db ms':>7} {'queries':>8} "
          f"{'KB':>6}")
    results = {}
    for label, path in pages(alice, n_referrals).items() if args.runs else ():
        results[label] = row = measure(client, path, args.runs, args.warmup)
        ratio = row["p50"] / results["bare logged-in view (baseline)"]["p50"]
        print(f"{label:<36} {row['p50']:8.1f} {row['p95']:8.1f} {ratio:7.1f} {row['cpu']:7.1f} {row['db']:7.1f} "
              f"{row['queries']:8d} "
              f"{row['body'] / 1024:6.0f}", flush=True)
    if args.runs:
        print(f"one database round trip (SELECT 1): p50 {round_trip_ms():.2f} ms")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.write_cost:
        write_cost(alice)
    if not results:
        return 0
    missed = [label for label, row in results.items() if row["p50"] >= TARGET_P50_MS]
    print(f"target p50 < {TARGET_P50_MS} ms: {'met' if not missed else 'NOT met by ' + ', '.join(missed)}")
    if args.profile and args.runs:
        for label, path in pages(alice, n_referrals).items():
            if label != "bare logged-in view (baseline)":
                profile(client, path)
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())

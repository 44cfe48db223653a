"""Scale benchmark of the periodic jobs on PostgreSQL (issue 3).

Generates, with SQL only (generate_series), 50k referrers, 1M referred accounts, 10M usage
events and the accruals and credit grants the jobs work on (`--small`: 1/100 of that), then for
each job prints its wall time next to the time of the single aggregate SQL query that reads its
input, measured in the same run, as a ratio, and the process's peak RSS.

    d=$(mktemp -d); url=$(scripts/pg-throwaway.sh start $d)
    DATABASE_URL=$url .venv/bin/python bench/jobs.py --small     # or without --small: full size
    scripts/pg-throwaway.sh stop $d

Two versions of the code on the same load, in turns: `--generate-only` into two throwaway
databases (one migrated by each version), then `--keep-data --rolled-back N` against each.

The database is emptied and migrated first: point it at a throwaway database only.
"""
import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from ledger.money import to_units  # noqa: E402
from referrals.engine import outbox  # noqa: E402
from referrals.engine.jobs import run_jobs  # noqa: E402
from referrals.models import Program  # noqa: E402
from referrals.presets import load_preset  # noqa: E402

AT = datetime(2026, 7, 1, tzinfo=UTC)
TARGET_RATIO = 3.0
TARGET_RSS_MB = 300


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def timed(label: str, statement: str, params=()) -> None:
    started = time.perf_counter()
    n = sql(statement, params)
    print(f"  {label:<44} {n:>10} rows {time.perf_counter() - started:7.1f} s", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    call_command("migrate", verbosity=0)


def generate(scale: int) -> dict:
    referrers, referred, events, templates = 50_000 // scale, 1_000_000 // scale, 10_000_000 // scale, 5_000 // scale
    runpod = {p.kind: p for p, _ in load_preset("runpod")}
    apimarket = {p.kind: p for p, _ in load_preset("apimarket")}
    share, template_share = runpod[Program.Kind.REVENUE_SHARE], runpod[Program.Kind.TEMPLATE_SHARE]
    milestone, signup = runpod[Program.Kind.MILESTONE], apimarket[Program.Kind.SIGNUP_CREDIT]
    n_accounts = referrers + referred
    # Loading only: skip the foreign-key triggers of the bulk inserts (superuser, throwaway database).
    sql("SET session_replication_role = replica")
    print(f"generating: {referrers} referrers, {referred} referred accounts, {events} usage events, "
          f"{templates} templates", flush=True)
    # Sign-ups spread over the first half of 2026; referrers signed up on Jan 1st.
    timed("accounts", """
        INSERT INTO referrals_account (id, external_id, email, email_normalized, referral_code, code_enabled, track,
                                       device_id, purchased_credits, signed_up_at, created_at)
        SELECT g, 'acct-' || g, '', '', lpad(to_hex(g), 8, '0'), true, 'basic', '', 0,
               CASE WHEN g <= %s THEN TIMESTAMPTZ '2026-01-01'
                    ELSE TIMESTAMPTZ '2026-01-01' + (g %% 181) * INTERVAL '1 day' END, now()
        FROM generate_series(1, %s) g""", [referrers, n_accounts])
    timed("balances (4 books per account)", """
        INSERT INTO ledger_balance (account_id, book, amount)
        SELECT g, b, 0 FROM generate_series(1, %s) g, unnest(ARRAY['pending', 'credits', 'cash', 'reserved']) b""",
          [n_accounts])
    # Skewed: low referrer ids refer many accounts (some pass the 25-referral gate), most a few.
    timed("referrals", """
        INSERT INTO referrals_referral (referrer_id, referred_id, status, ineligible_reason, spend, purchases,
                                        created_at, converted_at)
        SELECT 1 + floor(%s * power(random(), 1.6))::bigint, a.id,
               CASE WHEN a.id %% 97 = 0 THEN 'ineligible' ELSE 'converted' END, '', 0, 0, a.signed_up_at,
               a.signed_up_at
        FROM referrals_account a WHERE a.id > %s""", [referrers, referrers])
    # 90 % of the templates qualified live long ago; the others cross the 24 h gate only in this
    # run (the job's catch-up case, e.g. after staff lowered the gate), with their earnings held.
    timed("templates (by referrers)", """
        INSERT INTO referrals_template (external_id, creator_id, name, runtime_seconds, created_at, qualified_at)
        SELECT 'tpl-' || g, 1 + (g * 7) %% %s, '', 0, now(),
               CASE WHEN g %% 10 <> 0 THEN TIMESTAMPTZ '2026-01-02' END
        FROM generate_series(1, %s) g""",
          [referrers, templates])
    # Ten usage events per referred account; 30 % serverless; 10 % launched from a template.
    # 1 % of the accounts are heavy serverless users that cross the $1,000 milestone.
    timed("usage events", """
        INSERT INTO referrals_event (external_id, type, source, account_id, occurred_at, received_at, payload,
                                     content_hash, amount, product, template_id, refunded, runtime_seconds,
                                     applied_at, apply_error)
        SELECT 'use-' || g, 'usage.charged', 'api', a, t, t, '{}', '',
               CASE WHEN a %% 100 = 0 THEN 1500000000000 ELSE 1000000000 + (g * 7919) %% 190000000000 END,
               CASE WHEN a %% 100 = 0 OR g %% 10 < 3 THEN 'serverless' ELSE 'pods' END,
               CASE WHEN g %% 10 = 0 THEN 1 + (g / 10) %% %s END, 0,
               CASE WHEN g %% 10 = 0 THEN 600 + (g %% 7) * 1800 ELSE 0 END, t, ''
        FROM (SELECT g, %s + 1 + (g %% %s) AS a,
                     TIMESTAMPTZ '2026-01-01' + (g %% 181) * INTERVAL '1 day' + (g %% 86400) * INTERVAL '1 second' AS t
              FROM generate_series(1, %s::bigint) g) s""", [templates, referrers, referred, events])
    # The job event every accrual below hangs from (accruals need an event).
    timed("seed event", """
        INSERT INTO referrals_event (external_id, type, source, occurred_at, received_at, payload, content_hash,
                                     product, refunded, runtime_seconds, applied_at, apply_error)
        VALUES ('bench-seed', 'bench.seed', 'job', '2026-01-01', now(), '{}', '', '', 0, 0, now(), '')""")
    # Sign-up credit: one released accrual and one grant per referred account, 30 days. Those
    # that lapsed before June were expired by earlier runs; the ones lapsing in June are due.
    timed("sign-up credit accruals", """
        INSERT INTO referrals_accrual (program_id, rule, beneficiary_id, event_id, referral_id, amount, reversed,
                                       destination, track, state, held_for_gate, held_for_template, held_for_fraud,
                                       expires_days, created_at, released_at)
        SELECT %s, 'signup', r.referred_id, (SELECT id FROM referrals_event WHERE external_id = 'bench-seed'), r.id,
               25000000000, 0, 'credits', '', 'released', false, false, false, 30, r.created_at, r.created_at
        FROM referrals_referral r""", [signup.pk])
    timed("credit grants", """
        INSERT INTO referrals_creditgrant (account_id, accrual_id, amount, remaining, expires_at, expired_at)
        SELECT a.beneficiary_id, a.id, a.amount, CASE WHEN a.created_at + INTERVAL '30 days' < '2026-06-01' THEN 0
               ELSE a.amount - (a.id %% 3) * 5000000000 END,
               a.created_at + INTERVAL '30 days',
               CASE WHEN a.created_at + INTERVAL '30 days' < '2026-06-01' THEN a.created_at + INTERVAL '30 days' END
        FROM referrals_accrual a WHERE a.program_id = %s""", [signup.pk])
    # Revenue share: 2 % of every 10th event, held 14 days; earlier ones released by earlier runs,
    # those that came due in the last two weeks are held and due now.
    timed("revenue-share accruals (1 per 10 events)", """
        INSERT INTO referrals_accrual (program_id, rule, beneficiary_id, event_id, referral_id, amount, reversed,
                                       destination, track, state, held_for_gate, held_for_template, held_for_fraud,
                                       held_until, expires_days, created_at, released_at)
        SELECT %s, 'share', r.referrer_id, e.id, r.id, e.amount / 50, 0, 'credits', '',
               CASE WHEN e.occurred_at + INTERVAL '14 days' < '2026-06-17' THEN 'released' ELSE 'held' END,
               false, false, r.status = 'ineligible', e.occurred_at + INTERVAL '14 days', 0, e.occurred_at,
               CASE WHEN e.occurred_at + INTERVAL '14 days' < '2026-06-17' THEN e.occurred_at + INTERVAL '14 days' END
        FROM referrals_event e JOIN referrals_referral r ON r.referred_id = e.account_id
        WHERE e.type = 'usage.charged' AND e.id %% 10 = 1""", [share.pk])
    timed("template accruals", """
        INSERT INTO referrals_accrual (program_id, rule, beneficiary_id, event_id, template_id, amount, reversed,
                                       destination, track, state, held_for_gate, held_for_template, held_for_fraud,
                                       expires_days, created_at, released_at)
        SELECT %s, 'template', t.creator_id, e.id, t.id, e.amount / 100, 0, 'credits', '',
               CASE WHEN t.qualified_at IS NULL THEN 'held' ELSE 'released' END, false, t.qualified_at IS NULL,
               false, 0, e.occurred_at, CASE WHEN t.qualified_at IS NOT NULL THEN e.occurred_at END
        FROM referrals_event e JOIN referrals_template t ON t.id = e.template_id""", [template_share.pk])
    # Half the heavy serverless users got their milestone live; the others were missed.
    timed("milestone awards paid live", """
        INSERT INTO referrals_milestoneaward (program_id, referral_id, event_id)
        SELECT %s, r.id, (SELECT id FROM referrals_event WHERE external_id = 'bench-seed')
        FROM referrals_referral r WHERE r.referred_id %% 200 = 0""", [milestone.pk])
    timed("balances: pending and credits from accruals", """
        UPDATE ledger_balance b SET amount = s.total FROM (
            SELECT beneficiary_id, CASE WHEN state = 'held' THEN 'pending' ELSE destination END AS book,
                   SUM(amount - reversed) AS total
            FROM referrals_accrual GROUP BY 1, 2) s
        WHERE b.account_id = s.beneficiary_id AND b.book = s.book""")
    sql("SET session_replication_role = DEFAULT")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in ("referrals_account", "referrals_referral", "referrals_event", "referrals_accrual",
                      "referrals_creditgrant", "referrals_template", "ledger_balance", "referrals_milestoneaward"):
            # VACUUM too: sets the hint bits and visibility map of the freshly loaded rows, as
            # autovacuum would have long done on a live database.
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute("SELECT setval(pg_get_serial_sequence('referrals_account', 'id'), %s)", [n_accounts])
    print(f"  {'vacuum analyze':<44} {'':>10}      {time.perf_counter() - started:7.1f} s", flush=True)
    return {"share": share, "template_share": template_share, "milestone": milestone}


def input_queries(programs: dict) -> dict[str, tuple[str, list]]:
    """Per job: the one aggregate query that reads what the job needs (the ratio's baseline)."""
    template_share, milestone = programs["template_share"], programs["milestone"]
    return {
        "revenue_share_gates": ("""
            SELECT r.referrer_id, SUM(e.amount - e.refunded)
            FROM referrals_event e JOIN referrals_referral r ON r.referred_id = e.account_id
            WHERE e.type = 'usage.charged' AND e.occurred_at <= %s AND r.status <> 'ineligible'
              AND r.created_at <= %s GROUP BY r.referrer_id""", [AT, AT]),
        "template_gates": ("""
            SELECT template_id, SUM(runtime_seconds) FROM referrals_event
            WHERE type = 'usage.charged' AND occurred_at <= %s AND template_id IS NOT NULL
            GROUP BY template_id HAVING SUM(runtime_seconds) >= %s""",
                           [AT, int(template_share.template_min_runtime_hours * 3600)]),
        "milestones": ("""
            SELECT account_id, SUM(amount - refunded) FROM referrals_event
            WHERE type = 'usage.charged' AND occurred_at <= %s AND product = %s AND account_id IS NOT NULL
            GROUP BY account_id HAVING SUM(amount - refunded) >= %s""",
                       [AT, milestone.product, to_units(milestone.milestone_threshold)]),
        "expire_credits": ("""
            SELECT g.account_id, a.program_id, SUM(g.remaining)
            FROM referrals_creditgrant g JOIN referrals_accrual a ON a.id = g.accrual_id
            WHERE g.expires_at <= %s AND g.expired_at IS NULL GROUP BY 1, 2""", [AT]),
        "release_holds": ("""
            SELECT beneficiary_id, program_id, destination, SUM(amount - reversed) FROM referrals_accrual
            WHERE state = 'held' AND held_until <= %s AND NOT held_for_gate AND NOT held_for_template
              AND NOT held_for_fraud GROUP BY 1, 2, 3""", [AT]),
    }


def measure(programs: dict) -> list[dict]:
    rows = []
    for job, (query, params) in input_queries(programs).items():
        with connection.cursor() as cursor:
            cursor.execute(query, params)  # warm the cache for both, then time the query
            cursor.fetchall()
            started = time.perf_counter()
            cursor.execute(query, params)
            n_input = len(cursor.fetchall())
            query_s = time.perf_counter() - started
        started = time.perf_counter()
        counts = run_jobs(at=AT, names=[job])[job]
        job_s = time.perf_counter() - started
        row = {"job": job, "input_rows": n_input, "query_s": query_s, "job_s": job_s, "ratio": job_s / query_s,
               "peak_rss_mb": peak_rss_mb(), "counts": counts}
        rows.append(row)
        print(f"{job:<22} input {n_input:>9} groups  query {query_s:7.2f} s  job {job_s:7.2f} s  "
              f"ratio {row['ratio']:5.2f}  peak RSS {row['peak_rss_mb']:6.1f} MB  {counts}", flush=True)
    return rows


WRITING_JOBS = ["template_gates", "expire_credits", "release_holds"]


def compare_triggers(programs: dict) -> None:
    """Each writing job twice on the same data, each time in a transaction rolled back at the end:
    with 0002's per-entry balance trigger (re-installed inside that transaction) and with 0003's
    check once per transaction. SET CONSTRAINTS ALL IMMEDIATE runs the deferred checks before the
    clock stops, so the commit-time cost is timed too. The input query is timed next to them."""
    from importlib import import_module

    from django.db import transaction

    old_trigger = import_module("ledger.migrations.0003_balance_check_once_per_transaction").BACKWARD
    queries = input_queries(programs)
    for job in WRITING_JOBS:
        query, params = queries[job]
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            cursor.fetchall()
            started = time.perf_counter()
            cursor.execute(query, params)
            cursor.fetchall()
            query_s = time.perf_counter() - started
        for label, ddl in (("per-entry trigger (0002)", old_trigger), ("per-transaction check (0003)", None)):
            with transaction.atomic(), connection.cursor() as cursor:
                if ddl:
                    cursor.execute(ddl)
                started = time.perf_counter()
                counts = run_jobs(at=AT, names=[job])[job]
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                job_s = time.perf_counter() - started
                transaction.set_rollback(True)
            print(f"{job:<22} {label:<29} query {query_s:7.2f} s  job+checks {job_s:7.2f} s  "
                  f"ratio {job_s / query_s:6.2f}  {counts} (rolled back)", flush=True)


def rolled_back_runs(programs: dict, rounds: int) -> None:
    """Each writing job `rounds` times on the same data, each run in a transaction rolled back at
    the end, with the deferred checks forced (SET CONSTRAINTS ALL IMMEDIATE) before the clock
    stops and the input query timed just before: two databases loaded alike (`--generate-only`)
    can then be measured in turns with two versions of the code (`--keep-data`)."""
    from django.db import transaction

    queries = input_queries(programs)
    for n in range(1, rounds + 1):
        for job in WRITING_JOBS:
            query, params = queries[job]
            with connection.cursor() as cursor:
                cursor.execute(query, params)
                cursor.fetchall()
                started = time.perf_counter()
                cursor.execute(query, params)
                cursor.fetchall()
                query_s = time.perf_counter() - started
            with transaction.atomic(), connection.cursor() as cursor:
                started = time.perf_counter()
                counts = run_jobs(at=AT, names=[job])[job]
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                job_s = time.perf_counter() - started
                transaction.set_rollback(True)
            print(f"round {n} {job:<22} query {query_s:7.2f} s  job+checks {job_s:7.2f} s  "
                  f"ratio {job_s / query_s:6.2f}  {counts} (rolled back), load {os.getloadavg()[0]:.2f}", flush=True)


def loaded_programs() -> dict:
    """The programmes `generate` loaded, for a run on data loaded before (`--keep-data`)."""
    return {name: Program.objects.get(kind=kind) for name, kind in (
        ("share", Program.Kind.REVENUE_SHARE), ("template_share", Program.Kind.TEMPLATE_SHARE),
        ("milestone", Program.Kind.MILESTONE))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="1/100 of the full size, for a quick run")
    parser.add_argument("--with-consumers", action="store_true",
                        help="keep the outbox consumers (webhooks, e-mails) subscribed: their per-message "
                             "delivery after commit is then timed with the job")
    parser.add_argument("--scale", type=int, help="divide the full size by this (default 1, or 100 with --small)")
    parser.add_argument("--chunk", type=int,
                        help="moves per ledger transaction (referrals.engine.bulk.CHUNK) for the jobs")
    parser.add_argument("--compare-trigger", action="store_true",
                        help="first time the writing jobs with the old per-entry balance trigger and the new "
                             "per-transaction check, on the same data, rolled back")
    parser.add_argument("--generate-only", action="store_true", help="empty, migrate and load the database, then stop")
    parser.add_argument("--keep-data", action="store_true",
                        help="use the data a --generate-only run loaded instead of loading it again")
    parser.add_argument("--rolled-back", type=int, metavar="ROUNDS",
                        help="time the writing jobs ROUNDS times each, rolled back, instead of the committed runs")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print("bench/jobs.py needs PostgreSQL: set DATABASE_URL to a throwaway database", file=sys.stderr)
        return 2
    scale = args.scale or (100 if args.small else 1)
    if not args.with_consumers:
        # The jobs publish one outbox message per account they credit; what consumers do with it
        # (webhook fan-out, e-mails) is their own cost, not the job's.
        outbox._consumers.clear()
    if scale < 1:
        parser.error("--scale: must be a whole number >= 1")
    print(f"PostgreSQL {connection.pg_version}, {os.cpu_count()} CPUs, scale 1/{scale}, "
          f"chunk {args.chunk or 'default'}", flush=True)
    if args.keep_data:
        programs = loaded_programs()
    else:
        reset_database()
        started = time.perf_counter()
        programs = generate(scale)
        print(f"generated in {time.perf_counter() - started:.0f} s; jobs as of {AT.isoformat()}", flush=True)
        if args.generate_only:
            return 0
    if args.chunk:
        from referrals.engine import bulk
        bulk.CHUNK = args.chunk
    if args.compare_trigger:
        print(f"load average before: {os.getloadavg()}", flush=True)
        compare_triggers(programs)
    if args.rolled_back:
        print(f"load average before: {os.getloadavg()}", flush=True)
        rolled_back_runs(programs, args.rolled_back)
        print(f"load average after: {os.getloadavg()}", flush=True)
        return 0
    print(f"load average before the jobs: {os.getloadavg()}", flush=True)
    rows = measure(programs)
    print(f"load average after: {os.getloadavg()}", flush=True)
    worst_ratio = max(r["ratio"] for r in rows)
    peak = max(r["peak_rss_mb"] for r in rows)
    met = worst_ratio <= TARGET_RATIO and peak < TARGET_RSS_MB
    print(f"worst ratio {worst_ratio:.2f} (target <= {TARGET_RATIO}), peak RSS {peak:.0f} MB "
          f"(target < {TARGET_RSS_MB}): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""Admin changelists on a million ledger rows (issue 6), PostgreSQL.

Inserts with SQL only (generate_series) 1M ledger entries, 1M events and 1M clicks for 1,000
accounts (`--rows` to change it), runs ANALYZE, then times each changelist through the Django test
client in this process, unfiltered, filtered and searched: the median of 5 requests and the number
of queries. For contrast, the same pages with Django's stock paginator and full result count (a
COUNT(*) over the filtered table, twice when filtered), measured in the same run.

    d=$(mktemp -d); url=$(scripts/pg-throwaway.sh start $d)
    DATABASE_URL=$url .venv/bin/python bench/admin.py
    scripts/pg-throwaway.sh stop $d

Point it at a throwaway database only: it migrates and fills it.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

import django  # noqa: E402

django.setup()

from django.contrib import admin  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.paginator import Paginator  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

from ledger.models import Entry  # noqa: E402
from referrals.models import Click, Event  # noqa: E402

PAGES = [
    ("entries", Entry, "/admin/ledger/entry/"),
    ("entries, one book", Entry, "/admin/ledger/entry/?book__exact=credits"),
    ("entries, one account", Entry, "/admin/ledger/entry/?q=acct-7"),
    ("entries, one txn", Entry, "/admin/ledger/entry/?q=12345"),
    ("events", Event, "/admin/referrals/event/"),
    ("events, one type", Event, "/admin/referrals/event/?type=usage.charged"),
    ("events, one account", Event, "/admin/referrals/event/?q=acct-7"),
    ("clicks", Click, "/admin/referrals/click/"),
    ("clicks, one referrer", Click, "/admin/referrals/click/?q=acct-7"),
]


def sql(statement: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def fill(rows: int) -> None:
    started = time.perf_counter()
    sql("INSERT INTO referrals_account (external_id, email, email_normalized, referral_code, code_enabled, track, "
        "device_id, purchased_credits, signed_up_at, created_at) "
        "SELECT 'acct-' || i, '', '', 'c' || lpad(i::text, 7, '0'), true, 'basic', '', 0, now(), now() "
        "FROM generate_series(1, 1000) i")
    sql("INSERT INTO ledger_transaction (kind, rule, memo, created_at) "
        "SELECT 'accrual', 'bench', '', now() - (i || ' minutes')::interval FROM generate_series(1, %s) i",
        [rows // 2])
    sql("INSERT INTO ledger_entry (transaction_id, account_id, book, amount) "
        "SELECT t.id, a.id, 'credits', 100 FROM ledger_transaction t "
        "JOIN referrals_account a ON a.external_id = 'acct-' || (t.id % 1000 + 1) "
        "UNION ALL SELECT t.id, NULL, 'platform:earnings', -100 FROM ledger_transaction t")
    sql("INSERT INTO referrals_event (external_id, type, source, account_id, occurred_at, received_at, payload, "
        "content_hash, product, refunded, runtime_seconds, apply_error) "
        "SELECT 'bench-' || i, CASE WHEN i %% 10 = 0 THEN 'credits.purchased' ELSE 'usage.charged' END, 'api', "
        "(SELECT min(id) FROM referrals_account) + i %% 1000, now(), now(), '{}', '', '', 0, 0, '' "
        "FROM generate_series(1, %s) i", [rows])
    sql("INSERT INTO referrals_click (public_id, referrer_id, visitor_id, ip_hash, user_agent, path, is_unique, "
        "created_at) "
        "SELECT gen_random_uuid(), (SELECT min(id) FROM referrals_account) + i %% 1000, 'v' || i, '', '', '/', true, "
        "now() "
        "FROM generate_series(1, %s) i", [rows])
    sql("ANALYZE")
    print(f"filled in {time.perf_counter() - started:.1f} s", flush=True)


def measure(client: Client, path: str) -> tuple[float, float, int]:
    """Median page time and median time in SQL (ms), and the page's number of queries."""
    client.get(path)  # warm the cache
    times, sql_times = [], []
    for _ in range(5):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
        sql_times.append(sum(float(q["time"]) for q in queries) * 1000)
    return statistics.median(times), statistics.median(sql_times), len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("needs PostgreSQL: set DATABASE_URL to a throwaway database")
    setup_test_environment()
    call_command("migrate", verbosity=0)
    fill(args.rows)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pass-123")
    client = Client()
    client.force_login(user)
    load = os.getloadavg()
    print(f"rows per table: {args.rows:,}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'page':<22} {'ours: ms':>9} {'SQL ms':>7} {'queries':>7}   {'stock: ms':>9} {'SQL ms':>7} "
          f"{'queries':>7}   {'SQL ratio':>9}")
    for label, model, path in PAGES:
        ours, ours_sql, ours_queries = measure(client, path)
        model_admin = admin.site._registry[model]
        saved = (model_admin.paginator, model_admin.show_full_result_count)
        model_admin.paginator, model_admin.show_full_result_count = Paginator, True
        try:
            stock, stock_sql, stock_queries = measure(client, path)
        finally:
            model_admin.paginator, model_admin.show_full_result_count = saved
        print(f"{label:<22} {ours:9.0f} {ours_sql:7.1f} {ours_queries:7d}   {stock:9.0f} {stock_sql:7.1f} "
              f"{stock_queries:7d}   {stock_sql / ours_sql:9.1f}", flush=True)


if __name__ == "__main__":
    main()

"""Every changelist stays quick on huge tables: a bounded number of queries whatever the row
count, and never a COUNT(*) over a whole table (counts run over a LIMITed subquery; above the
cap PostgreSQL's planner estimate is used)."""
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backoffice.paginator import EstimatedCountPaginator, planner_estimate
from ledger.models import Book, Entry, Transaction
from referrals.models import Account, Accrual, AuditLog, Click, Event, Program
from tests.helpers import signup

ROWS = 3000
CAP = 1000  # the exact-count cap, lowered so that the fixtures are "huge" for the paginator


@pytest.fixture(autouse=True)
def _low_cap(monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "exact_up_to", CAP)


@pytest.fixture
def boss(db):
    return get_user_model().objects.create_superuser("boss", "boss@operator.test", "pw-boss-12345")


@pytest.fixture
def big_tables(runpod):
    """ROWS ledger entries, events, clicks, accruals and audit rows, made with bulk_create."""
    alice, bob = signup("alice"), signup("bob")
    now = timezone.now()
    txn = Transaction.objects.create(kind="accrual", rule="bulk-fixture")
    Entry.objects.bulk_create(
        [Entry(transaction=txn, account=alice if i % 2 else bob, book=Book.CREDITS, amount=1, program_id=None)
         for i in range(ROWS)] + [Entry(transaction=txn, book=Book.EARNINGS_EXPENSE, amount=-ROWS)])
    events = Event.objects.bulk_create(
        [Event(external_id=f"bulk-{i}", type="usage.charged", account=alice, occurred_at=now - timedelta(minutes=i),
               payload={}, content_hash="0" * 64, amount=10**10) for i in range(ROWS)])
    program = Program.objects.get(key="runpod-revenue-share")
    Accrual.objects.bulk_create(
        [Accrual(program=program, rule="bulk", beneficiary=alice, event=events[i % 50], amount=10**8,
                 destination="credits", created_at=now) for i in range(ROWS)])
    Click.objects.bulk_create([Click(referrer=alice, visitor_id=f"v{i}", created_at=now) for i in range(ROWS)])
    AuditLog.objects.bulk_create([AuditLog(action="bulk.test", object_type="Account", object_id=str(alice.pk))
                                  for _ in range(ROWS)])
    return alice


CHANGELISTS = [
    "/admin/ledger/entry/", "/admin/ledger/entry/?book__exact=credits", "/admin/ledger/entry/?q=alice",
    "/admin/ledger/transaction/", "/admin/ledger/balance/",
    "/admin/referrals/event/", "/admin/referrals/event/?type=usage.charged&source__exact=api",
    "/admin/referrals/accrual/", "/admin/referrals/accrual/?state__exact=held",
    "/admin/referrals/click/", "/admin/referrals/auditlog/", "/admin/referrals/auditlog/?q=bulk.test",
    "/admin/referrals/account/", "/admin/referrals/referral/", "/admin/referrals/jobrun/",
    "/admin/referrals/application/", "/admin/referrals/fraudflag/", "/admin/payouts/payout/",
    "/admin/integrations/webhookdelivery/",
]


def test_it_lists_big_tables_in_few_queries_without_counting_them(client, boss, big_tables):
    client.force_login(boss)
    for path in CHANGELISTS:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        assert response.status_code == 200, path
        sqls = [q["sql"] for q in queries]
        # session + user, the page's own queries (list, bounded count, filter choices), nothing per row
        assert len(sqls) <= 10, f"{path}: " + "\n".join(sqls)
        unbounded = [sql for sql in sqls if "COUNT(" in sql.upper() and "LIMIT" not in sql.upper()]
        assert not unbounded, f"{path}: a COUNT over a whole table: {unbounded}"
        assert not [sql for sql in sqls if "SELECT DISTINCT" in sql.upper()], f"{path}: a filter read every row"


def test_the_count_is_exact_below_the_cap_and_capped_above_it(client, boss, big_tables):
    client.force_login(boss)
    few = client.get("/admin/referrals/account/").context["cl"]
    assert few.result_count == 2 and not few.paginator.estimated
    many = client.get("/admin/ledger/entry/").context["cl"]
    assert many.paginator.estimated
    if connection.vendor == "postgresql":
        assert many.result_count > CAP
    else:
        assert many.result_count == CAP + 1  # no estimate on SQLite: the list stops at the cap
    assert len(many.result_list) == 100  # the first page is still a full page


def test_postgres_estimates_a_huge_table_from_its_statistics(postgres_only, big_tables):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_entry")
    estimate = planner_estimate(Entry.objects.all())
    assert ROWS * 0.8 <= estimate <= ROWS * 1.2
    paginator = EstimatedCountPaginator(Entry.objects.order_by("-id"), 100)
    with CaptureQueriesContext(connection) as queries:
        assert paginator.count == estimate
    assert all("LIMIT" in q["sql"] or q["sql"].startswith("EXPLAIN") for q in queries)


def test_the_desks_change_pages_run_a_bounded_number_of_queries(client, boss, big_tables, settings,
                                                                django_assert_max_num_queries):
    from payouts import services
    from referrals.models import Application

    settings.PAYOUT_PROCESS_ON_APPROVE = False
    alice = big_tables
    application = Application.objects.create(program=Program.objects.get(key="runpod-revenue-share"),
                                             account=alice, opened_at=timezone.now(), referrals_at_open=25)
    client.force_login(boss)
    with django_assert_max_num_queries(25):
        assert client.get(f"/admin/referrals/application/{application.pk}/change/").status_code == 200
    services.payout_method_set(account=alice, type="paypal", email="alice@example.com")
    assert Account.objects.filter(pk=alice.pk).exists()
    from payouts.models import Payout

    method = alice.payout_methods.get()
    payouts = Payout.objects.bulk_create([Payout(account=alice, method=method, method_type="paypal", amount=10**10,
                                                 requested_at=timezone.now()) for _ in range(30)])
    with django_assert_max_num_queries(25):
        assert client.get(f"/admin/payouts/payout/{payouts[0].pk}/change/").status_code == 200


def test_search_is_exact_and_answered_by_indexes(client, boss, big_tables):
    client.force_login(boss)
    txn_id = Entry.objects.filter(account=big_tables).values_list("transaction_id", flat=True).first()
    with CaptureQueriesContext(connection) as queries:
        found = client.get("/admin/ledger/entry/?q=alice").context["cl"]
    assert found.result_count > CAP and len(found.result_list) == 100  # ROWS / 2 of them, counted up to the cap
    assert {entry.account.external_id for entry in found.result_list} == {"alice"}
    # No UPPER(column) = UPPER(term) and no join in the WHERE clause: the account's key, found first.
    assert not [q["sql"] for q in queries if "UPPER(" in q["sql"]]
    by_transaction = client.get(f"/admin/ledger/entry/?q={txn_id}").context["cl"]
    assert {entry.transaction_id for entry in by_transaction.result_list} == {txn_id}
    assert client.get("/admin/ledger/entry/?q=Alice").context["cl"].result_count == 0  # exact, case included
    assert client.get("/admin/referrals/fraudflag/?q=nobody").status_code == 200

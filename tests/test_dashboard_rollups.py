"""The dashboard's rollups and ledger lines: kept by database triggers in the statement that writes
accruals, referrals, clicks and ledger entries, they must match their source rows and the ledger
after any history, before and after compaction; and the pages that read them say the same as
the rows they summarise.
"""
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.models import Book, Entry, Transaction
from ledger.money import net_sum
from referrals.engine import events as ev
from referrals.engine import rollups
from referrals.engine.jobs import run_jobs
from referrals.engine.services import application_approve, fraud_flag_clear, fraud_flag_confirm
from referrals.models import (
    Account,
    Accrual,
    Application,
    Click,
    ClickRollup,
    EarningsRollup,
    Event,
    FraudFlag,
    LedgerLine,
    Program,
    Referral,
)
from referrals.portal.dashboard import ENTRIES_PER_PAGE, BadCursor, ledger_page, parse_cursor, status_counts
from referrals.presets import load_preset
from referrals.selectors import earnings_by_program, referral_stats
from tests.helpers import T0, event, push, signup, spend
from tests.test_ledger_properties import History, rolled_back


class DashboardHistory(History):
    """The ledger property tests' random history, plus what only the dashboard reads: clicks,
    fraud decisions (void earnings) and compaction of the rollups half-way."""

    def step(self):
        kind = self.data.draw(st.sampled_from(["history", "history", "history", "click", "fraud", "compact"]))
        if kind == "history":
            super().step()
        elif kind == "click":
            referrer = Account.objects.get(external_id=self.data.draw(st.sampled_from(self.accounts[:2])))
            click = Click.objects.create(referrer=referrer, visitor_id=f"v{self.n}", is_unique=self.data.draw(
                st.booleans()), created_at=T0)
            if self.data.draw(st.booleans()):
                Click.objects.filter(pk=click.pk).update(is_unique=not click.is_unique)
        elif kind == "fraud":
            flag = FraudFlag.objects.filter(status=FraudFlag.Status.OPEN).first()
            if flag and self.data.draw(st.booleans()):
                fraud_flag_confirm(flag=flag, actor=None, reason="same person")
            elif flag:
                fraud_flag_clear(flag=flag, actor=None)
        else:
            run_jobs(at=T0 + timedelta(days=self.data.draw(st.integers(0, 60))), names=["compact_rollups"])


def _direct_stats(account: Account) -> dict:
    """The overview's figures computed from the source rows, as the pages did before rollups."""
    counts = Referral.objects.filter(referrer=account).aggregate(
        total=Count("id"), conversions=Count("id", filter=Q(status="converted")),
        pending=Count("id", filter=Q(status="pending")))
    clicks = Click.objects.filter(referrer=account).aggregate(total=Count("id"), unique=Count("id", filter=Q(
        is_unique=True)))
    earned = (Accrual.objects.filter(beneficiary=account).exclude(state="void").exclude(referral__referred=account)
              .aggregate(net=net_sum("amount", "reversed"))["net"] or 0)
    return {"total_referrals": counts["total"], "conversions": counts["conversions"],
            "pending_referrals": counts["pending"], "total_clicks": clicks["total"], "unique_clicks": clicks["unique"],
            "total_earnings": int(earned)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_it_keeps_the_rollups_equal_to_the_accruals_referrals_clicks_and_ledger(db, data):
    with rolled_back():
        for preset in ("runpod", "apimarket", "vast"):
            load_preset(preset)
        Program.objects.filter(key="runpod-revenue-share").update(gate_min_referrals=2, gate_min_spend=10)
        history = DashboardHistory(data)
        for name in history.accounts:
            assert history.send(history.raw(ev.ACCOUNT_CREATED, name, email=f"{name}@example.com")).status == "accepted"
        history.send(history.raw(ev.TEMPLATE_PUBLISHED, "ref-a", template="tpl"))
        for _ in range(data.draw(st.integers(min_value=10, max_value=40))):
            history.step()
        run_jobs(at=T0 + timedelta(days=61))
        for application in Application.objects.filter(status="open"):
            application_approve(application=application, actor=None)
        for _ in range(data.draw(st.integers(min_value=0, max_value=10))):
            history.step()

        assert rollups.earnings_differences() == []
        assert rollups.referrer_differences() == []
        for account in Account.objects.all():
            stats = referral_stats(account)
            assert {k: stats[k] for k in _direct_stats(account)} == _direct_stats(account)
        # Compaction changes the rows, never the sums.
        before = {a.pk: (referral_stats(a), earnings_by_program(a)) for a in Account.objects.all()}
        run_jobs(names=["compact_rollups"])
        assert rollups.earnings_differences() == [] and rollups.referrer_differences() == []
        assert {a.pk: (referral_stats(a), earnings_by_program(a)) for a in Account.objects.all()} == before
        assert not EarningsRollup.objects.values(*rollups.KEYS).annotate(n=Count("id")).filter(n__gt=1).exists()
        # Every account leg has its line, at its event's time.
        assert LedgerLine.objects.count() == Entry.objects.filter(account__isnull=False).count()


# --------------------------------------------------------------------------- named cases


@pytest.fixture
def alice(runpod):
    alice = signup("alice", email="alice@example.com", when=T0)
    for i in range(3):
        signup(f"ref{i}", code=alice.referral_code, when=T0 + timedelta(hours=i + 1))
    return alice


def test_it_counts_a_conversion_in_the_rollup_when_the_referral_changes_status(alice):
    assert status_counts(alice) == {"all": 3, "pending": 3, "converted": 0, "ineligible": 0}
    spend("ref1", "12.50", when=T0 + timedelta(days=1))
    assert status_counts(alice) == {"all": 3, "pending": 2, "converted": 1, "ineligible": 0}
    assert rollups.referral_totals(alice.pk)["converted"].spend == 125_000_000_000


def test_it_drops_nothing_when_compacting_and_merges_each_key(alice):
    for i in range(5):
        Click.objects.create(referrer=alice, visitor_id=f"v{i}", is_unique=i % 2 == 0, created_at=T0)
    assert ClickRollup.objects.filter(referrer_id=alice.pk).count() == 5
    counts = run_jobs(names=["compact_rollups"])["compact_rollups"]
    assert counts["clickrollup"] == 1
    assert list(ClickRollup.objects.filter(referrer_id=alice.pk).values_list("clicks", "unique_clicks")) == [(5, 3)]
    assert rollups.click_totals(alice.pk) == (5, 3)


def test_it_rolls_up_accruals_released_by_a_set_based_job(alice, runpod):
    Program.objects.filter(pk=runpod["revenue_share"].pk).update(requires_approval=False, hold_days=7)
    spend("ref0", "100.00", when=T0 + timedelta(days=1))
    [row] = earnings_by_program(alice)
    assert (row["earned"], row["pending"]) == (20_000_000_000, 20_000_000_000)
    run_jobs(at=T0 + timedelta(days=9), names=["release_holds"])
    [row] = earnings_by_program(alice)
    assert (row["earned"], row["pending"], row["available"]) == (20_000_000_000, 0, 20_000_000_000)
    assert rollups.earnings_differences() == []


def _walk(account: Account, *, start: str = "", direction: str = "before") -> list[int]:
    """Follow the "Older" (before) or "Newer" (after) links to the end; entries newest first."""
    pages, cursor = [], start
    while True:
        window, lines = ledger_page(account, **({direction: cursor} if cursor else {}))
        page = [line.id for line in lines]
        pages = pages + [page] if direction == "before" else [page, *pages]
        cursor = window.older if direction == "before" else window.newer
        if not cursor:
            return [entry for page in pages for entry in page]


def test_it_pages_the_earnings_by_event_time_both_ways_without_gaps(alice):
    now = T0 + timedelta(days=2)
    # Events pushed out of order, several at the very same instant: pages follow when they
    # happened (ties by entry), not when they arrived.
    for i in range(ENTRIES_PER_PAGE * 2 + 7):
        push(event("usage.charged", f"ref{i % 3}", amount="10.00", product="pods",
                   when=now - timedelta(minutes=(i * 37) % 60)), now=now)
    lines = LedgerLine.objects.filter(account_id=alice.pk).order_by("-happened_at", "-entry_id")
    expected = list(lines.values_list("entry_id", flat=True))
    times = list(lines.values_list("happened_at", flat=True))
    assert len(expected) == ENTRIES_PER_PAGE * 2 + 7 and times == sorted(times, reverse=True)
    assert len(set(times)) < len(times)  # ties at one instant are part of the test
    assert _walk(alice) == expected
    # From the oldest entry back up with "Newer" links: every other entry once, in the same order.
    oldest = lines.last()
    cursor = f"{round(oldest.happened_at.timestamp() * 1_000_000)}.{oldest.entry_id}"
    assert _walk(alice, start=cursor, direction="after") == expected[:-1]


def test_it_sorts_a_late_event_by_when_it_happened(alice):
    now = T0 + timedelta(days=5)
    push(event("usage.charged", "ref0", amount="10.00", product="pods", when=now - timedelta(hours=1), id="recent"),
         now=now)
    push(event("usage.charged", "ref1", amount="10.00", product="pods", when=now - timedelta(days=3), id="late"),
         now=now)
    _, lines = ledger_page(alice)
    assert [line.event for line in lines] == ["recent", "late"]


def test_it_names_the_field_of_a_bad_cursor_and_shows_the_newest_entries(alice, client):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("alice@example.com", "alice@example.com", "Sturdy-pass-9911")
    Account.objects.filter(pk=alice.pk).update(user=user)
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    spend("ref0", "10.00", when=timezone.now() - timedelta(hours=1))
    with pytest.raises(BadCursor):
        parse_cursor("12x.4")
    page = client.get("/dashboard/earnings/?before=yesterday").content.decode()
    assert "before: not a position in the list" in page and "of $10.00 pods spend" in page


def test_it_pages_referrals_by_cursor_like_by_number(alice):
    from referrals.portal.dashboard import REFERRALS_PER_PAGE, referral_page

    now = T0 + timedelta(days=1)
    accounts = Account.objects.bulk_create([Account(external_id=f"bulk-{i}", signed_up_at=now) for i in range(60)])
    # Ties at one instant too: the cursor settles them by id, as the ordering does.
    Referral.objects.bulk_create([Referral(referrer=alice, referred=a, created_at=now - timedelta(minutes=i // 3))
                                  for i, a in enumerate(accounts)])
    by_number = [[r.pk for r in referral_page(alice, page=n).object_list] for n in (1, 2, 3)]
    first = referral_page(alice)
    second = referral_page(alice, page=2, before=first.older_cursor)
    third = referral_page(alice, page=3, before=second.older_cursor)
    assert [[r.pk for r in p.object_list] for p in (first, second, third)] == by_number
    assert (second.number, third.number, third.paginator.num_pages) == (2, 3, 3)
    assert len(by_number[0]) == REFERRALS_PER_PAGE and sum(map(len, by_number)) == 63
    back = referral_page(alice, page=2, after=third.newer_cursor)
    assert [r.pk for r in back.object_list] == by_number[1]


def _table_scans(*tables: str) -> dict[str, int]:
    """Sequential scans of `tables` so far in this database transaction (triggers' included)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, seq_scan FROM pg_stat_xact_user_tables WHERE relname = ANY(%s)", [list(tables)])
        scans = dict(cursor.fetchall())
    return {table: scans.get(table, 0) for table in tables}


def test_the_triggers_plan_for_the_rows_each_call_wrote(alice, postgres_only):
    # Tables large enough that a scan costs more than a key lookup per written row.
    padding = Account.objects.bulk_create([Account(external_id=f"pad-{i}", referral_code=f"PAD{i:05d}", signed_up_at=T0)
                                           for i in range(2001)])
    referrals = Referral.objects.bulk_create([Referral(referrer=padding[0], referred=account, created_at=T0)
                                              for account in padding[1:]])
    txns = Transaction.objects.bulk_create([Transaction(kind="padding") for _ in range(3000)])
    tables = ("ledger_transaction", "referrals_referral")
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {table}")
    program, event = Program.objects.first(), Event.objects.first()

    def write(rows: list[Referral]) -> None:
        Accrual.objects.bulk_create([Accrual(program=program, rule="test", beneficiary=padding[0], event=event,
                                             referral=referral, amount=1, destination=program.pays_in, created_at=T0)
                                     for referral in rows])
        Entry.objects.bulk_create([Entry(transaction=txn, account=account, book=Book.CREDITS, amount=amount)
                                   for txn in txns[:len(rows)]
                                   for account, amount in ((padding[0], 1), (padding[1], -1))])

    # Many rows in one statement, then one: planned once per session, the triggers' plan for
    # the first call's 1,000 rows (scanning both tables) served the single row too (referrals 0014).
    write(referrals[:1000])
    before = _table_scans(*tables)
    write(referrals[1000:1001])
    assert _table_scans(*tables) == before
    assert LedgerLine.objects.filter(account_id=padding[0].pk).count() == 1001
    assert EarningsRollup.objects.filter(beneficiary_id=padding[0].pk).aggregate(n=Sum("accruals"))["n"] == 1001

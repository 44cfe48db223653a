"""Every dashboard page runs a bounded number of queries with 10,000 referrals behind it."""
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from ledger.models import ACCOUNT_BOOKS, Balance, Book, Entry, Transaction
from ledger.money import to_units
from referrals.models import Account, Accrual, Click, CreditGrant, Event, LedgerLine, Referral, Template

User = get_user_model()
N = 10_000


@pytest.fixture
def big_alice(runpod, apimarket, vast):
    """Alice with 10,000 referrals, as many clicks, earnings (accrual, event and ledger legs) on
    each, 200 templates and 100 expiring credit grants — written with bulk_create."""
    now = timezone.now()
    user = User.objects.create_user("alice@example.com", "alice@example.com", "Sturdy-pass-9911")
    alice = Account.objects.create(external_id="alice", user=user, email="alice@example.com", signed_up_at=now)
    Balance.objects.bulk_create([Balance(account=alice, book=b, amount=0) for b in ACCOUNT_BOOKS])
    referred = Account.objects.bulk_create(
        [Account(external_id=f"r{i}", signed_up_at=now, referral_code=f"c{i:07d}") for i in range(N)],
        batch_size=2000)
    statuses = [Referral.Status.PENDING, Referral.Status.CONVERTED, Referral.Status.INELIGIBLE]
    referrals = Referral.objects.bulk_create([
        Referral(referrer=alice, referred=a, status=statuses[i % 3], spend=to_units("10.00") * (i % 3),
                 ineligible_reason="same sign-up IP as the referrer" if i % 3 == 2 else "",
                 created_at=now - timedelta(minutes=i))
        for i, a in enumerate(referred)], batch_size=2000)
    Click.objects.bulk_create([Click(referrer=alice, visitor_id=f"v{i}", created_at=now - timedelta(minutes=i))
                               for i in range(N)], batch_size=2000)
    events = Event.objects.bulk_create([
        Event(external_id=f"e{i}", type="usage.charged", account=a, occurred_at=now - timedelta(minutes=i),
              content_hash="x", amount=to_units("10.00"), product="pods")
        for i, a in enumerate(referred)], batch_size=2000)
    program = runpod["revenue_share"]
    amount = to_units("0.20")
    accruals = Accrual.objects.bulk_create([
        Accrual(program=program, rule=f"{program.key}:2.00%", beneficiary=alice, event=e, referral=r, amount=amount,
                destination=Book.CREDITS, held_for_gate=True, created_at=e.occurred_at)
        for e, r in zip(events, referrals, strict=True)], batch_size=2000)
    txns = Transaction.objects.bulk_create([Transaction(kind="accrual", rule=a.rule, event_id=a.event_id)
                                            for a in accruals], batch_size=2000)
    Entry.objects.bulk_create(
        [leg for t in txns for leg in (
            Entry(transaction=t, account=alice, book=Book.PENDING, program=program, amount=amount),
            Entry(transaction=t, account=None, book=Book.EARNINGS_EXPENSE, program=program, amount=-amount))],
        batch_size=4000)
    Balance.objects.filter(account=alice, book=Book.PENDING).update(amount=amount * N)
    templates = Template.objects.bulk_create([Template(external_id=f"t{i}", creator=alice, runtime_seconds=i * 600)
                                              for i in range(200)])
    assert templates
    signup = apimarket["signup_credit"]
    grant_accruals = Accrual.objects.bulk_create([
        Accrual(program=signup, rule=f"{signup.key}:signup-credit", beneficiary=alice, event=events[i],
                amount=to_units("2.50"), destination=Book.CREDITS, state=Accrual.State.RELEASED, created_at=now)
        for i in range(100)])
    CreditGrant.objects.bulk_create([CreditGrant(account=alice, accrual=a, amount=a.amount, remaining=a.amount,
                                                 expires_at=now + timedelta(days=1 + i % 40))
                                     for i, a in enumerate(grant_accruals)])
    if connection.vendor == "postgresql":
        # What autovacuum does after a bulk load: without statistics the planner takes the
        # 10,000-row tables for empty ones and the CSV's server-side cursor crawls.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return alice


BOUNDS = {
    "/dashboard/": 25,
    "/dashboard/referrals/": 12,
    "/dashboard/referrals/?status=ineligible&q=r1": 12,
    "/dashboard/referrals/?page=300": 12,
    "/dashboard/referrals/{first_referral}/": 12,
    # The earnings page and the wallet also show the per-programme totals (3 queries).
    "/dashboard/earnings/": 16,
    "/dashboard/earnings/?before={deep_entry}": 16,
    "/dashboard/earnings/?after={deep_entry}": 16,
    "/dashboard/wallet/": 16,
    "/dashboard/templates/": 12,
    "/dashboard/partner/": 12,
    "/dashboard/notifications/": 10,
}


# One test for every page: building 10,000 referrals with their ledger takes a while, so it is
# built once and every page is measured against it.
def test_it_keeps_every_page_bounded_with_10_000_referrals(client, big_alice, django_assert_max_num_queries):
    client.force_login(big_alice.user, backend="django.contrib.auth.backends.ModelBackend")
    first_referral = Referral.objects.filter(referrer=big_alice).order_by("id").first().pk
    # A position 150 pages deep in her earnings (keyset cursors: `<µs since epoch>.<entry id>`).
    deep = LedgerLine.objects.filter(account_id=big_alice.pk).order_by("-happened_at", "-entry_id")[7500]
    deep_entry = f"{round(deep.happened_at.timestamp() * 1_000_000)}.{deep.entry_id}"
    for path, bound in BOUNDS.items():
        path = path.format(first_referral=first_referral, deep_entry=deep_entry)
        with django_assert_max_num_queries(bound):
            response = client.get(path)
        assert response.status_code == 200, path
    assert Referral.objects.filter(referrer=big_alice).count() == N

    # The CSV streams every entry: 5 batches of at most 2,000, two queries each, plus the session.
    with django_assert_max_num_queries(20):
        body = b"".join(client.get("/dashboard/earnings.csv").streaming_content).decode()
    assert len(body.splitlines()) == N + 2  # the header, every entry and the total row

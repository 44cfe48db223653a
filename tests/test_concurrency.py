"""Races on PostgreSQL with real connections: each thread is its own database session."""
import threading

import pytest
from django.db import connection, connections

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.services import ingest_event
from referrals.engine.verification import check_integrity
from referrals.models import Event, MilestoneAward
from referrals.presets import load_preset
from tests.helpers import at, event, signup, usd

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip(reason="race tests need PostgreSQL row locks: set DATABASE_URL (make test provisions it)")


def _race(raws: list[dict]) -> list[str]:
    barrier = threading.Barrier(len(raws))
    statuses = [None] * len(raws)

    def send(i, raw):
        try:
            barrier.wait()
            statuses[i] = ingest_event(raw).status
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(i, raw)) for i, raw in enumerate(raws)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_racing_copies_of_one_event_are_accepted_once():
    load_preset("vast")
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    for round_ in range(5):
        raw = event("credits.purchased", "bob", id=f"race-{round_}", amount="10.00", when=at(2))
        statuses = _race([dict(raw) for _ in range(8)])
        assert sorted(statuses) == ["accepted"] + ["duplicate"] * 7
    assert Event.objects.filter(external_id__startswith="race-").count() == 5
    assert balances_for(alice.pk)[Book.CASH] == usd("1.125")  # 5 x 3% x 75% of $10
    assert check_integrity() == []


def test_racing_redemptions_never_overdraw_credits():
    load_preset("apimarket")
    alice = signup("alice")
    for round_ in range(5):
        bob = signup(f"bob{round_}", code=alice.referral_code, when=at(1))
        statuses = _race([event("credits.redeemed", f"bob{round_}", amount="2.00", when=at(2)) for _ in range(6)])
        assert statuses.count("accepted") == 1, statuses
        assert balances_for(bob.pk)[Book.CREDITS] == usd("0.50")
    assert check_integrity() == []


def test_racing_charges_that_cross_the_milestone_pay_it_once():
    load_preset("runpod")
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))
    statuses = _race([event("usage.charged", "bob", amount="600.00", product="serverless", when=at(2))
                      for _ in range(4)])
    assert statuses == ["accepted"] * 4
    assert MilestoneAward.objects.count() == 1
    assert balances_for(bob.pk)[Book.CREDITS] == usd("500.00")
    assert check_integrity() == []

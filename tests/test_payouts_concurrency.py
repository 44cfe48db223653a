"""Races on PostgreSQL with real connections: 50 concurrent requests for an account's whole
balance make exactly one payout and never overdraw, round after round."""
import threading

import pytest
from django.db import connection, connections

from ledger.models import Book
from ledger.selectors import balances_for
from payouts import services
from payouts.models import Payout
from referrals.engine.verification import check_integrity
from referrals.presets import load_preset
from referrals.selectors import account_balances
from tests.helpers import at, buy_credits, signup, usd

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 50
ROUNDS = 5


@pytest.fixture(autouse=True)
def _needs_postgres(settings):
    if connection.vendor != "postgresql":
        pytest.skip(reason="race tests need PostgreSQL row locks: set DATABASE_URL (make test provisions it)")
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    settings.PAYOUT_AUTO_APPROVE_BELOW = "0"


def _race(account, amount: str) -> list[str]:
    barrier = threading.Barrier(THREADS)
    outcomes = [""] * THREADS

    def request(i):
        try:
            barrier.wait()
            services.payout_request(account=account, amount=amount, method="paypal")
            outcomes[i] = "requested"
        except services.PayoutInvalid as exc:
            outcomes[i] = "refused: " + "; ".join(exc.fields.values())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(THREADS)]
    # The throwaway PostgreSQL allows 50 connections: the main thread's is closed (and reopened
    # after the race) so all 50 requests hold a real connection at once.
    connection.close()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_it_makes_one_payout_of_fifty_concurrent_requests_for_the_whole_balance():
    load_preset("vast")
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    for round_ in range(ROUNDS):
        buy_credits("bob", "2000.00", when=at(2 + round_))  # +45.00 of cash each round
        alice.refresh_from_db()
        whole = account_balances(alice).cash_available
        assert whole == usd("45.00")
        outcomes = _race(alice, "45.00")
        assert outcomes.count("requested") == 1, outcomes
        assert all("more than the cash available" in o for o in outcomes if o != "requested")
        books = balances_for(alice.pk)
        assert books[Book.CASH] == 0 and books[Book.CASH] >= 0
        assert books[Book.RESERVED] == usd("45.00") * (round_ + 1)
        assert account_balances(alice).cash_available == 0
    assert Payout.objects.count() == ROUNDS
    assert check_integrity() == []

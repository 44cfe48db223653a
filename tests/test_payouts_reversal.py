"""Partial Stripe transfer reversals (issue 15.1): a `transfer.reversed` moves exactly the
reversed amount back to cash. Stripe's `amount_reversed` is cumulative, so each delivery moves
only what is new and a repeat (same or another event id) moves nothing; a full reversal fails the
payout as before. Signed payloads through the real endpoint."""
import time

import pytest

from ledger.models import Book, Entry, Transaction
from ledger.selectors import balances_for
from payouts import services
from payouts.fakes.stripe import event, sign
from payouts.models import Payout, PayoutMethod
from referrals.engine.verification import verify
from tests.helpers import at, buy_credits, signup, usd

SECRET = "whsec_test_fake"
URL = "/payouts/webhooks/stripe"


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_WEBHOOK_TOLERANCE = 300
    settings.PAYOUT_PROCESS_ON_APPROVE = False


@pytest.fixture
def payout(vast, staff):
    """alice: 90.00 of cash, all of it in one approved 90.00 Stripe payout."""
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    buy_credits("bob", "2000.00", when=at(3))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="stripe", connected_account="acct_alice0001", ready=False)
    PayoutMethod.objects.filter(account=alice).update(ready=True)
    requested = services.payout_request(account=alice, amount="90.00", method="stripe")
    return services.payout_approve(payout=requested, actor=staff)


def _transfer(payout, *, amount_reversed=0, reversed_=False):
    return {"id": "tr_1", "object": "transfer", "amount": 9000, "currency": "usd",
            "destination": "acct_alice0001", "amount_reversed": amount_reversed, "reversed": reversed_,
            "metadata": {"payout_id": str(payout.pk), "attempt": str(payout.attempt)}}


_seq = iter(range(1, 10_000))


def _deliver(client, type_, obj, *, event_id=None):
    body = event(event_id or f"evt_r{next(_seq)}", type_, obj, created=int(time.time()))
    answer = client.post(URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(body, SECRET))
    assert answer.status_code == 200, answer.content
    return answer.json()["status"], body


def _books(payout):
    books = balances_for(payout.account_id)
    paid_out = sum(Entry.objects.filter(book=Book.PAYOUTS, transaction__event__account_id=payout.account_id)
                   .values_list("amount", flat=True))
    return books[Book.CASH], books[Book.RESERVED], paid_out


def test_a_one_cent_reversal_of_a_paid_payout_moves_one_cent(client, payout):
    _deliver(client, "transfer.created", _transfer(payout))
    assert _books(payout) == (0, 0, usd("90.00"))
    status, body = _deliver(client, "transfer.reversed", _transfer(payout, amount_reversed=1))
    assert status == "processed"
    payout.refresh_from_db()
    assert payout.status == "paid"
    assert _books(payout) == (usd("0.01"), 0, usd("89.99"))
    # The same delivery again, and another event carrying the same cumulative figure: nothing more.
    answer = client.post(URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(body, SECRET))
    assert answer.json()["status"] == "duplicate"
    _deliver(client, "transfer.updated", _transfer(payout, amount_reversed=1))
    assert _books(payout) == (usd("0.01"), 0, usd("89.99"))
    # A second partial reversal: cumulative 5.01, so 5.00 more.
    _deliver(client, "transfer.reversed", _transfer(payout, amount_reversed=501))
    assert _books(payout) == (usd("5.01"), 0, usd("84.99"))
    payout.refresh_from_db()
    assert (payout.status, payout.reversed_amount) == ("paid", usd("5.01"))
    # No second payout can take more than the 5.01 that came back.
    assert services.payout_request(account=payout.account, amount="5.01", method="stripe").amount == usd("5.01")
    assert verify() == []


def test_the_rest_of_a_partly_reversed_payout_comes_back_on_the_full_reversal(client, payout):
    _deliver(client, "transfer.created", _transfer(payout))
    _deliver(client, "transfer.reversed", _transfer(payout, amount_reversed=1234))
    _deliver(client, "transfer.reversed", _transfer(payout, amount_reversed=9000, reversed_=True))
    payout.refresh_from_db()
    assert payout.status == "failed"
    assert _books(payout) == (usd("90.00"), 0, 0)
    # Every transaction of the payout balances, and a late partial figure changes nothing.
    _deliver(client, "transfer.updated", _transfer(payout, amount_reversed=500))
    assert _books(payout) == (usd("90.00"), 0, 0)
    for txn in Transaction.objects.filter(kind__startswith="payout."):
        assert sum(txn.entries.values_list("amount", flat=True)) == 0
    assert verify() == []


def test_a_partial_reversal_before_the_transfer_news_settles_then_moves_the_part(client, payout):
    status, _ = _deliver(client, "transfer.reversed", _transfer(payout, amount_reversed=1))
    assert status == "processed"
    payout.refresh_from_db()
    assert (payout.status, payout.provider_reference) == ("paid", "tr_1")
    assert _books(payout) == (usd("0.01"), 0, usd("89.99"))
    _deliver(client, "transfer.created", _transfer(payout))  # late news: nothing more
    assert _books(payout) == (usd("0.01"), 0, usd("89.99"))
    assert Payout.objects.count() == 1
    assert verify() == []


def test_a_full_reversal_still_fails_the_payout(client, payout):
    _deliver(client, "transfer.reversed", _transfer(payout, amount_reversed=9000, reversed_=True))
    payout.refresh_from_db()
    assert payout.status == "failed"
    assert _books(payout) == (usd("90.00"), 0, 0)
    assert verify() == []

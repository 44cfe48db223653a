"""Outbox messages reach consumers only after the causing transaction commits."""
import pytest
from django.db import transaction

from referrals.engine import outbox
from tests.helpers import at, buy_plan, signup


@pytest.fixture
def received():
    messages = []

    def consumer(kind, *, account_id, data):
        messages.append((kind, account_id, data))

    outbox.subscribe(consumer)
    yield messages
    outbox.unsubscribe(consumer)


def test_it_publishes_referral_conversion_and_commission_after_commit(
        apimarket, received, django_capture_on_commit_callbacks):
    alice = signup("alice")
    with django_capture_on_commit_callbacks(execute=True):
        signup("bob", code=alice.referral_code, when=at(1))
        buy_plan("bob", "10.00", when=at(2))
    kinds = [(kind, account) for kind, account, _ in received]
    assert (outbox.REFERRAL_CREATED, alice.pk) in kinds
    assert (outbox.REFERRAL_CONVERTED, alice.pk) in kinds
    commission = next(d for k, a, d in received if k == outbox.COMMISSION_CREATED and a == alice.pk)
    assert commission["amount"] == "0.50" and commission["program"] == "apimarket-commission"


def test_it_publishes_nothing_when_the_transaction_rolls_back(apimarket, received, django_capture_on_commit_callbacks):
    alice = signup("alice")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        signup("bob", code=alice.referral_code, when=at(1))
        transaction.set_rollback(True)
    assert received == []

"""SPEC Money: a refund claws back the commission of that payment, in proportion, from its bucket."""
from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.services import ingest_event
from tests.helpers import at, buy_credits, buy_plan, event, push, signup, spend, usd


def _refund(account, amount, of, when=None):
    return ingest_event(event("payment.refunded", account, amount=amount, refunds=of, when=when or at(5)))


def test_a_full_refund_reverses_the_whole_commission(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    purchase = buy_credits("bob", "33.33", when=at(2))
    assert _refund("bob", "33.33", purchase).status == "accepted"
    books = balances_for(alice.pk)
    assert books[Book.CASH] == 0 and books[Book.CREDITS] == 0


def test_partial_refunds_reverse_in_proportion_and_add_up_to_the_whole(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    purchase = buy_credits("bob", "10.00", when=at(2))
    _refund("bob", "2.50", purchase)
    books = balances_for(alice.pk)
    assert books[Book.CASH] + books[Book.CREDITS] == usd("0.225")  # 3% of the $7.50 kept
    _refund("bob", "3.33", purchase)
    _refund("bob", "4.17", purchase)
    books = balances_for(alice.pk)
    assert books[Book.CASH] == 0 and books[Book.CREDITS] == 0


def test_it_claws_back_from_pending_while_the_commission_is_held(runpod):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    charge = spend("bob", "100.00", when=at(2))
    _refund("bob", "40.00", charge)
    assert balances_for(alice.pk)[Book.PENDING] == usd("1.20")


def test_it_claws_back_from_credits_once_released(apimarket):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    plan = buy_plan("bob", "100.00", when=at(2))
    _refund("bob", "100.00", plan)
    assert balances_for(alice.pk)[Book.CREDITS] == 0


def test_it_refuses_a_refund_larger_than_the_payment_and_changes_nothing(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    purchase = buy_credits("bob", "10.00", when=at(2))
    _refund("bob", "6.00", purchase)
    before = balances_for(alice.pk)
    result = _refund("bob", "4.01", purchase)
    assert result.status == "rejected"
    assert result.fields == {"amount": "is larger than what is left to refund (4.00)"}
    assert balances_for(alice.pk) == before


def test_it_refuses_refunds_of_unknown_or_other_accounts_payments(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    purchase = buy_credits("bob", "10.00", when=at(2))
    assert _refund("bob", "1.00", "nope").fields == {"refunds": "unknown event 'nope'"}
    assert _refund("alice", "1.00", purchase).fields == {"refunds": "belongs to a different account"}
    push(event("template.published", "alice", template="t1", id="tpl"))
    assert "cannot be refunded" in _refund("alice", "1.00", "tpl").fields["refunds"]

"""SPEC C: 3% of credits purchased; 75% withdrawable as cash unless own purchased credits are held."""
from ledger.models import Book
from ledger.selectors import balances_for
from referrals.selectors import account_balances
from tests.helpers import at, buy_credits, signup, spend, usd


def _pair():
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    return alice


def test_it_pays_three_percent_of_credits_purchased_split_75_cash_25_credits(vast):
    alice = _pair()
    buy_credits("bob", "100.00", when=at(2))
    books = balances_for(alice.pk)
    assert books[Book.CASH] == usd("2.25")
    assert books[Book.CREDITS] == usd("0.75")
    assert account_balances(alice).cash_available == usd("2.25")


def test_it_keeps_every_fraction_of_small_purchases(vast):
    alice = _pair()
    for _ in range(3):
        buy_credits("bob", "0.01", when=at(2))
    books = balances_for(alice.pk)
    assert books[Book.CASH] + books[Book.CREDITS] == usd("0.0009")  # 3% of 3 cents, nothing lost
    assert account_balances(alice).cash_available == 0, "cash-out rounds down to whole cents"


def test_it_blocks_cash_out_while_the_referrer_holds_purchased_credits(vast):
    alice = _pair()
    buy_credits("bob", "100.00", when=at(2))
    buy_credits("alice", "10.00", when=at(3))
    alice.refresh_from_db()
    balances = account_balances(alice)
    assert balances.cash_available == 0
    assert balances.cash_blocked == usd("2.25")
    spend("alice", "10.00", when=at(4))
    alice.refresh_from_db()
    assert account_balances(alice).cash_available == usd("2.25")


def test_it_pays_nothing_on_usage_or_plans(vast):
    alice = _pair()
    spend("bob", "100.00", when=at(2))
    assert balances_for(alice.pk)[Book.CASH] == 0

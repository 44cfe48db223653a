"""SPEC B.3: basic 5% as credits, partner 10% as cash; the rate follows the track at purchase time."""
from django.utils import timezone

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.services import account_change_track
from referrals.selectors import account_balances, earnings_by_program
from tests.helpers import at, buy_plan, signup, usd


def _pair():
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    return alice


def test_it_pays_basic_referrers_five_percent_as_credits(apimarket):
    alice = _pair()
    buy_plan("bob", "49.00", when=at(2))
    books = balances_for(alice.pk)
    assert books[Book.CREDITS] == usd("2.45")
    assert books[Book.CASH] == 0
    assert account_balances(alice).cash_available == 0, "basic credits are for purchases only"


def test_it_pays_partners_ten_percent_as_cash_after_the_upgrade(apimarket):
    alice = _pair()
    buy_plan("bob", "100.00", when=at(2))
    account_change_track(account=alice, track="partner")  # effective now, long after at(2)
    buy_plan("bob", "100.00", when=timezone.now())
    books = balances_for(alice.pk)
    assert books[Book.CREDITS] == usd("5.00"), "the earlier commission keeps its track"
    assert books[Book.CASH] == usd("10.00")
    assert account_balances(alice).cash_available == usd("10.00")


def test_it_gives_a_late_arriving_purchase_the_track_of_its_own_time(apimarket):
    alice = _pair()
    account_change_track(account=alice, track="partner")
    buy_plan("bob", "100.00", when=at(2))  # dated before the upgrade
    assert balances_for(alice.pk)[Book.CREDITS] == usd("5.00")


def test_it_reports_commissions_per_programme(apimarket):
    alice = _pair()
    buy_plan("bob", "20.00", when=at(2))
    [row] = earnings_by_program(alice)
    assert row["program"] == "apimarket-commission"
    assert row["earned"] == usd("1.00") and row["pending"] == 0 and row["available"] == usd("1.00")

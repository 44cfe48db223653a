"""SPEC A.1: 2% lifetime revenue share, held until the 25 referrals / $500 gate is approved."""
from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.jobs import run_jobs
from referrals.engine.services import application_approve, application_reject, application_reopen
from referrals.models import Application
from tests.helpers import at, signup, spend, usd


def _referrer_with(n: int, each: str, runpod):
    alice = signup("alice")
    for i in range(n):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", each, when=at(2))
    return alice


def test_it_holds_two_percent_of_referred_spend_until_approval(runpod):
    alice = _referrer_with(20, "100.00", runpod)
    books = balances_for(alice.pk)
    assert books[Book.PENDING] == usd("40.00")
    assert books[Book.CREDITS] == 0


def test_it_opens_an_application_only_at_25_referrals_and_500_spend(runpod):
    alice = _referrer_with(24, "100.00", runpod)
    run_jobs(at=at(3), names=["revenue_share_gates"])
    assert not Application.objects.exists()
    signup("r24", code=alice.referral_code, when=at(1))
    run_jobs(at=at(3), names=["revenue_share_gates"])
    assert Application.objects.filter(account=alice, status="open").count() == 1


def test_it_needs_500_of_total_spend_not_only_25_referrals(runpod):
    alice = _referrer_with(25, "19.99", runpod)  # $499.75 in total
    run_jobs(at=at(3), names=["revenue_share_gates"])
    assert not Application.objects.exists()
    spend("r0", "0.25", when=at(2))
    run_jobs(at=at(3), names=["revenue_share_gates"])
    assert Application.objects.filter(account=alice).exists()
    run_jobs(at=at(3), names=["revenue_share_gates"])
    assert Application.objects.count() == 1, "a second run opens nothing new"


def test_it_keeps_earnings_made_before_approval(runpod, staff):
    alice = _referrer_with(25, "20.00", runpod)
    run_jobs(at=at(3), names=["revenue_share_gates"])
    application = Application.objects.get(account=alice)
    assert application.referrals_at_open == 25 and application.spend_at_open == usd("500.00")
    application_approve(application=application, actor=staff)
    books = balances_for(alice.pk)
    assert books[Book.PENDING] == 0
    assert books[Book.CREDITS] == usd("10.00")  # 2% of 25 x $20
    spend("r0", "50.00", when=at(4))
    assert balances_for(alice.pk)[Book.CREDITS] == usd("11.00"), "after approval earnings are available at once"


def test_it_keeps_earnings_held_on_rejection_with_the_reason_and_can_reopen(runpod, staff):
    alice = _referrer_with(25, "20.00", runpod)
    run_jobs(at=at(3), names=["revenue_share_gates"])
    application = Application.objects.get(account=alice)
    application = application_reject(application=application, actor=staff, reason="traffic from a coupon site")
    assert application.status == "rejected" and application.reason == "traffic from a coupon site"
    assert balances_for(alice.pk)[Book.PENDING] == usd("10.00")
    application = application_reopen(application=application, actor=staff)
    assert application.status == "open"
    application_approve(application=application, actor=staff)
    assert balances_for(alice.pk)[Book.CREDITS] == usd("10.00")


def test_an_edited_rate_applies_to_later_events_and_earlier_entries_stay(runpod):
    from referrals.models import Program

    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    spend("bob", "100.00", when=at(2))
    Program.objects.filter(key="runpod-revenue-share").update(rate="3.50")
    spend("bob", "100.00", when=at(3))
    assert balances_for(alice.pk)[Book.PENDING] == usd("5.50")  # $2.00 at 2% + $3.50 at 3.5%

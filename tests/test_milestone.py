"""SPEC A.2: $500 each to referrer and referred when serverless spend reaches $1,000, once."""
from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.jobs import run_jobs
from referrals.models import MilestoneAward, Program
from tests.helpers import at, event, push, signup, spend, usd


def _pair():
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))
    return alice, bob


def _credits(account):
    return balances_for(account.pk)[Book.CREDITS]


def test_it_pays_both_sides_exactly_when_spend_reaches_1000(runpod):
    alice, bob = _pair()
    spend("bob", "999.99", product="serverless", when=at(2))
    assert _credits(bob) == 0 and not MilestoneAward.objects.exists()
    spend("bob", "0.01", product="serverless", when=at(3))
    assert _credits(alice) == usd("500.00")
    assert _credits(bob) == usd("500.00")


def test_it_counts_a_single_charge_that_crosses_the_threshold(runpod):
    alice, bob = _pair()
    spend("bob", "2500.00", product="serverless", when=at(2))
    assert _credits(bob) == usd("500.00")
    assert _credits(alice) == usd("500.00")


def test_it_pays_the_milestone_once_per_referred_account(runpod):
    alice, bob = _pair()
    spend("bob", "1000.00", product="serverless", when=at(2))
    spend("bob", "1000.00", product="serverless", when=at(3))
    run_jobs(at=at(4), names=["milestones"])
    assert MilestoneAward.objects.count() == 1
    assert _credits(bob) == usd("500.00")


def test_it_ignores_other_product_lines(runpod):
    alice, bob = _pair()
    spend("bob", "5000.00", product="pods", when=at(2))
    assert _credits(bob) == 0


def test_it_counts_spend_net_of_refunds(runpod):
    alice, bob = _pair()
    charge = spend("bob", "600.00", product="serverless", when=at(2))
    push(event("payment.refunded", "bob", when=at(3), amount="200.00", refunds=charge))
    spend("bob", "500.00", product="serverless", when=at(4))  # net 900
    assert _credits(bob) == 0
    spend("bob", "100.00", product="serverless", when=at(5))  # net 1000
    assert _credits(bob) == usd("500.00")


def test_the_job_awards_milestones_missed_by_event_processing(runpod):
    alice, bob = _pair()
    spend("bob", "800.00", product="serverless", when=at(2))
    # Staff lower the threshold: earlier spend now qualifies, and the job catches up.
    Program.objects.filter(kind=Program.Kind.MILESTONE).update(milestone_threshold="750.00")
    result = run_jobs(at=at(3), names=["milestones"])
    assert result["milestones"] == {"milestones_awarded": 1}
    assert _credits(bob) == usd("500.00") and _credits(alice) == usd("500.00")
    assert run_jobs(at=at(3), names=["milestones"])["milestones"] == {"milestones_awarded": 0}


def test_the_spend_it_counts_is_kept_per_product_on_the_referral_not_summed_from_the_log(runpod):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from referrals.models import Referral

    alice, bob = _pair()
    charge = spend("bob", "600.00", product="serverless", when=at(2))
    spend("bob", "70.00", product="pods", when=at(3))
    push(event("payment.refunded", "bob", when=at(4), amount="200.00", refunds=charge))
    referral = Referral.objects.get(referred=bob)
    assert referral.spend_by_product == {"serverless": usd("400.00"), "pods": usd("70.00")}
    assert referral.spend == usd("470.00")
    with CaptureQueriesContext(connection) as queries:
        spend("bob", "600.00", product="serverless", when=at(5))  # net 1000: the milestone is reached
    assert _credits(bob) == usd("500.00")
    sums_of_the_log = [q["sql"] for q in queries.captured_queries
                       if "SUM" in q["sql"] and '"referrals_event"' in q["sql"]]
    assert sums_of_the_log == []
    referral.refresh_from_db()
    assert referral.spend_by_product == {"serverless": usd("1000.00"), "pods": usd("70.00")}

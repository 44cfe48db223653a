"""Programme versions (issue 13.3): an edit is a new version with an effective time, every
accrual names the version it used, and replaying the log after any edit rebuilds the same state."""
from ledger.models import Book
from ledger.selectors import balances_for
from referrals.jobs import run_jobs
from referrals.models import Program
from referrals.verification import verify
from tests.helpers import at, signup, spend, usd


def _pair():
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))
    return alice, bob


def test_verify_ledger_replays_a_raised_milestone_threshold(runpod):
    alice, bob = _pair()
    spend("bob", "1000.00", product="serverless", when=at(2))  # the milestone at $1,000 pays both
    assert balances_for(bob.pk)[Book.CREDITS] == usd("500.00")
    program = Program.objects.get(key="runpod-serverless-milestone")
    program.milestone_threshold = "2000.00"
    program.save()
    spend("bob", "10.00", product="serverless", when=at(3))
    assert verify() == []
    assert balances_for(bob.pk)[Book.CREDITS] == usd("500.00")


def test_verify_ledger_replays_an_edited_rate(runpod):
    alice, _ = _pair()
    spend("bob", "100.00", when=at(2))
    Program.objects.filter(key="runpod-revenue-share").update(rate="3.50")
    spend("bob", "100.00", when=at(3))
    assert balances_for(alice.pk)[Book.PENDING] == usd("5.50")
    assert verify() == []
    assert balances_for(alice.pk)[Book.PENDING] == usd("5.50")


def test_verify_ledger_replays_a_lowered_milestone_threshold_caught_up_by_the_job(runpod):
    alice, bob = _pair()
    spend("bob", "800.00", product="serverless", when=at(2))
    Program.objects.filter(kind=Program.Kind.MILESTONE).update(milestone_threshold="750.00")
    assert run_jobs(at=at(3), names=["milestones"])["milestones"] == {"milestones_awarded": 1}
    assert verify() == []
    assert balances_for(alice.pk)[Book.CREDITS] == usd("500.00")

"""SPEC B.2: $2.50 sign-up credit for a referred account, valid 30 days, the rest expires."""
from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.jobs import run_jobs
from referrals.engine.services import ingest_event
from referrals.models import CreditGrant
from tests.helpers import at, event, push, signup, usd


def test_it_gives_a_referred_account_2_50_of_credit(apimarket):
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))
    assert balances_for(bob.pk)[Book.CREDITS] == usd("2.50")
    assert CreditGrant.objects.get(account=bob).expires_at == at(31)


def test_it_gives_nothing_to_an_account_that_was_not_referred(apimarket):
    bob = signup("bob")
    assert balances_for(bob.pk)[Book.CREDITS] == 0


def test_it_expires_what_was_not_redeemed_after_30_days(apimarket):
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))
    push(event("credits.redeemed", "bob", amount="1.00", when=at(10)))
    run_jobs(at=at(30), names=["expire_credits"])
    assert balances_for(bob.pk)[Book.CREDITS] == usd("1.50"), "not yet: 30 days end at day 31"
    result = run_jobs(at=at(31), names=["expire_credits"])
    assert result["expire_credits"] == {"grants_expired": 1}
    assert balances_for(bob.pk)[Book.CREDITS] == 0
    assert run_jobs(at=at(32), names=["expire_credits"])["expire_credits"] == {"grants_expired": 0}


def test_it_refuses_to_redeem_more_than_the_credits(apimarket):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    result = ingest_event(event("credits.redeemed", "bob", amount="2.51", when=at(2)))
    assert result.status == "rejected" and "amount" in result.fields


def test_it_refuses_to_redeem_credit_that_has_lapsed_before_the_job_ran(apimarket):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    result = ingest_event(event("credits.redeemed", "bob", amount="1.00", when=at(31)))
    assert result.status == "rejected" and "spendable credits (0.00)" in result.fields["amount"]

"""Fraud rules beyond self-referral: each holds the earnings for review and records its signal."""
from datetime import timedelta

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.models import Click, FraudFlag, Referral
from tests.helpers import at, buy_credits, signup, usd


def _signals(account):
    referral = Referral.objects.get(referred=account)
    return referral.status, [s["signal"] for s in FraudFlag.objects.get(referral=referral).signals]


def test_it_flags_a_disposable_email_domain_and_holds_the_commission(vast):
    alice = signup("alice")
    bob = signup("bob", email="bob@mailinator.com", code=alice.referral_code, when=at(1))
    assert _signals(bob) == ("ineligible", ["disposable_email"])
    buy_credits("bob", "100.00", when=at(2))
    books = balances_for(alice.pk)
    assert books[Book.PENDING] == usd("3.00") and books[Book.CASH] == 0


def test_it_flags_a_subdomain_of_a_disposable_domain_but_not_a_normal_one(vast):
    alice = signup("alice")
    sub = signup("bob", email="bob@x.mailinator.com", code=alice.referral_code, when=at(1))
    normal = signup("carol", email="carol@example.org", code=alice.referral_code, when=at(1))
    assert _signals(sub)[1] == ["disposable_email"]
    assert Referral.objects.get(referred=normal).status == "pending"


def test_it_flags_the_second_sign_up_that_reuses_one_click(vast):
    alice = signup("alice")
    click = Click.objects.create(referrer=alice, visitor_id="v1", created_at=at(1))
    first = signup("bob", click_id=str(click.pk), when=at(1, hours=1))
    second = signup("carol", click_id=str(click.pk), when=at(1, hours=2))
    assert Referral.objects.get(referred=first).status == "pending"
    assert _signals(second) == ("ineligible", ["shared_click"])


def test_it_flags_a_sign_up_after_a_burst_of_clicks(vast, settings):
    settings.REFERRAL = {**settings.REFERRAL, "CLICK_BURST_COUNT": 20, "CLICK_BURST_MINUTES": 10}
    alice = signup("alice")
    Click.objects.bulk_create([Click(referrer=alice, visitor_id=f"v{i}", created_at=at(1) - timedelta(seconds=i))
                               for i in range(21)])
    bursty = signup("bob", code=alice.referral_code, when=at(1))
    calm = signup("carol", code=alice.referral_code, when=at(2))
    status, signals = _signals(bursty)
    assert signals == ["click_burst"]
    assert FraudFlag.objects.get(referral__referred=bursty).signals[0]["detail"].startswith("21 clicks")
    assert Referral.objects.get(referred=calm).status == "pending"

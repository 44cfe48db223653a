"""SPEC attribution: no self-referral through e-mail, payment fingerprint or sign-up IP/device."""
from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.events import normalize_email
from referrals.engine.services import fraud_flag_clear, fraud_flag_confirm, ingest_event
from referrals.models import FraudFlag, Referral
from tests.helpers import at, buy_credits, event, signup, usd


def test_it_normalises_gmail_dots_tags_and_case():
    assert normalize_email("Jo.Hn+ref@GMail.com") == "john@gmail.com"
    assert normalize_email("john@googlemail.com") == "john@gmail.com"
    assert normalize_email("Jo.Hn+ref@example.com") == "jo.hn@example.com"


def test_it_marks_a_referral_with_the_referrers_email_ineligible_and_queues_it(vast):
    alice = signup("alice", email="alice.smith@gmail.com")
    bob = signup("bob", email="AliceSmith+2@gmail.com", code=alice.referral_code, when=at(1))
    referral = Referral.objects.get(referred=bob)
    assert referral.status == "ineligible"
    assert referral.ineligible_reason == "same e-mail as the referrer"
    assert FraudFlag.objects.get(referral=referral).signals[0]["signal"] == "same_email"
    buy_credits("bob", "100.00", when=at(2))
    books = balances_for(alice.pk)
    assert books[Book.PENDING] == usd("3.00") and books[Book.CASH] == 0, "held for review, not dropped"


def test_it_flags_the_same_sign_up_ip_or_device_within_the_window_only(vast):
    alice = signup("alice", ip="203.0.113.7", device_id="dev-1")
    near = signup("bob", code=alice.referral_code, when=at(1), ip="203.0.113.7")
    far = signup("carol", code=alice.referral_code, when=at(90), ip="203.0.113.7")
    device = signup("dave", code=alice.referral_code, when=at(2), device_id="dev-1")
    assert Referral.objects.get(referred=near).status == "ineligible"
    assert Referral.objects.get(referred=far).status == "pending"
    assert Referral.objects.get(referred=device).ineligible_reason == "same device as the referrer"


def test_it_holds_earlier_commission_when_a_shared_payment_method_shows_up(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("alice", "5.00", when=at(1), payment_fingerprint="card_abc")
    buy_credits("bob", "100.00", when=at(2))
    buy_credits("alice", "5.00", when=at(2), payment_fingerprint="card_zzz")
    spend_off = ingest_event(event("usage.charged", "alice", amount="10.00", product="pods", when=at(2)))
    assert spend_off.status == "accepted"
    assert balances_for(alice.pk)[Book.CASH] == usd("2.25")
    buy_credits("bob", "100.00", when=at(3), payment_fingerprint="card_abc")
    books = balances_for(alice.pk)
    assert books[Book.CASH] == 0 and books[Book.CREDITS] == 0
    assert books[Book.PENDING] == usd("6.00")
    flag = FraudFlag.objects.get()
    assert flag.signals == [{"signal": "same_payment", "detail": "****_abc"}]


def test_staff_clearing_a_flag_releases_the_held_earnings(vast, staff):
    alice = signup("alice", email="a@example.com")
    signup("bob", email="A@example.com", code=alice.referral_code, when=at(1))
    buy_credits("bob", "100.00", when=at(2))
    fraud_flag_clear(flag=FraudFlag.objects.get(), actor=staff, reason="siblings sharing a domain")
    books = balances_for(alice.pk)
    assert books[Book.PENDING] == 0 and books[Book.CASH] == usd("2.25")
    assert Referral.objects.get().status == "converted"


def test_staff_confirming_fraud_voids_the_held_earnings(vast, staff):
    alice = signup("alice", email="a@example.com")
    signup("bob", email="A@example.com", code=alice.referral_code, when=at(1))
    buy_credits("bob", "100.00", when=at(2))
    fraud_flag_confirm(flag=FraudFlag.objects.get(), actor=staff, reason="same person")
    books = balances_for(alice.pk)
    assert books[Book.PENDING] == 0 and books[Book.CASH] == 0 and books[Book.CREDITS] == 0


def test_an_account_cannot_be_referred_twice_or_after_creation(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    result = ingest_event(event("account.created", "bob", email="bob2@example.com", referral_code=alice.referral_code))
    assert result.status == "rejected"
    assert result.fields == {"account": "account already exists; only new accounts can be referred"}
    assert Referral.objects.count() == 1

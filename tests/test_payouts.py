"""Payout rules and lifecycle (SPEC "Payouts"): reservation, bad input, approval, failure and the
ledger legs of each transition, with the provider round trip against a local fake Stripe."""
import pytest
from django.utils import timezone

from ledger.models import Book
from ledger.selectors import balances_for
from payouts import services
from payouts.models import Payout, PayoutTransition
from payouts.services import PayoutInvalid, PayoutRefused
from referrals.engine.services import account_change_track
from referrals.engine.verification import verify
from referrals.models import Event
from referrals.selectors import account_balances, earnings_by_program
from tests.fakes import fixtures
from tests.helpers import at, buy_credits, buy_plan, signup, usd

fake_stripe = fixtures.fake_stripe


@pytest.fixture(autouse=True)
def _no_inline_processing(settings):
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    settings.PAYOUT_AUTO_APPROVE_BELOW = "0"


def _earner(vast, purchase: str = "2000.00"):
    """alice, with 3% x 75% of bob's purchase as cash (2000.00 -> 45.00)."""
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", purchase, when=at(2))
    alice.refresh_from_db()
    return alice


def _partner():
    """alice on the apimarket Partner track with 10% of a 300.00 plan as cash (Stripe only, min 25)."""
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    account_change_track(account=alice, track="partner")
    buy_plan("bob", "300.00", when=timezone.now())
    alice.refresh_from_db()
    return alice


def _paypal(account, email="alice@paypal.test"):
    return services.payout_method_set(account=account, type="paypal", email=email)


def _cash(account):
    return account_balances(account).cash_available


def test_it_reserves_the_amount_at_request_time(vast):
    alice = _earner(vast)
    _paypal(alice)
    payout = services.payout_request(account=alice, amount="40.00", method="paypal")
    assert payout.status == Payout.Status.REQUESTED
    books = balances_for(alice.pk)
    assert books[Book.RESERVED] == usd("40.00")
    assert books[Book.CASH] == usd("5.00")
    assert _cash(alice) == usd("5.00")
    assert verify() == []


@pytest.mark.parametrize(("amount", "field", "words"), [
    ("45.01", "amount", "more than the cash available"),
    ("12.345", "amount", "at most 2 decimal places"),
    ("-5.00", "amount", "greater than zero"),
    ("0", "amount", "greater than zero"),
    ("abc", "amount", "not a valid decimal"),
    (12.5, "amount", "decimal string"),
])
def test_it_refuses_bad_amounts_and_reserves_nothing(vast, amount, field, words):
    alice = _earner(vast)
    _paypal(alice)
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_request(account=alice, amount=amount, method="paypal")
    assert words in caught.value.fields[field]
    assert Payout.objects.count() == 0
    assert balances_for(alice.pk)[Book.RESERVED] == 0
    assert _cash(alice) == usd("45.00")


def test_it_refuses_a_payout_without_a_method_set_up(vast):
    alice = _earner(vast)
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_request(account=alice, amount="10.00", method="wise")
    assert "no Wise payout method is set up" in caught.value.fields["method"]
    assert balances_for(alice.pk)[Book.RESERVED] == 0


def test_it_refuses_an_unknown_method(vast):
    alice = _earner(vast)
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_request(account=alice, amount="10.00", method="cheque")
    assert "must be one of stripe, paypal, wise" in caught.value.fields["method"]


def test_it_refuses_a_method_the_programme_does_not_allow(apimarket):
    alice = _partner()
    _paypal(alice)
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_request(account=alice, amount="30.00", method="paypal")
    assert "paypal is not allowed by the programmes" in caught.value.fields["method"]
    assert "allowed: stripe" in caught.value.fields["method"]
    assert balances_for(alice.pk)[Book.RESERVED] == 0


def test_it_refuses_a_payout_below_the_programme_minimum(apimarket):
    alice = _partner()
    services.payout_method_set(account=alice, type="stripe", connected_account="acct_1Alice0001")
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_request(account=alice, amount="24.99", method="stripe")
    assert caught.value.fields == {"amount": "is below the minimum payout of $25.00"}
    payout = services.payout_request(account=alice, amount="25.00", method="stripe")
    assert payout.amount == usd("25.00")


def test_it_refuses_cash_blocked_by_own_purchased_credits(vast):
    alice = _earner(vast)
    _paypal(alice)
    buy_credits("alice", "10.00", when=at(3))
    alice.refresh_from_db()
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_request(account=alice, amount="1.00", method="paypal")
    assert "more than the cash available" in caught.value.fields["amount"]


def test_it_never_reserves_more_than_the_balance_over_several_requests(vast):
    alice = _earner(vast)
    _paypal(alice)
    services.payout_request(account=alice, amount="30.00", method="paypal")
    with pytest.raises(PayoutInvalid):
        services.payout_request(account=alice, amount="15.01", method="paypal")
    services.payout_request(account=alice, amount="15.00", method="paypal")
    assert _cash(alice) == 0
    assert balances_for(alice.pk)[Book.CASH] == 0


def test_it_returns_the_money_when_staff_reject_with_a_reason(vast, staff):
    alice = _earner(vast)
    _paypal(alice)
    payout = services.payout_request(account=alice, amount="40.00", method="paypal")
    with pytest.raises(PayoutInvalid):
        services.payout_reject(payout=payout, actor=staff, reason=" ")
    payout = services.payout_reject(payout=payout, actor=staff, reason="KYC incomplete")
    assert payout.status == Payout.Status.REJECTED
    assert _cash(alice) == usd("45.00")
    assert balances_for(alice.pk)[Book.RESERVED] == 0
    last = PayoutTransition.objects.filter(payout=payout).last()
    assert (last.from_status, last.to_status, last.actor, last.reason) == ("requested", "rejected", staff,
                                                                            "KYC incomplete")
    with pytest.raises(PayoutRefused):
        services.payout_approve(payout=payout, actor=staff)
    assert verify() == []


def test_it_lets_the_holder_cancel_a_requested_payout_only(vast, staff):
    alice = _earner(vast)
    _paypal(alice)
    payout = services.payout_request(account=alice, amount="10.00", method="paypal")
    services.payout_cancel(payout=payout, actor=None)
    assert _cash(alice) == usd("45.00")
    second = services.payout_request(account=alice, amount="10.00", method="paypal")
    services.payout_approve(payout=second, actor=staff)
    with pytest.raises(PayoutRefused):
        services.payout_cancel(payout=second, actor=None)


def test_it_auto_approves_below_the_configured_amount(vast, settings):
    settings.PAYOUT_AUTO_APPROVE_BELOW = "20.00"
    alice = _earner(vast)
    _paypal(alice)
    small = services.payout_request(account=alice, amount="19.99", method="paypal")
    large = services.payout_request(account=alice, amount="20.00", method="paypal")
    assert small.status == Payout.Status.APPROVED
    assert small.transitions.last().source == "auto"
    assert large.status == Payout.Status.REQUESTED


def test_it_takes_cash_from_each_programme_in_order_and_returns_it_there(vast):
    from referrals.models import Program

    alice = _earner(vast)
    _paypal(alice)
    # A second cash programme of the same preset family, earning on plan purchases.
    other = Program.objects.create(key="vast-plans", name="Plan cash", kind=Program.Kind.PURCHASE_COMMISSION,
                                   event_types=["plan.purchased"], rate=10, pays_in=Program.PaysIn.CASH,
                                   payout_methods=["paypal"])
    buy_plan("bob", "100.00", when=at(3))  # 10.00 cash under `other`
    alice.refresh_from_db()
    assert _cash(alice) == usd("55.00")
    payout = services.payout_request(account=alice, amount="50.00", method="paypal")
    vast_program = vast["purchase_commission"]
    assert payout.allocation == [[vast_program.pk, usd("45.00")], [other.pk, usd("5.00")]]
    services.payout_cancel(payout=payout, actor=None)
    rows = {row["program"]: row for row in earnings_by_program(alice)}
    assert rows["vast-plans"]["paid"] == 0
    assert verify() == []


def test_it_pays_through_stripe_and_moves_the_reserve_to_platform_payouts(vast, staff, fake_stripe):
    alice = _earner(vast)
    connected = fake_stripe.add_account()
    services.payout_method_set(account=alice, type="stripe", connected_account=connected)
    payout = services.payout_request(account=alice, amount="40.00", method="stripe")
    services.payout_approve(payout=payout, actor=staff, reason="ok")
    payout = services.payout_process(payout_id=payout.pk)
    assert payout.status == Payout.Status.PAID
    transfer = fake_stripe.transfers[payout.provider_reference]
    assert (transfer["amount"], transfer["destination"], transfer["currency"]) == (4000, connected, "usd")
    assert transfer["metadata"] == {"payout_id": str(payout.pk), "attempt": "1"}
    books = balances_for(alice.pk)
    assert (books[Book.RESERVED], books[Book.CASH]) == (0, usd("5.00"))
    assert [row["paid"] for row in earnings_by_program(alice)] == [usd("40.00")]
    assert [t.to_status for t in payout.transitions.all()] == ["requested", "approved", "processing", "paid"]
    # Processing it again is a no-op: it is paid.
    assert services.payout_process(payout_id=payout.pk).status == Payout.Status.PAID
    assert len(fake_stripe.transfers) == 1
    assert Event.objects.filter(type="payout.settled").count() == 1
    assert verify() == []


def test_it_fails_a_payout_stripe_refuses_and_returns_the_money(vast, staff, fake_stripe):
    alice = _earner(vast)
    services.payout_method_set(account=alice, type="stripe", connected_account="acct_unknown000")
    payout = services.payout_request(account=alice, amount="40.00", method="stripe")
    services.payout_approve(payout=payout, actor=staff)
    payout = services.payout_process(payout_id=payout.pk)
    assert payout.status == Payout.Status.FAILED
    assert "No such destination" in payout.failure_reason
    assert _cash(alice) == usd("45.00")
    assert fake_stripe.transfers == {}
    assert verify() == []


def test_it_keeps_a_payout_processing_on_a_stripe_5xx_and_pays_it_on_retry(vast, staff, fake_stripe):
    alice = _earner(vast)
    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    payout = services.payout_request(account=alice, amount="40.00", method="stripe")
    services.payout_approve(payout=payout, actor=staff)
    fake_stripe.fail_next(500, {"error": {"type": "api_error", "message": "Something went wrong"}},
                          path="/v1/transfers")
    payout = services.payout_process(payout_id=payout.pk)
    assert payout.status == Payout.Status.PROCESSING
    assert "Something went wrong" in payout.last_error
    assert balances_for(alice.pk)[Book.RESERVED] == usd("40.00")
    counts = services.retry_stuck_payouts(at=payout.processing_at + _minutes(16))
    assert counts == {"retried": 1, "paid": 1, "failed": 0, "processing": 0}
    payout.refresh_from_db()
    assert payout.status == Payout.Status.PAID
    assert len(fake_stripe.transfers) == 1


def test_it_retries_a_failed_payout_as_a_new_attempt_when_staff_ask(vast, staff, fake_stripe):
    alice = _earner(vast)
    method = services.payout_method_set(account=alice, type="stripe", connected_account="acct_missing0001")
    payout = services.payout_request(account=alice, amount="40.00", method="stripe")
    services.payout_approve(payout=payout, actor=staff)
    assert services.payout_process(payout_id=payout.pk).status == Payout.Status.FAILED
    fake_stripe.add_account("acct_missing0001")
    method.refresh_from_db()
    payout = services.payout_retry(payout=payout, actor=staff, reason="account fixed")
    assert (payout.status, payout.attempt) == (Payout.Status.APPROVED, 2)
    assert _cash(alice) == usd("5.00")
    payout = services.payout_process(payout_id=payout.pk)
    assert payout.status == Payout.Status.PAID
    assert verify() == []


def test_it_lets_staff_mark_a_processing_payout_paid_but_not_a_rejected_one(vast, staff):
    alice = _earner(vast)
    _paypal(alice)
    payout = services.payout_request(account=alice, amount="10.00", method="paypal")
    services.payout_approve(payout=payout, actor=staff)
    payout = services.payout_mark_paid(payout=payout, actor=staff, source="staff", reference="manual-1",
                                       reason="confirmed by PayPal support")
    assert payout.status == Payout.Status.PAID
    other = services.payout_request(account=alice, amount="10.00", method="paypal")
    services.payout_reject(payout=other, actor=staff, reason="duplicate")
    with pytest.raises(PayoutRefused):
        services.payout_mark_paid(payout=other, actor=staff, source="staff")


def test_it_masks_method_details(vast):
    alice = _earner(vast)
    assert _paypal(alice, "alice.smith@example.com").masked == "a•••@••••e.com"
    wise = services.payout_method_set(account=alice, type="wise", recipient="40000123")
    assert wise.masked == "••••0123"
    stripe = services.payout_method_set(account=alice, type="stripe", connected_account="acct_1Nv0FGQ9RKHgCVdK")
    assert stripe.masked == "••••CVdK"
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_method_set(account=alice, type="paypal", email="not-an-email")
    assert "email" in caught.value.fields


def _minutes(n):
    from datetime import timedelta

    return timedelta(minutes=n)

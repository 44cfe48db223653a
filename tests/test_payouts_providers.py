"""The providers over real HTTP against local fake servers: success, 4xx, 5xx, timeouts, token
renewal, and a crash between the provider's commit and ours (exactly one payment)."""
import time
from datetime import timedelta

import pytest

from ledger.models import Book
from ledger.selectors import balances_for
from payouts import services
from payouts.models import Payout
from referrals.engine.verification import verify
from tests.fakes import fixtures
from tests.helpers import at, buy_credits, signup, usd

fake_stripe = fixtures.fake_stripe
fake_paypal = fixtures.fake_paypal
fake_wise = fixtures.fake_wise

LATER = timedelta(minutes=16)  # past PAYOUT_STUCK_AFTER_MINUTES


@pytest.fixture(autouse=True)
def _manual_processing(settings):
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    settings.PAYOUT_STUCK_AFTER_MINUTES = 15


@pytest.fixture
def alice(vast, staff):
    """alice with 45.00 of cash (3% x 75% of bob's 2000.00 of credits)."""
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    return alice


def _approved(account, staff, method: str, amount: str = "40.00") -> Payout:
    payout = services.payout_request(account=account, amount=amount, method=method)
    return services.payout_approve(payout=payout, actor=staff)


def _retry(payout: Payout) -> Payout:
    payout.refresh_from_db()
    services.retry_stuck_payouts(at=payout.processing_at + LATER)
    payout.refresh_from_db()
    return payout


def _wait_for(condition, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the fake server never finished its work"
        time.sleep(0.02)


# --------------------------------------------------------------------------- Stripe


def test_it_pays_exactly_once_when_the_connection_drops_after_stripe_made_the_transfer(alice, staff, fake_stripe):
    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    payout = _approved(alice, staff, "stripe")
    fake_stripe.drop_next(path="/v1/transfers")
    payout = services.payout_process(payout_id=payout.pk)
    # Stripe committed the transfer, we never heard back: the payout must stay processing.
    assert payout.status == Payout.Status.PROCESSING
    assert "connection" in payout.last_error.lower() or "network" in payout.last_error.lower()
    assert len(fake_stripe.transfers) == 1
    # A second processing right away is refused by the claim (another worker may be on it).
    assert services.payout_process(payout_id=payout.pk).status == Payout.Status.PROCESSING
    payout = _retry(payout)
    assert payout.status == Payout.Status.PAID
    assert len(fake_stripe.transfers) == 1, "the retry must not make a second transfer"
    assert payout.provider_reference == next(iter(fake_stripe.transfers))
    keys = [r["headers"]["idempotency-key"] for r in fake_stripe.requests if r["path"] == "/v1/transfers"]
    assert keys == [f"payout-{payout.pk}-attempt-1"] * 2
    assert balances_for(alice.pk)[Book.RESERVED] == 0
    assert verify() == []


def test_it_pays_exactly_once_after_a_stripe_timeout(alice, staff, fake_stripe, settings):
    settings.PAYOUT_PROVIDER_TIMEOUT = 0.3
    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    payout = _approved(alice, staff, "stripe")
    fake_stripe.delay_next(0.8, path="/v1/transfers")
    payout = services.payout_process(payout_id=payout.pk)
    assert payout.status == Payout.Status.PROCESSING
    _wait_for(lambda: len(fake_stripe.transfers) == 1)  # Stripe finished after we gave up
    payout = _retry(payout)
    assert payout.status == Payout.Status.PAID
    assert len(fake_stripe.transfers) == 1


def test_it_finds_the_transfer_of_a_crashed_attempt_by_its_transfer_group(alice, staff, fake_stripe):
    from payouts.providers.stripe import StripeProvider

    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    payout = _approved(alice, staff, "stripe")
    fake_stripe.drop_next(path="/v1/transfers")
    payout = services.payout_process(payout_id=payout.pk)
    found = StripeProvider().fetch(payout)
    assert (found.status, found.amount_cents) == ("paid", 4000)


def test_it_refuses_a_stripe_method_before_onboarding_is_done(alice, staff, fake_stripe):
    from payouts.services import PayoutInvalid

    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account(),
                               ready=False)
    with pytest.raises(PayoutInvalid) as caught:
        services.payout_request(account=alice, amount="10.00", method="stripe")
    assert "onboarding" in caught.value.fields["method"]


def test_it_onboards_an_express_account_and_refreshes_its_status(alice, fake_stripe):
    url = services.stripe_onboarding_start(account=alice, refresh_url="http://testserver/payouts/",
                                           return_url="http://testserver/payouts/stripe/return/")
    method = alice.payout_methods.get(type="stripe")
    assert url == f"{fake_stripe.url}/express/onboarding/{method.stripe_account_id}"
    assert not method.ready
    # Pressing the button again reuses the same connected account.
    services.stripe_onboarding_start(account=alice, refresh_url="http://x/", return_url="http://x/")
    assert len(fake_stripe.accounts) == 1
    assert services.stripe_status_refresh(method=method).ready is False
    fake_stripe.activate(method.stripe_account_id)
    assert services.stripe_status_refresh(method=method).ready is True


# --------------------------------------------------------------------------- PayPal


def test_it_pays_through_paypal_once_the_batch_succeeds(alice, staff, fake_paypal):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    payout = services.payout_process(payout_id=_approved(alice, staff, "paypal").pk)
    assert payout.status == Payout.Status.PROCESSING
    batch = fake_paypal.batches[payout.provider_reference]
    assert batch["items"][0]["payout_item"]["amount"] == {"value": "40.00", "currency": "USD"}
    assert batch["items"][0]["payout_item"]["receiver"] == "alice@paypal.test"
    assert _retry(payout).status == Payout.Status.PROCESSING  # PayPal is still working on it
    fake_paypal.settle(payout.provider_reference, "SUCCESS")
    assert _retry(payout).status == Payout.Status.PAID
    assert fake_paypal.tokens_issued == 1, "the OAuth token is cached"
    assert verify() == []


def test_it_fails_a_paypal_payout_the_batch_reports_failed(alice, staff, fake_paypal):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    payout = services.payout_process(payout_id=_approved(alice, staff, "paypal").pk)
    fake_paypal.settle(payout.provider_reference, "FAILED")
    payout = _retry(payout)
    assert payout.status == Payout.Status.FAILED
    assert "FAILED" in payout.failure_reason
    assert balances_for(alice.pk)[Book.CASH] == usd("45.00")


def test_it_renews_an_expired_paypal_token_once(alice, staff, fake_paypal):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    payout = services.payout_process(payout_id=_approved(alice, staff, "paypal").pk)
    fake_paypal.expire_tokens()
    fake_paypal.settle(payout.provider_reference, "SUCCESS")
    assert _retry(payout).status == Payout.Status.PAID
    assert fake_paypal.tokens_issued == 2


def test_it_fails_a_paypal_payout_refused_with_a_4xx_and_keeps_it_on_a_5xx(alice, staff, fake_paypal):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    first = _approved(alice, staff, "paypal", "20.00")
    fake_paypal.fail_next(503, {"name": "SERVICE_UNAVAILABLE", "message": "Try later"}, path="/v1/payments")
    assert services.payout_process(payout_id=first.pk).status == Payout.Status.PROCESSING
    second = _approved(alice, staff, "paypal", "20.00")
    fake_paypal.fail_next(422, {"name": "UNPROCESSABLE_ENTITY", "message": "Receiver is unregistered"},
                          path="/v1/payments")
    second = services.payout_process(payout_id=second.pk)
    assert second.status == Payout.Status.FAILED
    assert "Receiver is unregistered" in second.failure_reason
    assert _retry(first).status == Payout.Status.PROCESSING and len(fake_paypal.batches) == 1


def test_it_sends_one_paypal_batch_when_the_answer_is_lost(alice, staff, fake_paypal):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    payout = _approved(alice, staff, "paypal")
    fake_paypal.drop_next(path="/v1/payments/payouts")
    payout = services.payout_process(payout_id=payout.pk)
    assert (payout.status, payout.provider_reference) == (Payout.Status.PROCESSING, "")
    payout = _retry(payout)
    assert len(fake_paypal.batches) == 1
    assert payout.provider_reference == next(iter(fake_paypal.batches))


# --------------------------------------------------------------------------- Wise


def test_it_pays_through_wise_once_the_transfer_is_sent(alice, staff, fake_wise):
    fake_wise.recipients.add("40000123")
    services.payout_method_set(account=alice, type="wise", recipient="40000123")
    payout = services.payout_process(payout_id=_approved(alice, staff, "wise").pk)
    assert payout.status == Payout.Status.PROCESSING
    transfer = fake_wise.transfers[payout.provider_reference]
    assert (transfer["status"], transfer["sourceValue"]) == ("processing", 40.0)
    fake_wise.set_status(payout.provider_reference, "outgoing_payment_sent")
    assert _retry(payout).status == Payout.Status.PAID
    assert verify() == []


def test_it_fails_a_bounced_wise_transfer_and_an_unknown_recipient(alice, staff, fake_wise):
    fake_wise.recipients.add("40000123")
    services.payout_method_set(account=alice, type="wise", recipient="40000123")
    payout = services.payout_process(payout_id=_approved(alice, staff, "wise", "20.00").pk)
    fake_wise.set_status(payout.provider_reference, "bounced_back")
    assert _retry(payout).status == Payout.Status.FAILED
    services.payout_method_set(account=alice, type="wise", recipient="49999999")
    refused = services.payout_process(payout_id=_approved(alice, staff, "wise", "20.00").pk)
    assert refused.status == Payout.Status.FAILED
    assert "Recipient account not found" in refused.failure_reason
    assert balances_for(alice.pk)[Book.CASH] == usd("45.00")


def test_it_makes_one_wise_transfer_when_the_answer_is_lost(alice, staff, fake_wise):
    fake_wise.recipients.add("40000123")
    services.payout_method_set(account=alice, type="wise", recipient="40000123")
    payout = _approved(alice, staff, "wise")
    fake_wise.drop_next(path="/v1/transfers")
    assert services.payout_process(payout_id=payout.pk).status == Payout.Status.PROCESSING
    payout = _retry(payout)
    assert len(fake_wise.transfers) == 1
    assert payout.status == Payout.Status.PROCESSING
    assert fake_wise.transfers[payout.provider_reference]["status"] == "processing", "funded once"


def test_it_sends_an_approved_payout_once_the_approval_commits(alice, staff, fake_stripe, settings,
                                                               django_capture_on_commit_callbacks):
    settings.PAYOUT_PROCESS_ON_APPROVE = True
    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    payout = services.payout_request(account=alice, amount="40.00", method="stripe")
    with django_capture_on_commit_callbacks(execute=True):
        services.payout_approve(payout=payout, actor=staff)
    payout.refresh_from_db()
    assert payout.status == Payout.Status.PAID
    assert len(fake_stripe.transfers) == 1


def test_it_leaves_an_approved_payout_for_the_retry_job_when_stripe_is_down(alice, staff, fake_stripe, settings,
                                                                            django_capture_on_commit_callbacks):
    settings.PAYOUT_PROCESS_ON_APPROVE = True
    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    payout = services.payout_request(account=alice, amount="40.00", method="stripe")
    fake_stripe.fail_next(503, {"error": {"type": "api_error", "message": "Stripe is down"}})
    with django_capture_on_commit_callbacks(execute=True):
        services.payout_approve(payout=payout, actor=staff)
    payout.refresh_from_db()
    assert payout.status == Payout.Status.PROCESSING
    assert services.retry_stuck_payouts(at=payout.processing_at + LATER)["paid"] == 1


def test_it_is_run_by_the_periodic_jobs_runner(alice, staff, fake_stripe):
    from referrals.engine.jobs import run_jobs

    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    payout = _approved(alice, staff, "stripe")
    results = run_jobs(at=payout.approved_at + LATER, names=["retry_stuck_payouts"])
    assert results["retry_stuck_payouts"]["paid"] == 1
    assert run_jobs(at=payout.approved_at + LATER, names=["retry_stuck_payouts"])["retry_stuck_payouts"] == {
        "retried": 0, "paid": 0, "failed": 0, "processing": 0}

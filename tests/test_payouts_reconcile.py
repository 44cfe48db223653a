"""`manage.py reconcile_payouts`: every difference between our payouts and the fake providers."""
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from payouts import services
from payouts.models import Payout
from tests.fakes import fixtures
from tests.helpers import at, buy_credits, signup

fake_stripe = fixtures.fake_stripe
fake_paypal = fixtures.fake_paypal


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.PAYOUT_PROCESS_ON_APPROVE = False


@pytest.fixture
def alice(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    return alice


def _paid(alice, staff, method, amount="10.00"):
    payout = services.payout_request(account=alice, amount=amount, method=method)
    services.payout_approve(payout=payout, actor=staff)
    return services.payout_process(payout_id=payout.pk)


def _run(*args) -> list[str]:
    out = StringIO()
    call_command("reconcile_payouts", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_it_finds_no_difference_when_the_books_agree(alice, staff, fake_stripe, fake_paypal):
    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    assert _paid(alice, staff, "stripe").status == Payout.Status.PAID
    assert _run()[-1].startswith("0 difference(s)")


def test_it_lists_every_difference(alice, staff, fake_stripe, fake_paypal):
    services.payout_method_set(account=alice, type="stripe", connected_account=fake_stripe.add_account())
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    reversed_ = _paid(alice, staff, "stripe")
    fake_stripe.reverse(reversed_.provider_reference)
    settled = _paid(alice, staff, "paypal")
    fake_paypal.settle(settled.provider_reference, "SUCCESS")
    # A transfer someone made by hand at Stripe, for no payout of ours.
    fake_stripe.transfers["tr_manual"] = {"id": "tr_manual", "amount": 999, "destination": "acct_x",
                                          "metadata": {}, "created": 2_000_000_000, "reversed": False}
    lines = _run("--since", (reversed_.requested_at - timedelta(hours=1)).isoformat())
    assert lines[-1].startswith("3 difference(s)")
    text = "\n".join(lines)
    assert f"stripe: payout #{reversed_.pk}: status differs: ours is paid, the provider says failed" in text
    assert f"paypal: payout #{settled.pk}: status differs: ours is processing, the provider says paid" in text
    assert "stripe: no payout: unknown transfer: tr_manual of 999 cents" in text
    with pytest.raises(CommandError, match="3 difference"):
        _run("--strict")


def test_it_reports_an_unreachable_provider_and_refuses_a_bad_date(alice, staff, fake_paypal):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    payout = _paid(alice, staff, "paypal")
    fake_paypal.fail_next(500, {"name": "INTERNAL_SERVICE_ERROR", "message": "boom"}, path="/v1/payments")
    lines = _run("--provider", "paypal")
    assert f"paypal: payout #{payout.pk}: unreachable: PayPal: HTTP 500: boom" in lines
    with pytest.raises(CommandError, match="--since"):
        _run("--since", "yesterday")

"""The demo of `make run` (issue 16): demo data follows the chosen preset only, and demo payouts
go to the local fake providers (payouts/fakes/, the tests' fakes) served by the portal's own dev
server, so a payout through every method completes."""
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from payouts import services
from payouts.fakes import demo
from payouts.models import Payout, PayoutMethod
from referrals.models import Account, Program
from referrals.presets import load_preset
from tests.helpers import at, buy_credits, signup


def test_runpod_demo_loads_no_other_preset_and_requests_no_payouts(runpod, capsys):
    call_command("seed_demo", "--preset", "runpod")
    call_command("seed_staff_demo")
    assert set(Program.objects.values_list("preset", flat=True)) == {"runpod"}
    assert not Payout.objects.exists()
    assert "no demo payouts" in capsys.readouterr().out


def test_the_runpod_demo_partner_earns_credits_and_the_fraud_desk_says_there_is_no_cash(runpod, client):
    from referrals.models import FraudFlag
    from referrals.selectors import account_balances

    call_command("seed_demo", "--preset", "runpod")
    call_command("seed_staff_demo")
    partner = Account.objects.get(external_id="demo-partner")
    balances = account_balances(partner)
    # Three clients' $1,500.00 of serverless spend: $500.00 of milestone credits each, and 2% revenue
    # share ($90.00) held until the partner passes the 25-referral gate.
    assert balances.credits == 3 * 500 * 10**10 and balances.pending == 90 * 10**10
    assert balances.cash_available == 0
    client.force_login(get_user_model().objects.get(username="sue"))
    flag = FraudFlag.objects.get(referral__referrer=partner)
    page = client.get(f"/admin/referrals/fraudflag/{flag.pk}/change/").content.decode()
    assert "every enabled programme pays in platform credits" in page
    assert "Cash available for payouts" not in page
    assert "$1,500.00" in page and "$90.00" in page


def test_vast_demo_after_a_runpod_one_shows_vast_only(runpod, vast, capsys):
    call_command("seed_demo", "--preset", "vast")
    call_command("seed_staff_demo")
    assert set(Program.objects.filter(enabled=True).values_list("preset", flat=True)) == {"vast"}
    assert sorted(Payout.objects.filter(status="requested").values_list("method_type", flat=True)) == [
        "paypal", "stripe", "wise"]
    disabled = Program.objects.filter(preset="runpod", enabled=False).count()
    assert disabled and f"disabled {disabled} programme(s) of other presets" in capsys.readouterr().out


def test_it_refuses_a_preset_that_is_not_loaded(runpod):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not loaded"):
        call_command("seed_demo", "--preset", "vast")


@pytest.fixture
def demo_server(transactional_db, live_server, settings):
    """The dev server of `make run`: the fakes mounted on it, the providers pointed there."""
    settings.ROOT_URLCONF = "tests.demo_urls"
    base = f"{live_server.url}/payouts/dev/fake-"
    settings.STRIPE_CONNECT_API_BASE = f"{base}stripe"
    settings.PAYPAL_API_BASE = f"{base}paypal"
    settings.WISE_API_BASE = f"{base}wise"
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    demo.reset()
    load_preset("vast")
    call_command("seed_staff_demo")
    yield live_server
    demo.reset()


def _approve_and_process(payout: Payout) -> Payout:
    fiona, frank = (get_user_model().objects.get(username=name) for name in ("fiona", "frank"))
    services.payout_approve(payout=payout, actor=fiona)
    if services.needs_second_approval(payout.amount):
        services.payout_approve(payout=Payout.objects.get(pk=payout.pk), actor=frank)
    return services.payout_process(payout_id=payout.pk)


@pytest.mark.parametrize("method", ["paypal", "stripe", "wise"])
def test_every_demo_payout_method_completes_through_its_local_fake(demo_server, method):
    payout = Payout.objects.get(status="requested", method_type=method)
    paid = _approve_and_process(payout)
    assert paid.status == Payout.Status.PAID, paid.last_error or paid.failure_reason
    assert paid.provider_reference
    assert services.payout_process(payout_id=payout.pk).status == Payout.Status.PAID  # idempotent
    served = demo.fake(method).requests
    assert served and all(r["path"].startswith("/v") for r in served)


def test_the_demo_stripe_knows_the_connected_accounts_of_the_database_after_a_restart(demo_server):
    _approve_and_process(Payout.objects.get(status="requested", method_type="paypal"))
    demo.reset()  # the dev server restarted: the fakes start again from the database
    payout = _approve_and_process(Payout.objects.get(status="requested", method_type="stripe"))
    assert payout.status == Payout.Status.PAID
    transfer = demo.fake("stripe").transfers[payout.provider_reference]
    assert transfer["destination"] == "acct_demopartner" and transfer["amount"] == 120000


def test_a_demo_user_connects_stripe_through_the_fake_onboarding_page_and_is_paid(demo_server, client):
    carol = signup("carol")
    signup("dave", code=carol.referral_code, when=at(1))
    buy_credits("dave", "2000.00", when=at(2))  # 45.00 of cash for carol
    user = get_user_model().objects.create_user("carol@example.com", "carol@example.com", "pw-123456789")
    Account.objects.filter(pk=carol.pk).update(user=user)
    client.force_login(user)

    to_stripe = client.post("/payouts/methods/stripe/")
    assert to_stripe.status_code == 302 and "/payouts/dev/fake-stripe/express/onboarding/acct_" in to_stripe.url
    back = client.get(to_stripe.url.removeprefix(demo_server.url))  # the "Stripe-hosted" page
    assert back.status_code == 302 and back.url.endswith("/payouts/stripe/return/")
    page = client.get(back.url.removeprefix(demo_server.url), follow=True)
    assert "Your Stripe account is connected" in page.content.decode()
    assert PayoutMethod.objects.get(account=carol, type="stripe").ready

    payout = services.payout_request(account=carol, amount="30.00", method="stripe")
    assert _approve_and_process(payout).status == Payout.Status.PAID

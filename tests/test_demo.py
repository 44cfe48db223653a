"""The demo of `make run` (issue 16): demo data follows the chosen preset only, and demo payouts
go to a local fake PayPal served by the portal's own dev server, so they complete."""
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from payouts import services
from payouts.models import Payout
from referrals.models import Program
from referrals.presets import load_preset


def test_runpod_demo_loads_no_other_preset_and_requests_no_payouts(runpod, capsys):
    call_command("seed_demo", "--preset", "runpod")
    call_command("seed_staff_demo")
    assert set(Program.objects.values_list("preset", flat=True)) == {"runpod"}
    assert not Payout.objects.exists()
    assert "no demo payouts" in capsys.readouterr().out


def test_vast_demo_after_a_runpod_one_shows_vast_only(runpod, vast, capsys):
    call_command("seed_demo", "--preset", "vast")
    call_command("seed_staff_demo")
    assert set(Program.objects.filter(enabled=True).values_list("preset", flat=True)) == {"vast"}
    assert Payout.objects.filter(status="requested").count() == 2
    disabled = Program.objects.filter(preset="runpod", enabled=False).count()
    assert disabled and f"disabled {disabled} programme(s) of other presets" in capsys.readouterr().out


def test_it_refuses_a_preset_that_is_not_loaded(runpod):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not loaded"):
        call_command("seed_demo", "--preset", "vast")


def test_demo_payouts_complete_through_the_local_fake_paypal(transactional_db, live_server, settings):
    settings.ROOT_URLCONF = "tests.demo_urls"
    settings.PAYPAL_API_BASE = f"{live_server.url}/payouts/dev/fake-paypal"
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    load_preset("vast")
    call_command("seed_staff_demo")
    fiona = get_user_model().objects.get(username="fiona")
    payout = Payout.objects.filter(status="requested").order_by("amount").first()
    services.payout_approve(payout=payout, actor=fiona)
    payout = services.payout_process(payout_id=payout.pk)
    assert payout.status == Payout.Status.PAID and payout.provider_reference.startswith("DEMO-4500-")
    assert services.payout_process(payout_id=payout.pk).status == Payout.Status.PAID  # idempotent

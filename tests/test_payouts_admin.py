"""The basic payout admin actions go through the services: approve, reject with a reason,
retry failed, mark paid (reason required); method details stay masked."""
import pytest
from django.contrib.auth import get_user_model

from payouts import services
from payouts.models import Payout
from tests.helpers import at, buy_credits, signup

URL = "/admin/payouts/payout/"


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.PAYOUT_PROCESS_ON_APPROVE = False


@pytest.fixture
def boss(db):
    return get_user_model().objects.create_superuser("boss", "boss@operator.test", "pw-boss-12345")


@pytest.fixture
def payouts(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice.private@example.com")
    return [services.payout_request(account=alice, amount="10.00", method="paypal") for _ in range(3)]


def _act(client, action, payouts, reason=""):
    return client.post(URL, {"action": action, "_selected_action": [p.pk for p in payouts], "reason": reason},
                       follow=True)


def test_it_approves_and_rejects_with_a_reason_from_the_admin(client, boss, payouts):
    client.force_login(boss)
    first, second, third = payouts
    _act(client, "approve", [first])
    answer = _act(client, "reject", [second])
    assert "a reason is required" in answer.content.decode() or "reason: is required" in answer.content.decode()
    _act(client, "reject", [second], reason="not verified")
    statuses = dict(Payout.objects.values_list("pk", "status"))
    assert (statuses[first.pk], statuses[second.pk], statuses[third.pk]) == ("approved", "rejected", "requested")
    transition = Payout.objects.get(pk=second.pk).transitions.last()
    assert (transition.actor, transition.reason) == (boss, "not verified")


def test_it_marks_paid_only_with_a_reason_and_retries_only_failed(client, boss, payouts):
    client.force_login(boss)
    first = payouts[0]
    services.payout_approve(payout=first, actor=boss)
    answer = _act(client, "mark_paid", [first])
    assert "is required to mark a payout paid" in answer.content.decode()
    _act(client, "mark_paid", [first], reason="PayPal support confirmed")
    assert Payout.objects.get(pk=first.pk).status == "paid"
    answer = _act(client, "retry", [first])
    assert "only failed payouts can be retried" in answer.content.decode()


def test_it_shows_the_payout_and_methods_without_the_full_details(client, boss, payouts):
    client.force_login(boss)
    assert client.get(f"{URL}{payouts[0].pk}/change/").status_code == 200
    page = client.get("/admin/payouts/payoutmethod/").content.decode()
    assert "alice.private" not in page
    method_page = client.get(f"/admin/payouts/payoutmethod/{payouts[0].method_id}/change/").content.decode()
    assert "alice.private" not in method_page

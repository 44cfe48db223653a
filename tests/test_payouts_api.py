"""The payout endpoints of shared/API.md and the payouts page: masking, bad input in words,
scopes, and the same services behind both doors."""
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from ledger.models import Book
from ledger.selectors import balances_for
from payouts import services
from payouts.models import Payout
from referrals.api.keys import api_key_create
from referrals.models import Account, AuditLog
from tests.helpers import at, buy_credits, signup


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    settings.PAYOUT_AUTO_APPROVE_BELOW = "0"


def _client(scopes):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='ops', scopes=scopes)[1]}")
    return client


@pytest.fixture
def staff_api(db):
    return _client(["staff", "read"])


@pytest.fixture
def alice(vast):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))  # 45.00 cash
    alice.refresh_from_db()
    return alice


def test_it_registers_methods_and_answers_them_masked(staff_api, alice):
    answer = staff_api.post("/api/v1/accounts/alice/payout-methods",
                            {"type": "paypal", "email": "alice.smith@example.com"}, format="json")
    assert answer.status_code == 201, answer.json()
    assert answer.json()["masked"] == "a•••@••••e.com"
    assert "alice.smith" not in answer.content.decode()
    answer = staff_api.post("/api/v1/accounts/alice/payout-methods",
                            {"type": "stripe", "connected_account": "acct_1Nv0FGQ9RKHgCVdK"}, format="json")
    assert (answer.json()["masked"], answer.json()["ready"]) == ("••••CVdK", True)
    assert "1Nv0FGQ9" not in answer.content.decode()
    assert AuditLog.objects.filter(action="api:payout_method.set").count() == 2


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "paypal"}, "email"),
    ({"type": "paypal", "email": "nope"}, "email"),
    ({"type": "wise", "recipient": "12ab"}, "recipient"),
    ({"type": "stripe", "connected_account": "cus_123"}, "connected_account"),
    ({"type": "cheque"}, "type"),
    ({"type": "paypal", "email": "a@b.co", "iban": "x"}, "iban"),
])
def test_it_refuses_bad_methods_naming_the_field(staff_api, alice, body, field):
    answer = staff_api.post("/api/v1/accounts/alice/payout-methods", body, format="json")
    assert answer.status_code == 400
    assert field in answer.json()["error"]["fields"]
    assert not alice.payout_methods.exists()


def test_it_requests_approves_and_rejects_payouts(staff_api, alice):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    answer = staff_api.post("/api/v1/payouts", {"account": "alice", "amount": "20.00", "method": "paypal"},
                            format="json")
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["amount"], body["status"], body["destination"]) == ("20.00", "requested", "a•••@••••.test")
    approved = staff_api.post(f"/api/v1/payouts/{body['id']}/approve", {}, format="json")
    assert approved.json()["status"] == "approved"
    again = staff_api.post(f"/api/v1/payouts/{body['id']}/approve", {}, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "action_refused")
    second = staff_api.post("/api/v1/payouts", {"account": "alice", "amount": "25.00", "method": "paypal"},
                            format="json").json()
    no_reason = staff_api.post(f"/api/v1/payouts/{second['id']}/reject", {}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["error"]["fields"]
    rejected = staff_api.post(f"/api/v1/payouts/{second['id']}/reject", {"reason": "too soon"}, format="json")
    assert (rejected.json()["status"], rejected.json()["failure_reason"]) == ("rejected", "")
    assert staff_api.get(f"/api/v1/payouts/{second['id']}").json()["status"] == "rejected"
    assert staff_api.get("/api/v1/accounts/alice").json()["balances"]["cash_available"] == "25.00"
    assert staff_api.post("/api/v1/payouts/999999/approve", {}, format="json").status_code == 404


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"account": "alice", "amount": "10.00", "method": "wise"}, "method", "no Wise payout method"),
    ({"account": "alice", "amount": "45.01", "method": "paypal"}, "amount", "more than the cash available"),
    ({"account": "alice", "amount": "1.001", "method": "paypal"}, "amount", "at most 2 decimal places"),
    ({"account": "alice", "amount": "-1", "method": "paypal"}, "amount", "greater than zero"),
    ({"account": "alice", "amount": 10, "method": "paypal"}, "amount", "decimal string"),
    ({"account": "nobody", "amount": "10.00", "method": "paypal"}, "account", "unknown account"),
    ({"account": "alice", "amount": "10.00"}, "method", "required"),
])
def test_it_refuses_bad_payout_requests_and_reserves_nothing(staff_api, alice, body, field, words):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    answer = staff_api.post("/api/v1/payouts", body, format="json")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    assert words in error["fields"][field]
    assert Payout.objects.count() == 0
    assert balances_for(alice.pk)[Book.RESERVED] == 0


def test_it_needs_the_staff_scope(alice):
    reader = _client(["read"])
    assert reader.post("/api/v1/payouts", {"account": "alice", "amount": "1.00", "method": "paypal"},
                       format="json").status_code == 403
    assert APIClient().post("/api/v1/payouts", {}, format="json").status_code == 401


# --------------------------------------------------------------------------- the payouts page


@pytest.fixture
def alice_web(client, alice):
    user = get_user_model().objects.create_user("alice@example.com", "alice@example.com", "pw-alice-12345")
    Account.objects.filter(pk=alice.pk).update(user=user)
    client.force_login(user)
    return client


def test_it_sets_up_a_method_and_requests_a_payout_from_the_page(alice_web, alice):
    page = alice_web.get("/payouts/")
    assert page.status_code == 200
    assert "$45.00" in page.content.decode()
    saved = alice_web.post("/payouts/methods/paypal/", {"email": "alice.smith@example.com"})
    assert saved.status_code == 302
    page = alice_web.get("/payouts/").content.decode()
    assert "a•••@••••e.com" in page and "alice.smith@example.com" not in page
    requested = alice_web.post("/payouts/request/", {"amount": "30.00", "method": "paypal"}, follow=True)
    assert "Your payout of $30.00 is requested" in requested.content.decode()
    payout = Payout.objects.get()
    assert (payout.amount, payout.requested_by.username) == (30 * 10**10, "alice@example.com")
    cancelled = alice_web.post(f"/payouts/{payout.pk}/cancel/", follow=True)
    assert "back in your balance" in cancelled.content.decode()


def test_it_shows_payout_errors_in_words_on_the_page(alice_web, alice):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    answer = alice_web.post("/payouts/request/", {"amount": "99.00", "method": "paypal"})
    assert answer.status_code == 400
    text = answer.content.decode()
    assert "Amount is more than the cash available for a paypal payout (45.00)." in text
    answer = alice_web.post("/payouts/request/", {"amount": "10.00", "method": "wise"})
    assert "No Wise payout method is set up" in answer.content.decode()
    assert Payout.objects.count() == 0


def test_it_says_why_no_payout_can_be_requested_instead_of_showing_the_form(client, vast):
    nobody = signup("nobody")
    user = get_user_model().objects.create_user("nobody@example.com", "nobody@example.com", "pw-nobody-12345")
    Account.objects.filter(pk=nobody.pk).update(user=user)
    client.force_login(user)
    page = client.get("/payouts/").content.decode()
    assert 'id="cannot-request"' in page and 'action="/payouts/request/"' not in page
    assert "no payout method set up yet" in page and "no cash to withdraw yet" in page
    assert "How and when you get paid" in page


def test_it_offers_only_the_methods_that_are_set_up(alice_web, alice):
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    page = alice_web.get("/payouts/").content.decode()
    form = page[page.index('action="/payouts/request/"'):]
    form = form[:form.index("</form>")]
    assert '<option value="paypal"' in form and '<option value="wise"' not in form
    assert '<option value="stripe"' not in form


def test_it_offers_stripe_onboarding_only_until_the_account_is_connected(alice_web, alice):
    services.payout_method_set(account=alice, type="stripe", connected_account="acct_alice", ready=False)
    assert "Continue Stripe onboarding" in alice_web.get("/payouts/").content.decode()
    services.payout_method_set(account=alice, type="stripe", connected_account="acct_alice", ready=True)
    page = alice_web.get("/payouts/").content.decode()
    assert "Your Stripe account is connected and can receive payouts." in page
    assert "Continue Stripe onboarding" not in page


def test_it_keeps_other_accounts_payouts_out_of_reach(alice_web, alice, vast):
    carol = signup("carol")
    services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
    payout = services.payout_request(account=alice, amount="5.00", method="paypal")
    Payout.objects.filter(pk=payout.pk).update(account=carol)
    assert alice_web.post(f"/payouts/{payout.pk}/cancel/").status_code == 404


def test_it_asks_for_a_login(client, db):
    assert client.get("/payouts/").status_code == 302

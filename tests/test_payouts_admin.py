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


# --------------------------------------------------------------------------- maker-checker


def _staff(username, *groups):
    from django.contrib.auth.models import Group

    from backoffice.roles import setup_roles

    user = get_user_model().objects.create_user(username, f"{username}@operator.test", "pw-12345-staff",
                                                is_staff=True)
    setup_roles()
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


@pytest.fixture
def fiona(db):
    return _staff("fiona", "finance")


@pytest.fixture
def frank(db):
    return _staff("frank", "finance")


@pytest.fixture
def big(vast, settings):
    """alice's 30.00 payout, above a second-approval limit of 20.00."""
    settings.PAYOUT_SECOND_APPROVAL_ABOVE = "20.00"
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))  # 45.00 cash
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice.private@example.com")
    return services.payout_request(account=alice, amount="30.00", method="paypal")


def _snapshot(payout):
    payout.refresh_from_db()
    return (payout.status, payout.first_approved_by_id, payout.first_approved_at, payout.approved_by_id,
            payout.transitions.count())


def test_it_needs_two_different_staff_members_above_the_limit(big, fiona, frank):
    from referrals.models import AuditLog

    first = services.payout_approve(payout=big, actor=fiona, reason="checked the account")
    assert (first.status, first.first_approved_by, first.awaiting_second_approval) == ("requested", fiona, True)
    trail = first.transitions.last()
    assert (trail.from_status, trail.to_status, trail.actor, trail.data["approval"]) == (
        "requested", "requested", fiona, "1 of 2")
    before = _snapshot(big)
    with pytest.raises(services.PayoutRefused, match="different staff member: fiona already gave the first one"):
        services.payout_approve(payout=big, actor=fiona)
    assert _snapshot(big) == before, "a refused second approval changes nothing"
    second = services.payout_approve(payout=big, actor=frank, reason="agreed")
    assert (second.status, second.approved_by, second.first_approved_by) == ("approved", frank, fiona)
    assert second.transitions.last().data == {"approval": "2 of 2", "first_approved_by": "fiona"}
    assert list(AuditLog.objects.filter(object_type="Payout").order_by("id").values_list("action", "actor__username")) \
        == [("payout.first_approval", "fiona"), ("payout.approve", "frank")]


def test_the_database_refuses_one_person_as_both_approvers(big, fiona):
    from django.db import IntegrityError, transaction

    services.payout_approve(payout=big, actor=fiona)
    with pytest.raises(IntegrityError), transaction.atomic():
        Payout.objects.filter(pk=big.pk).update(approved_by=fiona, status="approved")


def test_one_approval_is_enough_at_or_below_the_limit(vast, settings, fiona):
    settings.PAYOUT_SECOND_APPROVAL_ABOVE = "30.00"
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice@example.com")
    payout = services.payout_request(account=alice, amount="30.00", method="paypal")
    assert services.payout_approve(payout=payout, actor=fiona).status == "approved"


def test_auto_approval_never_skips_the_second_approval(vast, settings):
    settings.PAYOUT_AUTO_APPROVE_BELOW = "40.00"
    settings.PAYOUT_SECOND_APPROVAL_ABOVE = "20.00"
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice@example.com")
    small = services.payout_request(account=alice, amount="10.00", method="paypal")
    large = services.payout_request(account=alice, amount="30.00", method="paypal")
    assert (small.status, large.status) == ("approved", "requested")
    with pytest.raises(services.PayoutRefused, match="needs two approvals"):
        services.payout_approve(payout=large, actor=None, source=services.AUTO)


def test_a_payout_waiting_for_its_second_approval_can_still_be_rejected(big, fiona, frank):
    from ledger.models import Book
    from ledger.selectors import balances_for

    services.payout_approve(payout=big, actor=fiona)
    services.payout_reject(payout=big, actor=frank, reason="account under review")
    big.refresh_from_db()
    assert big.status == "rejected"
    assert balances_for(big.account_id)[Book.RESERVED] == 0


def test_the_desk_records_the_first_approval_and_refuses_the_same_person_twice(client, big, fiona, frank):
    client.force_login(fiona)
    page = _act(client, "approve", [big], reason="first look").content.decode()
    assert "a second staff member must approve" in page
    listing = client.get(f"{URL}?approval=second").content.decode()
    assert "approved once (by fiona), waiting for a second approver" in listing
    before = _snapshot(big)
    page = _act(client, "approve", [big]).content.decode()
    assert "different staff member: fiona already gave the first one" in page
    assert _snapshot(big) == before
    client.force_login(frank)
    page = client.get(f"{URL}{big.pk}/change/").content.decode()
    assert "a different staff member must give the second approval" in page
    _act(client, "approve", [big], reason="second look")
    big.refresh_from_db()
    assert (big.status, big.approved_by, big.first_approved_by) == ("approved", frank, fiona)


def test_the_api_needs_two_different_staff_keys(big):
    from rest_framework.test import APIClient

    from referrals.api.keys import api_key_create

    def client_for(name):
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name=name, scopes=['staff'])[1]}")
        return api

    ops, audit = client_for("ops"), client_for("audit")
    url = f"/api/v1/payouts/{big.pk}/approve"
    first = ops.post(url, {"reason": "ok"}, format="json")
    assert first.status_code == 200 and first.json()["status"] == "requested"
    assert first.json()["awaiting_second_approval"] is True
    again = ops.post(url, {}, format="json")
    assert again.status_code == 409 and "different staff member" in again.json()["error"]["message"]
    second = audit.post(url, {}, format="json")
    assert second.status_code == 200 and second.json()["status"] == "approved"
    assert second.json()["awaiting_second_approval"] is False


# --------------------------------------------------------------------------- the desk and roles


def test_the_desk_shows_the_account_history_balances_and_fraud_flags(client, boss, vast):
    alice = signup("alice", email="alice@example.com", ip="10.0.0.9")
    signup("bob", code=alice.referral_code, when=at(1))
    signup("alias", email="ALICE@example.com", code=alice.referral_code, when=at(1))  # same e-mail: flagged
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice.private@example.com")
    earlier = services.payout_request(account=alice, amount="10.00", method="paypal")
    services.payout_approve(payout=earlier, actor=boss)
    services.payout_mark_paid(payout=earlier, reference="PP-1")
    payout = services.payout_request(account=alice, amount="20.00", method="paypal")
    client.force_login(boss)
    listing = client.get(URL).content.decode()
    assert "Open fraud flags" in listing and "Paid before" in listing
    page = client.get(f"{URL}{payout.pk}/change/").content.decode()
    assert "same_email" in page and "alice → alias" in page
    assert f"#{earlier.pk}" in page and "10.00" in page  # the earlier, paid payout
    assert "Cash available for payouts" in page and "Referral credits" in page  # balances and earnings
    assert 'value="approve"' in page and 'value="retry"' not in page  # decisions that fit a requested payout
    assert "alice.private" not in page


def test_it_decides_from_the_change_page_and_comes_back_to_it(client, boss, payouts):
    client.force_login(boss)
    page = f"{URL}{payouts[0].pk}/change/"
    response = client.post(URL, {"action": "approve", "_selected_action": [payouts[0].pk], "index": 0,
                                 "reason": "", "next": page})
    assert response.status_code == 302 and response["Location"] == page
    assert Payout.objects.get(pk=payouts[0].pk).status == "approved"
    response = client.post(URL, {"action": "approve", "_selected_action": [payouts[1].pk], "index": 0,
                                 "next": "https://evil.example/"})
    assert response["Location"] != "https://evil.example/"


@pytest.mark.parametrize("action", ["approve", "reject", "mark_paid", "retry"])
def test_support_cannot_decide_payouts_even_by_posting_the_action(client, payouts, action):
    sue = _staff("sue", "support")
    client.force_login(sue)
    assert client.get(URL).status_code == 200  # support reads the desk
    assert f'value="{action}"' not in client.get(URL).content.decode()
    before = list(Payout.objects.order_by("id").values_list("status", flat=True))
    response = _act(client, action, payouts[:1], reason="trying anyway")
    assert "No action selected" in response.content.decode()
    assert list(Payout.objects.order_by("id").values_list("status", flat=True)) == before
    assert not PayoutTransitionModel().objects.filter(actor=sue).exists()


def test_finance_can_decide_payouts(client, payouts, fiona):
    client.force_login(fiona)
    _act(client, "approve", payouts[:1])
    _act(client, "reject", payouts[1:2], reason="duplicate request")
    assert list(Payout.objects.order_by("id").values_list("status", flat=True)) == ["approved", "rejected",
                                                                                   "requested"]


def PayoutTransitionModel():  # noqa: N802 - reads like the model it returns
    from payouts.models import PayoutTransition

    return PayoutTransition


# --------------------------------------------------------------------------- figures on the desk (issue 16)


def test_it_keeps_the_bank_reference_of_a_payout_marked_paid_searchable_and_audited(client, boss, payouts):
    from referrals.models import AuditLog

    client.force_login(boss)
    first = payouts[0]
    services.payout_approve(payout=first, actor=boss)
    client.post(URL, {"action": "mark_paid", "_selected_action": [first.pk], "reason": "paid by bank transfer",
                      "reference": "BANK-REF-7781"})
    first.refresh_from_db()
    assert (first.status, first.provider_reference) == ("paid", "BANK-REF-7781")
    listing = client.get(URL, {"q": "BANK-REF-7781"}).content.decode()
    assert f'href="/admin/payouts/payout/{first.pk}/change/' in listing
    log = AuditLog.objects.get(action="payout.mark_paid")
    assert (log.actor, log.object_id, log.reason, log.data["reference"]) == (
        boss, str(first.pk), "paid by bank transfer", "BANK-REF-7781")


def test_paid_before_counts_only_the_accounts_other_paid_payouts(client, boss, payouts):
    client.force_login(boss)
    first, second, _ = payouts
    for payout in (first, second):
        services.payout_approve(payout=payout, actor=boss)
        services.payout_mark_paid(payout=payout, reference=f"PP-{payout.pk}")
    from payouts.admin import PayoutAdmin

    queryset = PayoutAdmin(Payout, None).get_queryset(None)
    paid_before = {p.pk: p.paid_total for p in queryset}
    assert paid_before[first.pk] == paid_before[second.pk] == 10 * 10**10  # the other one, never itself
    assert paid_before[payouts[2].pk] == 20 * 10**10


def test_it_warns_finance_about_open_fraud_flags_on_the_accounts_referrals(client, boss, vast):
    alice = signup("alice", email="alice@example.com")
    signup("bob", code=alice.referral_code, when=at(1))
    signup("alias", email="ALICE@example.com", code=alice.referral_code, when=at(1))  # flagged: same e-mail
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice.private@example.com")
    payout = services.payout_request(account=alice, amount="10.00", method="paypal")
    client.force_login(boss)
    page = client.get(f"{URL}{payout.pk}/change/").content.decode()
    assert 'id="open-flags-warning"' in page and "1 open fraud flag concerns" in page
    answer = client.post(URL, {"action": "approve", "_selected_action": [payout.pk], "reason": ""}, follow=True)
    assert "has 1 open fraud flag(s)" in answer.content.decode()


def test_the_ledger_transactions_export_has_account_and_amount_columns(client, boss, payouts):
    from ledger.models import Transaction

    client.force_login(boss)
    txn = Transaction.objects.filter(kind="payout.reserved").first()
    response = client.post("/admin/ledger/transaction/", {"action": "export_csv", "_selected_action": [txn.pk]})
    header, row = b"".join(response.streaming_content).decode().splitlines()
    columns = dict(zip(header.split(","), row.split(","), strict=True))
    assert (columns["account"], columns["amount"], columns["kind"]) == ("alice", "10.00", "payout.reserved")

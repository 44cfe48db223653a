"""Back office: adjustments, roles enforced in actions, CSV export, the staff overview."""
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from backoffice.roles import setup_roles
from backoffice.services import adjustment_post
from ledger.models import Book, Entry
from ledger.selectors import balances_for
from referrals.engine.jobs import run_jobs
from referrals.engine.services import ActionRefused
from referrals.engine.verification import verify
from referrals.models import Application
from tests.helpers import at, signup, spend, usd


def _staff(username, *groups, superuser=False):
    user = get_user_model().objects.create_user(username, f"{username}@operator.test", "pw-12345-staff",
                                                is_staff=True, is_superuser=superuser)
    setup_roles()
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


def test_it_credits_and_debits_with_a_balanced_audited_transaction_that_replays(runpod):
    fiona = _staff("fiona", "finance")
    alice = signup("alice")
    adjustment_post(account=alice, book=Book.CREDITS, amount=usd("12.50"), reason="goodwill for an outage",
                    actor=fiona)
    adjustment_post(account=alice, book=Book.CREDITS, amount=-usd("2.50"), reason="duplicate goodwill",
                    actor=fiona)
    assert balances_for(alice.pk)[Book.CREDITS] == usd("10.00")
    legs = Entry.objects.filter(transaction__kind="adjustment")
    assert sum(legs.values_list("amount", flat=True)) == 0
    assert set(legs.values_list("transaction__actor__username", flat=True)) == {"fiona"}
    assert verify() == []


@pytest.mark.parametrize(("book", "amount", "reason", "message"), [
    (Book.CREDITS, 5, "", "a reason is required"),
    (Book.PENDING, 5, "why", "book: must be one of"),
    (Book.CREDITS, 0, "why", "must not be zero"),
    (Book.CREDITS, -5, "why", "is more than the credits balance"),
])
def test_it_refuses_a_bad_adjustment_and_changes_nothing(runpod, book, amount, reason, message):
    fiona = _staff("fiona", "finance")
    alice = signup("alice")
    with pytest.raises(ActionRefused, match=message):
        adjustment_post(account=alice, book=book, amount=amount, reason=reason, actor=fiona)
    assert not Entry.objects.filter(transaction__kind="adjustment").exists()


def test_support_cannot_approve_applications_even_by_posting_the_action(runpod, client):
    alice = signup("alice")
    for i in range(25):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "20.00", when=at(2))
    run_jobs(at=at(3), names=["revenue_share_gates"])
    application = Application.objects.get()
    client.force_login(_staff("sue", "support"))
    page = client.get("/admin/referrals/application/").content.decode()
    assert 'value="approve"' not in page
    client.post("/admin/referrals/application/", {"action": "approve", "_selected_action": [application.pk]})
    application.refresh_from_db()
    assert application.status == "open"
    client.force_login(_staff("fiona", "finance"))
    client.post("/admin/referrals/application/", {"action": "approve", "_selected_action": [application.pk]})
    application.refresh_from_db()
    assert application.status == "approved"


def test_finance_adjusts_through_the_admin_and_support_cannot(runpod, client):
    alice = signup("alice")
    client.force_login(_staff("sue", "support"))
    assert client.get("/admin/backoffice/adjustment/add/").status_code == 403
    response = client.post("/admin/backoffice/adjustment/add/", {
        "account": alice.pk, "book": "credits", "amount_text": "7.25", "reason": "posting the form directly"})
    assert response.status_code == 403
    assert balances_for(alice.pk).get(Book.CREDITS, 0) == 0 and not Entry.objects.filter(
        transaction__kind="adjustment").exists()
    client.force_login(_staff("fiona", "finance"))
    response = client.post("/admin/backoffice/adjustment/add/", {
        "account": alice.pk, "book": "credits", "amount_text": "7.25", "reason": "migration from old system"})
    assert response.status_code == 302
    assert balances_for(alice.pk)[Book.CREDITS] == usd("7.25")


def test_it_exports_the_selected_rows_as_csv(runpod, client):
    signup("alice")
    signup("bob")
    client.force_login(_staff("boss", superuser=True))
    from referrals.models import Account

    response = client.post("/admin/referrals/account/", {
        "action": "export_csv", "_selected_action": list(Account.objects.values_list("pk", flat=True))})
    body = b"".join(response.streaming_content).decode()
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert body.splitlines()[0] == "external_id,email,referral_code,track,code_enabled,signed_up_at"
    assert {line.split(",")[0] for line in body.splitlines()[1:]} == {"alice", "bob"}


def test_the_admin_index_shows_what_waits_for_staff(runpod, client):
    alice = signup("alice")
    for i in range(25):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "20.00", when=at(2))
    run_jobs(at=at(3), names=["revenue_share_gates"])
    client.force_login(_staff("boss", superuser=True))
    page = client.get("/admin/").content.decode()
    assert "Open applications" in page and "Earnings per programme, last 30 days" in page


def test_big_changelists_run_a_bounded_number_of_queries(runpod, client, django_assert_max_num_queries):
    from ledger.models import Transaction

    alice = signup("alice")
    txn = Transaction.objects.create(kind="bulk-fixture")
    Entry.objects.bulk_create([Entry(transaction=txn, account=alice, book=Book.CREDITS, amount=1)
                               for _ in range(3000)] + [Entry(transaction=txn, book=Book.ADJUSTMENTS, amount=-3000)])
    client.force_login(_staff("boss", superuser=True))
    for path in ("/admin/ledger/entry/", "/admin/ledger/transaction/", "/admin/referrals/event/",
                 "/admin/referrals/account/"):
        with django_assert_max_num_queries(12):
            assert client.get(path).status_code == 200


def test_the_admin_index_counts_payouts_due_and_those_waiting_for_a_second_approver(vast, client, settings):
    from payouts import services
    from tests.helpers import buy_credits

    settings.PAYOUT_PROCESS_ON_APPROVE = False
    settings.PAYOUT_SECOND_APPROVAL_ABOVE = "20.00"
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice@example.com")
    services.payout_request(account=alice, amount="10.00", method="paypal")
    large = services.payout_request(account=alice, amount="30.00", method="paypal")
    fiona = _staff("fiona", "finance")
    services.payout_approve(payout=large, actor=fiona)
    client.force_login(fiona)
    overview = client.get("/admin/").context["overview"]
    assert overview["payouts_due"] == {"count": 2, "total": "$40.00", "awaiting_second_approval": 1}
    page = client.get("/admin/").content.decode()
    assert "Payouts waiting for a second approver" in page


def test_the_fraud_and_payouts_desks_show_an_account_flag_for_a_shared_payout_destination(vast, client, settings):
    from payouts import services
    from referrals.models import FraudFlag
    from tests.helpers import buy_credits

    settings.PAYOUT_PROCESS_ON_APPROVE = False
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    carol = signup("carol")
    services.payout_method_set(account=alice, type="paypal", email="shared@example.com")
    services.payout_method_set(account=carol, type="paypal", email="shared@example.com")
    payout = services.payout_request(account=alice, amount="10.00", method="paypal")
    flag = FraudFlag.objects.get(account=alice)
    client.force_login(_staff("sue", "support"))

    desk = client.get("/admin/referrals/fraudflag/").content.decode()
    assert "payout_destination" in desk and "alice" in desk and "its payouts" in desk
    filtered = client.get("/admin/referrals/fraudflag/", {"signal": "payout_destination"})
    assert {flag.account.external_id for flag in filtered.context["cl"].result_list} == {"alice", "carol"}
    flag_page = client.get(f"/admin/referrals/fraudflag/{flag.pk}/change/").content.decode()
    assert "Fraud flags on this account and its referrals" in flag_page and "account alice" in flag_page
    client.force_login(_staff("fiona", "finance"))
    payout_page = client.get(f"/admin/payouts/payout/{payout.pk}/change/").content.decode()
    assert f"#{flag.pk}" in payout_page and "account alice" in payout_page


def test_support_staff_see_an_admin_index_without_infrastructure_sections(runpod, client):
    sue = _staff("sue", "support")
    client.force_login(sue)
    index = client.get("/admin/").content.decode()
    assert "Waiting for staff" in index and "Applications" in index
    assert "Periodic tasks" not in index and "Crontabs" not in index
    client.force_login(_staff("boss", superuser=True))
    assert "Periodic tasks" in client.get("/admin/").content.decode()

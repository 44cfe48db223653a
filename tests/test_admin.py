"""The admin's decisions go through the audited services."""
import pytest
from django.contrib.auth import get_user_model

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.jobs import run_jobs
from referrals.models import Application, AuditLog, FraudFlag, Program
from tests.helpers import at, buy_credits, signup, spend


@pytest.fixture
def admin_client(client, db):
    boss = get_user_model().objects.create_superuser("boss", "boss@operator.test", "pw-boss-12345")
    client.force_login(boss)
    return client


def _open_application():
    alice = signup("alice")
    for i in range(25):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "20.00", when=at(2))
    run_jobs(at=at(3), names=["revenue_share_gates"])
    return alice, Application.objects.get()


def test_it_approves_an_application_from_the_changelist(runpod, admin_client):
    alice, application = _open_application()
    response = admin_client.post("/admin/referrals/application/", {
        "action": "approve", "_selected_action": [application.pk], "reason": "looks good"}, follow=True)
    assert response.status_code == 200
    application.refresh_from_db()
    assert application.status == "approved" and application.decided_by.username == "boss"
    assert balances_for(alice.pk)[Book.CREDITS] == 10 * 10**10
    assert AuditLog.objects.filter(action="application.approve", reason="looks good").exists()


def test_it_refuses_to_reject_without_a_reason(runpod, admin_client):
    alice, application = _open_application()
    response = admin_client.post("/admin/referrals/application/", {
        "action": "reject", "_selected_action": [application.pk], "reason": ""}, follow=True)
    assert "a reason is required" in response.content.decode()
    application.refresh_from_db()
    assert application.status == "open"


def test_it_confirms_fraud_with_a_reason(vast, admin_client):
    alice = signup("alice", email="a@example.com")
    signup("bob", email="A@example.com", code=alice.referral_code, when=at(1))
    buy_credits("bob", "100.00", when=at(2))
    flag = FraudFlag.objects.get()
    admin_client.post("/admin/referrals/fraudflag/", {
        "action": "confirm", "_selected_action": [flag.pk], "reason": "same person"})
    flag.refresh_from_db()
    assert flag.status == "confirmed"
    assert balances_for(alice.pk)[Book.PENDING] == 0


def test_it_validates_programme_rates_in_the_admin(runpod, admin_client):
    program = Program.objects.get(key="runpod-revenue-share")
    response = admin_client.get(f"/admin/referrals/program/{program.pk}/change/")
    assert response.status_code == 200
    data = {f: getattr(program, f) for f in (
        "key", "preset", "name", "kind", "description", "product", "pays_in", "hold_days", "gate_min_referrals",
        "gate_min_spend", "template_min_runtime_hours", "milestone_threshold", "referrer_bonus", "referred_bonus",
        "signup_credit", "credit_valid_days", "cashout_percent", "min_payout")}
    data |= {"enabled": "on", "requires_approval": "on", "event_types": '["usage.charged"]', "payout_methods": "[]",
             "rate": "101", "partner_rate": "", "partner_pays_in": "",
             "changes-TOTAL_FORMS": "0", "changes-INITIAL_FORMS": "0"}
    response = admin_client.post(f"/admin/referrals/program/{program.pk}/change/", data)
    assert response.status_code == 200 and "less than or equal to 100" in response.content.decode()
    data["rate"] = "3.00"
    response = admin_client.post(f"/admin/referrals/program/{program.pk}/change/", data)
    assert response.status_code == 302
    program.refresh_from_db()
    assert str(program.rate) == "3.00"
    change = program.changes.get()
    assert change.changes == {"rate": ["2.00", "3.00"]} and change.actor.username == "boss"


def test_every_read_only_changelist_renders(runpod, admin_client):
    _open_application()
    for path in ("ledger/transaction", "ledger/entry", "ledger/balance", "referrals/event", "referrals/accrual",
                 "referrals/referral", "referrals/jobrun", "referrals/auditlog", "referrals/account",
                 "referrals/creditgrant", "referrals/click", "referrals/template", "referrals/fraudflag"):
        assert admin_client.get(f"/admin/{path}/").status_code == 200, path


def test_it_creates_an_api_key_shown_once_and_stores_only_its_hash(admin_client):
    from referrals.api.keys import hash_key
    from referrals.models import ApiKey

    response = admin_client.post("/admin/referrals/apikey/add/", {
        "name": "billing", "scopes": ["events:write", "read"]}, follow=True)
    page = response.content.decode()
    assert "will not be shown again" in page
    plaintext = page.split("will not be shown again: ")[1].split("<")[0].strip()
    key = ApiKey.objects.get()
    assert key.hashed_key == hash_key(plaintext) and plaintext not in (key.hashed_key, key.prefix)
    assert key.scopes == ["events:write", "read"]


def test_it_refuses_a_partner_key_with_staff_scope(admin_client, db):
    from referrals.models import ApiKey

    alice = signup("alice")
    response = admin_client.post("/admin/referrals/apikey/add/", {
        "name": "partner", "scopes": ["staff"], "account": alice.pk})
    assert response.status_code == 200 and "may only have the" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_applications_desk_shows_the_figures_and_reopens_a_rejected_one(runpod, admin_client):
    alice, application = _open_application()
    listing = admin_client.get("/admin/referrals/application/?status__exact=open").content.decode()
    assert "Applications desk" in listing
    assert "25 / 25" in listing and "$500.00 / $500.00" in listing and "$10.00" in listing  # held: 2% of $500
    page = admin_client.get(f"/admin/referrals/application/{application.pk}/change/").content.decode()
    assert "Eligible referred accounts" in page and 'value="approve"' in page and 'value="reopen"' not in page
    admin_client.post("/admin/referrals/application/", {
        "action": "reject", "_selected_action": [application.pk], "reason": "spend looks circular"})
    page = admin_client.get(f"/admin/referrals/application/{application.pk}/change/").content.decode()
    assert 'value="reopen"' in page and 'value="approve"' not in page
    admin_client.post("/admin/referrals/application/", {
        "action": "reopen", "_selected_action": [application.pk], "reason": "billing confirmed"})
    application.refresh_from_db()
    assert application.status == "open"
    assert list(AuditLog.objects.filter(object_type="Application").order_by("id").values_list("action", "reason")) \
        == [("application.reject", "spend looks circular"), ("application.reopen", "billing confirmed")]


def test_the_fraud_desk_shows_the_signals_and_clearing_releases_the_earnings(vast, admin_client):
    alice = signup("alice", email="a@example.com")
    signup("bob", email="A@example.com", code=alice.referral_code, when=at(1))
    signup("carol", code=alice.referral_code, when=at(1))
    buy_credits("bob", "100.00", when=at(2))
    flag = FraudFlag.objects.get()
    listing = admin_client.get("/admin/referrals/fraudflag/?signal=same_email").content.decode()
    assert "Fraud desk" in listing and "same_email (a@example.com)" in listing and "3.00" in listing
    other_signal = admin_client.get("/admin/referrals/fraudflag/?signal=same_ip").content.decode()
    assert "same_email (a@example.com)" not in other_signal
    held = balances_for(alice.pk)[Book.PENDING]
    assert held == 3 * 10**10
    admin_client.post("/admin/referrals/fraudflag/", {
        "action": "clear", "_selected_action": [flag.pk], "reason": "bob is alice's colleague, not alice"})
    flag.refresh_from_db()
    assert flag.status == "cleared" and flag.reason == "bob is alice's colleague, not alice"
    assert balances_for(alice.pk)[Book.PENDING] == 0
    assert balances_for(alice.pk)[Book.CREDITS] + balances_for(alice.pk)[Book.CASH] == held


def test_it_exports_the_payouts_desk_with_its_computed_columns(vast, admin_client, settings):
    from payouts import services

    settings.PAYOUT_PROCESS_ON_APPROVE = False
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="paypal", email="alice@example.com")
    payout = services.payout_request(account=alice, amount="12.50", method="paypal")
    response = admin_client.post("/admin/payouts/payout/", {"action": "export_csv", "_selected_action": [payout.pk]})
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].startswith("id,account,amount_display,method_type,state,account_age,open_flags,paid_before")
    assert lines[1].startswith(f"{payout.pk},alice,12.50,paypal,Requested,")


def test_the_desks_write_held_earnings_and_spend_with_the_currency_sign(vast, admin_client):
    alice = signup("alice", email="a@example.com")
    signup("bob", email="A@example.com", code=alice.referral_code, when=at(1))
    signup("dora", email="dora@example.com", code=alice.referral_code, when=at(1))  # flagged by nothing
    signup("alice2", email="a+2@example.com", code=alice.referral_code, when=at(1))  # flagged, spends nothing
    buy_credits("bob", "100000.00", when=at(2))
    listing = admin_client.get("/admin/referrals/fraudflag/").content.decode()
    assert '<td class="field-held_now">$3,000.00</td>' in listing  # 3% of bob's purchase, held
    assert '<td class="field-held_now">$0.00</td>' in listing
    referrals = admin_client.get("/admin/referrals/referral/").content.decode()
    assert '<td class="field-spend_display">$0.00</td>' in referrals

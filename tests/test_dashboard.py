"""The dashboard pages: overview, referrals, earnings (and CSV), wallet, templates, Partner upgrade.

Alice owns the data, Bob is another referrer with his own account, Charlie can log in but has no
account. Every page shows the owner's data only, and object pages answer 404 to anyone else.
"""
import csv
import io
import re
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from ledger.models import Entry
from referrals.engine.services import account_change_track, application_reject
from referrals.models import Account, Application, AuditLog, Referral, Template, TrackChange
from tests.helpers import buy_credits, buy_plan, event, push, signup, spend, usd

User = get_user_model()
PASSWORD = "Sturdy-pass-9911"


def _login_for(account: Account, email: str) -> User:
    user = User.objects.create_user(email, email, PASSWORD)
    Account.objects.filter(pk=account.pk).update(user=user)
    return user


def _text(response) -> str:
    """The page with runs of whitespace collapsed, as a reader sees it."""
    return re.sub(r"\s+", " ", response.content.decode())


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def alice(runpod):
    """Alice referred three accounts under the runpod preset (one of them her own alias) and
    publishes a template."""
    now = timezone.now()
    account = signup("alice", email="alice@example.com", when=now - timedelta(days=3), ip="10.0.0.1")
    signup("dora", code=account.referral_code, when=now - timedelta(days=2))
    signup("erin", code=account.referral_code, when=now - timedelta(days=2))
    signup("alias", code=account.referral_code, when=now - timedelta(days=2), ip="10.0.0.1")
    spend("dora", "12.34", product="serverless", when=now - timedelta(days=1))
    push(event("template.published", "alice", template="sd-webui", name="Stable Diffusion WebUI",
               when=now - timedelta(days=1)))
    push(event("usage.charged", "erin", amount="54.00", product="pods", template="sd-webui", runtime_seconds=7200,
               when=now - timedelta(hours=20)))
    _login_for(account, "alice@example.com")
    account.refresh_from_db()
    return account


@pytest.fixture
def alice_client(alice):
    return _client_for(alice.user)


@pytest.fixture
def bob(db):
    account = signup("bob", email="bob@example.com")
    _login_for(account, "bob@example.com")
    account.refresh_from_db()
    return account


@pytest.fixture
def bob_client(bob):
    return _client_for(bob.user)


@pytest.fixture
def charlie_client(db):
    return _client_for(User.objects.create_user("charlie@example.com", "charlie@example.com", PASSWORD))


PAGES = ["/dashboard/", "/dashboard/referrals/", "/dashboard/earnings/", "/dashboard/wallet/",
         "/dashboard/templates/", "/dashboard/partner/"]


# --------------------------------------------------------------------------- access


@pytest.mark.parametrize("path", [*PAGES, "/dashboard/earnings.csv", "/dashboard/notifications/"])
def test_it_sends_visitors_to_the_login_page(client, db, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("path", PAGES)
def test_it_shows_another_user_none_of_alices_data(bob_client, alice, path):
    page = bob_client.get(path).content.decode()
    assert alice.referral_code not in page
    for secret in ("dora", "erin", "alias", "Stable Diffusion WebUI", "12.34"):
        assert secret not in page


def test_it_answers_404_for_someone_elses_referral(alice_client, bob_client, charlie_client, alice):
    referral = Referral.objects.get(referred__external_id="dora")
    assert alice_client.get(f"/dashboard/referrals/{referral.pk}/").status_code == 200
    assert bob_client.get(f"/dashboard/referrals/{referral.pk}/").status_code == 404
    assert charlie_client.get(f"/dashboard/referrals/{referral.pk}/").status_code == 404
    assert alice_client.get("/dashboard/referrals/999999/").status_code == 404


def test_it_answers_404_for_the_csv_of_a_login_without_account(charlie_client):
    assert charlie_client.get("/dashboard/earnings.csv").status_code == 404


@pytest.mark.parametrize("path", PAGES)
def test_it_tells_a_login_without_account_that_it_is_not_linked(charlie_client, path):
    response = charlie_client.get(path)
    assert response.status_code == 200
    assert "not linked to an account" in response.content.decode()


# --------------------------------------------------------------------------- overview


def test_it_shows_the_link_qr_code_share_buttons_chart_and_funnel(alice_client, alice):
    page = alice_client.get("/dashboard/").content.decode()
    assert f'value="{alice.referral_link}"' in page
    import segno
    from django.utils.html import escape

    qr = segno.make(alice.referral_link, error="m").svg_data_uri(scale=4, border=2, dark="#1d2330", light="#ffffff")
    assert f'class="qr" src="{escape(qr)}"' in page and "QR code of your referral link" in page
    assert "https://twitter.com/intent/tweet?text=I+use+this+platform" in page
    assert "https://www.linkedin.com/sharing/share-offsite/?url=" in page
    assert 'class="chart"' in page and "Earnings over the last 12 months" in page
    assert "From click to conversion" in page and "Sign-ups <strong>3</strong>" in page
    assert "Conversions <strong>2</strong>" in page


def test_it_shows_progress_towards_every_gate(alice_client, alice):
    page = alice_client.get("/dashboard/").content.decode()
    # The alias is ineligible (same sign-up IP as Alice), so two referrals count towards the gate.
    assert "Referred accounts: 2/25 referrals" in page
    assert "Spend of referred accounts: $66.34 of $500.00" in page
    assert "Runtime: 2.0 h/24 h" in page
    assert "an application opens automatically" in page


def test_it_says_what_happens_next_with_an_application(alice_client, alice, staff):
    application = Application.objects.create(program=alice.accruals.first().program, account=alice,
                                             opened_at=timezone.now())
    assert "staff are reviewing it" in alice_client.get("/dashboard/").content.decode()
    application_reject(application=application, actor=staff, reason="Too few active referrals")
    page = alice_client.get("/dashboard/").content.decode()
    assert "Too few active referrals" in page and "contact staff to reopen" in page


# --------------------------------------------------------------------------- referrals


def test_it_lists_referrals_with_status_reason_spend_and_earnings(alice_client, alice):
    page = alice_client.get("/dashboard/referrals/").content.decode()
    # Listed by masked e-mail (dora@, erin@, alias@example.com), not by the operator's opaque ids.
    assert ">d•••a@e•••.com<" in page and ">e•••n@e•••.com<" in page and ">a•••s@e•••.com<" in page
    assert "dora@example.com" not in page
    assert "Ineligible" in page and "same sign-up IP" in page
    assert "$12.34" in page and "$0.24" in page  # dora's spend, and 2 % of it (exactly 0.2468)
    assert "<summary>$0.24</summary><span>exactly $0.2468</span>" in page


def test_it_filters_and_searches_referrals(alice_client, alice):
    page = alice_client.get("/dashboard/referrals/?status=ineligible").content.decode()
    assert ">a•••s@e•••.com<" in page and ">d•••a@e•••.com<" not in page
    page = alice_client.get("/dashboard/referrals/?q=ERI").content.decode()
    assert ">e•••n@e•••.com<" in page and ">d•••a@e•••.com<" not in page and ">a•••s@e•••.com<" not in page
    assert "No referral matches" in alice_client.get("/dashboard/referrals/?q=zzz").content.decode()


def test_it_names_the_field_of_a_bad_filter_and_shows_everything(alice_client, alice):
    response = alice_client.get("/dashboard/referrals/?status=bogus")
    page = response.content.decode()
    assert response.status_code == 200
    assert "status" in response.context["form"].errors and "Select a valid choice" in page
    assert ">d•••a@e•••.com<" in page and ">e•••n@e•••.com<" in page


def test_it_paginates_referrals(alice_client, alice):
    now = timezone.now()
    accounts = Account.objects.bulk_create([Account(external_id=f"bulk-{i}", signed_up_at=now) for i in range(30)])
    Referral.objects.bulk_create([Referral(referrer=alice, referred=a, created_at=now - timedelta(minutes=i))
                                  for i, a in enumerate(accounts)])
    first = alice_client.get("/dashboard/referrals/").content.decode()
    assert "Page 1 of 2" in first and "bulk-0<" in first and "bulk-29<" not in first
    second = alice_client.get("/dashboard/referrals/?page=2").content.decode()
    assert "bulk-29<" in second and "bulk-0<" not in second
    assert "Page 2 of 2" in alice_client.get("/dashboard/referrals/?page=99").content.decode()


# --------------------------------------------------------------------------- earnings


def test_it_describes_every_earning_in_plain_words_without_ledger_terms(alice_client, alice, staff):
    page = alice_client.get("/dashboard/earnings/").content.decode()
    assert ("2% of $12.34 serverless spend by a referred account, held until the programme is approved"
            in page)
    assert "1% of $54.00 pods spend on your template Stable Diffusion WebUI, held until the template has 24 h" in page
    assert Entry.objects.filter(account=alice).count() == page.count('data-label="What happened"') == 3
    assert 'data-label="Book"' not in page and "rule " not in page and " · event " not in page
    # The exact figure opens on a tap (a details element), not a hover title a phone cannot show.
    assert '<details class="exact"><summary>+$0.24</summary><span>exactly $0.2468</span></details>' in page
    assert 'title="exactly' not in page
    # Released since: the held row says so; no second, paired "released" row appears.
    from referrals.engine.services import application_approve

    program = alice.accruals.filter(program__kind="revenue_share").first().program
    application_approve(application=Application.objects.create(program=program, account=alice,
                                                              opened_at=timezone.now()), actor=staff)
    assert Entry.objects.filter(account=alice, transaction__kind="release").exists()
    page = alice_client.get("/dashboard/earnings/").content.decode()
    assert page.count('data-label="What happened"') == 3 and "(released since)" in page


def test_it_describes_a_refund_claw_back(alice_client, alice):
    dora_spend = Entry.objects.filter(account=alice).first().transaction.event.external_id
    push(event("payment.refunded", "dora", amount="12.34", refunds=dora_spend))
    page = alice_client.get("/dashboard/earnings/").content.decode()
    assert "Clawed back from your held earnings: the referred account&#x27;s payment was refunded" in page


def test_it_downloads_the_earnings_as_csv(alice_client, bob_client, alice):
    response = alice_client.get("/dashboard/earnings.csv")
    assert response["Content-Type"].startswith("text/csv")
    assert f"earnings-{alice.referral_code}.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    *lines, total = rows
    assert len(lines) == Entry.objects.filter(account=alice).count() == 3
    spend_row = next(r for r in lines if "serverless" in r["description"])
    assert spend_row["amount_exact"] == "0.2468" and spend_row["programme"] == "Lifetime revenue share"
    assert set(spend_row) == {"date", "programme", "description", "amount_usd", "amount_exact"}
    # The rows add up to the total row, to the cent, and the total is the overview's total earned.
    assert total["description"] == "Total earned" and total["amount_exact"] == "1.8668"
    assert sum(Decimal(r["amount_usd"]) for r in lines) == Decimal(total["amount_usd"]) == Decimal("1.86")
    bob_rows = b"".join(bob_client.get("/dashboard/earnings.csv").streaming_content).decode().splitlines()
    assert bob_rows[1:] == [",,Total earned,0.00,0.00"]


def test_it_carries_the_sub_cents_so_csv_rows_add_up_to_the_total(alice_client, alice):
    # Forty spends of $12.34 each earn $0.2468: rounded down one by one the rows would lose 0.68 cent each.
    for i in range(40):
        spend("dora", "12.34", product="serverless", when=timezone.now() - timedelta(minutes=i + 1), id=f"s{i}")
    *lines, total = csv.DictReader(io.StringIO(b"".join(alice_client.get("/dashboard/earnings.csv")
                                                        .streaming_content).decode()))
    exact = sum(Decimal(r["amount_exact"]) for r in lines)
    assert exact == Decimal(total["amount_exact"])
    assert sum(Decimal(r["amount_usd"]) for r in lines) == Decimal(total["amount_usd"]) == exact.quantize(
        Decimal("0.01"), rounding=ROUND_DOWN)
    rounded_one_by_one = sum(Decimal(r["amount_exact"]).quantize(Decimal("0.01"), rounding=ROUND_DOWN) for r in lines)
    assert rounded_one_by_one < Decimal(total["amount_usd"]) - Decimal("0.20")
    page = _text(alice_client.get("/dashboard/earnings/"))
    assert f'Total earned</dt><dd data-figure="earned"><details class="exact"><summary>${total["amount_usd"]}' in page


# --------------------------------------------------------------------------- wallet


def test_it_explains_pending_earnings_in_the_wallet(alice_client, alice):
    page = alice_client.get("/dashboard/wallet/").content.decode()
    assert "waiting for the programme&#x27;s gate and staff approval" in page
    assert "waiting for your template to reach its runtime threshold" in page


def test_it_explains_the_75_percent_and_own_credits_rules(vast, db):
    carol = signup("carol", email="carol@example.com")
    signup("fred", code=carol.referral_code)
    buy_credits("fred", "1000.00")
    buy_credits("carol", "20.00")
    client = _client_for(_login_for(carol, "carol@example.com"))
    page = _text(client.get("/dashboard/wallet/"))
    assert "75% of the referral credits you earn can be turned into cash" in page
    assert "the other 25% stay usable as credits only" in page
    assert "holds $20.00 of credits you bought yourself, so $22.50 of your referral earnings" in page


def test_it_shows_the_minimum_payout_and_expiring_credits(apimarket, db):
    gina = signup("gina", email="gina@example.com")
    signup("hank", email="hank@example.com", code=gina.referral_code, when=timezone.now() - timedelta(days=28))
    account_change_track(account=gina, track="partner")
    buy_plan("hank", "100.00", when=timezone.now())
    page = _text(_client_for(_login_for(gina, "gina@example.com")).get("/dashboard/wallet/"))
    assert "The minimum payout is <strong>$25.00</strong>" in page and "You need $15.00 more" in page
    hank = Account.objects.get(external_id="hank")
    page = _text(_client_for(_login_for(hank, "hank@example.com")).get("/dashboard/wallet/"))
    assert "Sign-up credit" in page and "$2.50" in page and "in less than 3 days" in page


# --------------------------------------------------------------------------- templates


def test_it_shows_template_links_runtime_and_earnings(alice_client, alice):
    page = alice_client.get("/dashboard/templates/").content.decode()
    template = Template.objects.get(external_id="sd-webui")
    assert template.referral_link in page
    assert "Runtime: 2.0 h/24 h" in page and 'max="86400" value="7200"' in page
    assert "Earned <strong" in page and "$0.54" in page and "is held until the template has 24 h" in page


# --------------------------------------------------------------------------- partner track


def _connect_stripe(account: Account) -> None:
    from django.apps import apps

    apps.get_model("payouts", "PayoutMethod").objects.create(
        account=account, type="stripe", details={"connected_account": "acct_123456"}, masked="••••3456", ready=True)


def test_it_upgrades_to_partner_after_confirmation(apimarket, db):
    gina = signup("gina", email="gina@example.com")
    _connect_stripe(gina)
    client = _client_for(_login_for(gina, "gina@example.com"))
    page = client.get("/dashboard/partner/").content.decode()
    assert "5% as platform credits" in page and "10% as cash, paid out from $25.00" in page
    response = client.post("/dashboard/partner/", {})
    assert response.status_code == 200 and "Tick the box to confirm the upgrade." in response.content.decode()
    gina.refresh_from_db()
    assert gina.track == "basic" and not TrackChange.objects.exists()
    response = client.post("/dashboard/partner/", {"confirm": "on"}, follow=True)
    assert "You are now on the Partner track" in response.content.decode()
    gina.refresh_from_db()
    assert gina.track == "partner"
    assert TrackChange.objects.get(account=gina).event.source == "portal"
    assert AuditLog.objects.filter(action="account.track", object_id=str(gina.pk), actor=gina.user).exists()


def test_it_requires_a_connected_payout_account(apimarket, db):
    gina = signup("gina", email="gina@example.com")
    client = _client_for(_login_for(gina, "gina@example.com"))
    response = client.post("/dashboard/partner/", {"confirm": "on"})
    assert "Connect a payout account first" in response.content.decode()
    gina.refresh_from_db()
    assert gina.track == "basic"
    _connect_stripe(gina)
    client.post("/dashboard/partner/", {"confirm": "on"})
    gina.refresh_from_db()
    assert gina.track == "partner"


def test_it_refuses_a_post_without_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user, backend="django.contrib.auth.backends.ModelBackend")
    assert client.post("/dashboard/partner/", {"confirm": "on"}).status_code == 403
    assert client.post("/dashboard/notifications/", {}).status_code == 403
    alice.refresh_from_db()
    assert alice.track == "basic"


# --------------------------------------------------------------------------- sign-up and password reset


def test_it_lets_an_account_created_by_an_event_set_its_password(client, db, mailoutbox):
    account = signup("ivan", email="Ivan@Example.com")
    assert account.user is None
    response = client.post("/password-reset/", {"email": "ivan@example.com"})
    assert response["Location"] == "/password-reset/done/"
    assert len(mailoutbox) == 1
    account.refresh_from_db()
    assert account.user is not None and not account.user.has_usable_password()
    link = next(line for line in mailoutbox[0].body.splitlines() if "/password-reset/" in line)
    path = link[link.index("/password-reset/"):].strip()
    response = client.get(path, follow=True)
    new_password = "Brand-new-pass-4422"
    response = client.post(response.redirect_chain[-1][0], {"new_password1": new_password,
                                                            "new_password2": new_password})
    assert response["Location"] == "/password-reset/complete/"
    account.user.refresh_from_db()
    assert account.user.check_password(new_password)


def test_it_sends_no_reset_mail_for_an_unknown_address(client, db, mailoutbox):
    client.post("/password-reset/", {"email": "nobody@example.com"})
    assert mailoutbox == [] and not User.objects.exists()


def test_it_shows_milestone_progress_per_referral(alice_client, alice):
    spend("dora", "250.00", product="serverless")
    page = _text(alice_client.get("/dashboard/referrals/"))
    # dora's serverless spend: 12.34 + 250.00 of the $1,000.00 serverless milestone; erin spent on pods only.
    assert "Serverless milestone: $262.34 of $1,000.00 serverless spend" in page
    # erin has $54.00 of spend on pods, none the milestone counts: said in words, no empty bar.
    assert "Serverless milestone: no serverless spend yet ($1,000.00 of it earns the bonus)" in page
    assert "$0.00 of $1,000.00" not in page
    dora = Referral.objects.get(referred__external_id="dora")
    detail = _text(alice_client.get(f"/dashboard/referrals/{dora.pk}/"))
    assert "Serverless milestone: $262.34 of $1,000.00 serverless spend" in detail
    spend("dora", "800.00", product="serverless")
    assert "Serverless milestone: reached" in _text(alice_client.get(f"/dashboard/referrals/{dora.pk}/"))


def test_milestone_progress_counts_the_milestones_product_net_of_refunds(alice_client, alice):
    charge = spend("erin", "300.00", product="serverless")
    push(event("payment.refunded", "erin", amount="100.00", refunds=charge))
    erin = Referral.objects.get(referred__external_id="erin")
    detail = _text(alice_client.get(f"/dashboard/referrals/{erin.pk}/"))
    # $300.00 - $100.00 refunded; erin's $54.00 on pods does not count towards it.
    assert "Serverless milestone: $200.00 of $1,000.00 serverless spend" in detail


def test_an_ineligible_referral_shows_no_milestone_progress(alice_client, alice):
    spend("alias", "300.00", product="serverless")  # alias signed up from alice's own IP: ineligible
    alias = Referral.objects.get(referred__external_id="alias")
    assert alias.status == Referral.Status.INELIGIBLE
    detail = _text(alice_client.get(f"/dashboard/referrals/{alias.pk}/"))
    assert "It earns nothing unless staff clear it" in detail
    assert "Serverless milestone" not in detail


def test_an_exact_amount_leaves_no_space_before_the_punctuation_that_follows_it(db):
    from django.template.loader import render_to_string

    for units in (usd("0.64"), usd("0.64") + 1234):  # to the cent, and with sub-cent digits (a <details>)
        shown = render_to_string("portal/_exact.html", {"units": units})
        assert shown == shown.rstrip() and shown.startswith(("$0.64", "<details"))

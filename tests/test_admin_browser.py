"""The staff desks in a real browser: Debian's Chromium driven by Playwright against a live server.

A finance staff member logs into /admin/ with the login form, approves an open application from
the applications desk and sees its held earnings released; then approves a payout above the
maker-checker limit, a second finance member gives the second approval, and the payout ends paid
by the fake Stripe server of payouts/fakes (real HTTP through the Stripe SDK; nothing patched).

Skipped with the reason when /usr/bin/chromium or Playwright is missing (`make test` installs both).
"""
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from backoffice.roles import setup_roles
from ledger.models import Book
from ledger.selectors import balances_for
from payouts import services
from payouts.models import Payout
from referrals.engine.jobs import run_jobs
from referrals.models import Application
from tests.browser import SCREENSHOTS, sync_api
from tests.fakes import fixtures
from tests.helpers import at, buy_credits, signup, spend, usd

PASSWORD = "Finance-pass-4471"


pytestmark = [pytest.mark.django_db(transaction=True)]
fake_stripe = fixtures.fake_stripe



def _finance(username: str):
    user = get_user_model().objects.create_user(username, f"{username}@operator.test", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="finance"))
    return user


@pytest.fixture
def desk(live_server, settings, fake_stripe, runpod, vast):
    """alice's open application (25 referrals, $500 of spend, $10.00 held) and gina's $30.00
    Stripe payout, above a second-approval limit of $20.00; two finance staff members."""
    settings.PAYOUT_PROCESS_ON_APPROVE = True
    settings.PAYOUT_AUTO_APPROVE_BELOW = "0"
    settings.PAYOUT_SECOND_APPROVAL_ABOVE = "20.00"
    alice = signup("alice")
    for i in range(25):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "20.00", when=at(2))
    run_jobs(at=at(3), names=["revenue_share_gates"])
    gina = signup("gina")
    signup("hank", code=gina.referral_code, when=at(1))
    buy_credits("hank", "2000.00", when=at(2))  # 45.00 of cash for gina
    gina.refresh_from_db()
    services.payout_method_set(account=gina, type="stripe", connected_account=fake_stripe.add_account())
    payout = services.payout_request(account=gina, amount="30.00", method="stripe")
    setup_roles()
    return {"url": live_server.url, "alice": alice, "payout": payout, "application": Application.objects.get(),
            "fiona": _finance("fiona"), "frank": _finance("frank")}


def _logged_in(browser, base_url: str, username: str, password: str = PASSWORD):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/admin/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    sync_api.expect(page.get_by_role("heading", name="Waiting for staff")).to_be_visible()
    return context, page


def _shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=True)


def test_finance_approves_an_application_and_two_people_pay_a_large_payout(browser, desk, fake_stripe):
    expect = sync_api.expect
    alice, application, payout = desk["alice"], desk["application"], desk["payout"]
    assert balances_for(alice.pk)[Book.PENDING] == usd("10.00")

    fiona_context, page = _logged_in(browser, desk["url"], "fiona")
    try:
        # The applications desk, from the overview on the index.
        _shoot(page, "index")
        page.get_by_role("link", name="Open applications").click()
        expect(page.get_by_role("heading", name="Applications desk")).to_be_visible()
        _shoot(page, "applications")
        row = page.get_by_role("row").filter(has_text="alice")
        expect(row).to_contain_text("25 / 25")
        expect(row).to_contain_text("10.00")  # the held earnings approval would release
        row.get_by_role("link", name="alice").click()
        expect(page.locator(".desk-gate")).to_contain_text("Eligible referred accounts")
        _shoot(page, "application")
        page.get_by_label("Reason").fill("gate met, spend looks organic")
        page.get_by_role("button", name=re.compile(r"^Approve")).click()
        expect(page.locator(".messagelist")).to_contain_text("Approved 1 application")
        expect(page.locator(".desk-gate")).to_contain_text(re.compile(r"released on approval\)\s*\$0\.00"))
        application.refresh_from_db()
        assert (application.status, application.decided_by, application.reason) == (
            "approved", desk["fiona"], "gate met, spend looks organic")
        assert balances_for(alice.pk)[Book.PENDING] == 0
        assert balances_for(alice.pk)[Book.CREDITS] == usd("10.00")

        # The payouts desk: the first approval is recorded, the same person cannot give the second.
        page.get_by_role("link", name="Home").click()
        page.get_by_role("link", name="Payouts due").click()
        expect(page.get_by_role("heading", name="Payouts desk")).to_be_visible()
        _shoot(page, "payouts")
        page.get_by_role("row").filter(has_text="gina").get_by_role("link", name=str(payout.pk)).click()
        expect(page.locator(".desk-banner")).to_contain_text("This payout is above $20.00: it needs two approvals")
        # The account review: per programme, available = earned - held - paid - reserved.
        review = page.locator('tr[data-program="vast-credit-commission"]')
        expect(review.locator('[data-figure="reserved"]')).to_have_text("$30.00")
        _shoot(page, "payout")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator(".messagelist")).to_contain_text("a second staff member must approve")
        expect(page.locator(".desk-banner")).to_contain_text("Approved once by fiona")
        _shoot(page, "payout-awaiting-second-approval")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator(".messagelist")).to_contain_text("different staff member: fiona already gave the first")
        assert Payout.objects.get(pk=payout.pk).status == "requested"
        assert fake_stripe.transfers == {}
    finally:
        fiona_context.close()

    frank_context, page = _logged_in(browser, desk["url"], "frank")
    try:
        page.get_by_role("link", name="Payouts waiting for a second approver").click()
        page.get_by_role("row").filter(has_text="gina").get_by_role("link", name=str(payout.pk)).click()
        page.get_by_label("Reason").fill("second pair of eyes: fine")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator(".messagelist")).to_contain_text("Approved 1 payout")
        # Stripe transfers are synchronous: created is paid.
        expect(page.locator(".field-state")).to_contain_text("Paid")
        _shoot(page, "payout-paid")
    finally:
        frank_context.close()

    payout.refresh_from_db()
    assert (payout.status, payout.first_approved_by, payout.approved_by) == ("paid", desk["fiona"], desk["frank"])
    assert len(fake_stripe.transfers) == 1
    transfer = next(iter(fake_stripe.transfers.values()))
    assert transfer["amount"] == 3000


def test_support_reviews_the_runpod_demos_fraud_flag_with_credits_and_no_cash(browser, live_server, runpod):
    """The fraud desk as `make run` shows it (runpod demo, the support login): held earnings with
    the currency sign, and the account review says there is no cash rather than showing $0.00."""
    from django.core.management import call_command

    expect = sync_api.expect
    call_command("seed_demo", "--preset", "runpod")
    call_command("seed_staff_demo")
    context, page = _logged_in(browser, live_server.url, "sue", "sue-demo-pass")
    try:
        page.get_by_role("link", name="Open fraud flags").click()
        expect(page.get_by_role("heading", name="Fraud desk")).to_be_visible()
        row = page.get_by_role("row").filter(has_text="demo-partner-alias")
        expect(row.locator(".field-held_now")).to_have_text("$0.00")
        _shoot(page, "fraud")
        row.get_by_role("link").first.click()
        expect(page.locator(".desk-review")).to_contain_text("No cash: every enabled programme pays in platform")
        expect(page.locator(".desk-review")).to_contain_text("$1,500.00")  # milestone credits
        expect(page.locator(".desk-review")).not_to_contain_text("Cash available for payouts")
        _shoot(page, "fraud-flag")
    finally:
        context.close()

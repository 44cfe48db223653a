"""The portal in a real browser: Debian's Chromium driven by Playwright against a live server.

Sign up through a referral link, copy the link, follow a share button, at desktop and phone
widths; axe-core (vendored in tests/vendor) finds no serious or critical accessibility problem on
any page; every page is saved as a screenshot (into docs/screenshots/ for the README with SCREENSHOTS_DIR).

Playwright must not download a browser: it launches /usr/bin/chromium (`make test` installs the
Debian package). Without it the module is skipped with the reason.
"""
import contextlib
import json
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from referrals.models import Account, Click, Referral
from referrals.presets import load_preset
from tests.browser import SCREENSHOTS, sync_api
from tests.helpers import event, push, signup, spend

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
PASSWORD = "Sturdy-pass-9911"


pytestmark = [pytest.mark.django_db(transaction=True)]
User = get_user_model()



@pytest.fixture(params=list(WIDTHS))
def width(request):
    return request.param


@pytest.fixture
def site(live_server, settings):
    """The live server, with referral links pointing at it."""
    settings.SITE_URL = live_server.url
    return live_server.url


@pytest.fixture
def context(browser, site, width):
    # bypass_csp: the site's Content-Security-Policy would (rightly) refuse the injected axe script.
    context = browser.new_context(viewport=WIDTHS[width], base_url=site, bypass_csp=True)
    # Nothing leaves the machine: share targets are answered locally, anything else external fails.
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1|localhost)"), _offline)
    context.set_default_timeout(10_000)
    yield context
    context.close()


def _offline(route):
    host = urlsplit(route.request.url).hostname or ""
    if host.endswith(("twitter.com", "x.com", "linkedin.com")):
        route.fulfill(status=200, content_type="text/html",
                      body="<!DOCTYPE html><html lang=en><title>share</title><h1>Share target</h1></html>")
    else:
        route.abort()


@pytest.fixture
def alice(site):
    """Alice, a referrer under the runpod and apimarket presets with referrals, spend, a template and a login."""
    load_preset("runpod")
    load_preset("apimarket")  # for the Partner track offer
    now = timezone.now()
    account = signup("alice", email="alice@example.com", when=now - timedelta(days=200), ip="10.0.0.1")
    Click.objects.bulk_create([Click(referrer=account, visitor_id=f"v{i % 19}", is_unique=i < 19,
                                     created_at=now - timedelta(days=190 - i)) for i in range(26)])
    # Seven referred accounts over half a year, four of them spending every month.
    for i in range(7):
        signup(f"ref-{i}", code=account.referral_code, when=now - timedelta(days=185 - i * 5))
    for month in range(6):
        for i in range(0, 7, 2):
            spend(f"ref-{i}", f"{12 + i * 7 + month * 9}.37", when=now - timedelta(days=150 - month * 30 + i))
    # Same sign-up IP as Alice within the window: recorded, but ineligible.
    signup("alias", code=account.referral_code, when=now - timedelta(days=195), ip="10.0.0.1")
    push(event("template.published", "alice", template="comfyui", name="ComfyUI starter", when=now - timedelta(days=8)))
    push(event("usage.charged", "ref-1", amount="64.80", product="pods", template="comfyui", runtime_seconds=61200,
               when=now - timedelta(days=3)))
    user = User.objects.create_user("alice@example.com", "alice@example.com", PASSWORD)
    Account.objects.filter(pk=account.pk).update(user=user)
    account.refresh_from_db()
    return account


def _log_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto("/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label(re.compile(r"^Password:?$")).fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")


def _axe(page) -> list[dict]:
    """Serious and critical axe-core violations of the page as it is now."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


WIDEST_ELEMENT = """() => {
  let worst = null;
  for (const el of document.querySelectorAll("body *")) {
    const right = el.getBoundingClientRect().right;
    if (right > window.innerWidth && (!worst || right > worst.right)) {
      worst = {right, tag: el.tagName, cls: el.className};
    }
  }
  return JSON.stringify(worst);
}"""


def _check_and_shoot(page, name: str, width: str) -> None:
    page.wait_for_load_state("networkidle")
    problems = _axe(page)
    assert problems == [], f"{name} ({width}): {json.dumps(problems, indent=1)}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    # No sideways scrolling on a phone: the page fits the viewport.
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    wide = page.evaluate(WIDEST_ELEMENT) if overflow > 0 else ""
    assert overflow <= 0, f"{name} ({width}) is {overflow}px wider than the screen, e.g. {wide}"


def test_it_signs_up_through_a_referral_link_and_shows_the_attribution(context, alice, width):
    page = context.new_page()
    page.goto(f"/?ref={alice.referral_code}")
    assert "ref=" not in page.url, "the code is remembered in a cookie, not left in the address"
    _check_and_shoot(page, "home", width)
    page.get_by_role("link", name="Sign up").first.click()
    page.wait_for_url("**/signup/")
    sync_api.expect(page.locator("#invite")).to_contain_text("a•••e@e•••.com invited you through a referral link.")
    _check_and_shoot(page, "signup", width)
    page.get_by_label("E-mail").fill(f"newcomer-{width}@example.com")
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_label(re.compile(r"^Confirm password:?$")).fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/dashboard/")
    assert page.locator("#joined-via").inner_text().startswith("You joined through a referral link")
    referral = Referral.objects.get(referred__user__username=f"newcomer-{width}@example.com")
    assert referral.referrer_id == alice.pk and referral.status == Referral.Status.PENDING

    # The referrer sees the newcomer in her list.
    other = context.browser.new_context(viewport=WIDTHS[width], base_url=context.pages[0].url.split("/dashboard")[0])
    try:
        alice_page = other.new_page()
        _log_in(alice_page, "alice@example.com")
        alice_page.goto("/dashboard/referrals/")
        from referrals.templatetags.figures import masked_email

        assert alice_page.get_by_role("link", name=masked_email(referral.referred.email)).first.is_visible()
    finally:
        other.close()


def test_it_copies_the_link_with_a_visible_confirmation(context, alice, width):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    _log_in(page, "alice@example.com")
    page.get_by_role("button", name="Copy", exact=True).click()  # not "Copy redirect link"
    status = page.locator("#copy-status")
    sync_api.expect(status).to_have_text("Copied")
    sync_api.expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("() => navigator.clipboard.readText()") == alice.referral_link


def test_it_opens_the_share_buttons_with_a_prefilled_message(context, alice, width):
    page = context.new_page()
    _log_in(page, "alice@example.com")
    for name, host, field in (("Share on X / Twitter", "twitter.com", "url"),
                              ("Share on LinkedIn", "www.linkedin.com", "url")):
        with context.expect_page() as opened:
            page.get_by_role("link", name=name).click()
        popup = opened.value
        popup.wait_for_load_state()
        url = urlsplit(popup.url)
        assert url.hostname == host
        assert parse_qs(url.query)[field] == [alice.referral_link]
        if host == "twitter.com":
            assert "Sign up through my referral link" in parse_qs(url.query)["text"][0]
        assert popup.get_by_role("heading", name="Share target").is_visible()
        popup.close()


def test_it_passes_axe_on_every_page_and_saves_screenshots(context, alice, width):
    page = context.new_page()
    page.goto("/login/")
    _check_and_shoot(page, "login", width)
    page.goto("/password-reset/")
    _check_and_shoot(page, "password-reset", width)
    _log_in(page, "alice@example.com")
    referral = Referral.objects.filter(referrer=alice, spend__gt=0).order_by("id").first()
    pages = {
        "dashboard": "/dashboard/",
        "referrals": "/dashboard/referrals/",
        "referrals-filtered": "/dashboard/referrals/?status=ineligible",
        "referral-detail": f"/dashboard/referrals/{referral.pk}/",
        "earnings": "/dashboard/earnings/",
        "wallet": "/dashboard/wallet/",
        "templates": "/dashboard/templates/",
        "partner": "/dashboard/partner/",
        "notifications": "/dashboard/notifications/",
        "template-page": "/t/comfyui/",
    }
    with contextlib.suppress(NoReverseMatch):  # the payouts pages (issue 4) may not be there yet
        pages["payouts"] = reverse("payouts:index")
    for name, path in pages.items():
        response = page.goto(path)
        assert response.status == 200, f"{path}: {response.status}"
        _check_and_shoot(page, name, width)
        # Every table fits the screen (stacked on a phone): no column cut off, nothing to scroll sideways.
        cut = page.evaluate("() => [...document.querySelectorAll('.table-wrap')]"
                            ".filter(w => w.scrollWidth > w.clientWidth).map(w => w.innerText.slice(0, 60))")
        assert cut == [], f"{path} at {width}: tables wider than the screen: {cut}"


@pytest.fixture
def gina(site):
    """Gina, on the Partner track of the apimarket preset, with $30.00 of cash (10 % of a $300
    plan her referral bought) and a Stripe account connected."""
    from django.apps import apps

    from referrals.engine.services import account_change_track
    from tests.helpers import buy_plan

    load_preset("apimarket")
    now = timezone.now()
    account = signup("gina", email="gina@example.com", when=now - timedelta(days=10))
    account_change_track(account=account, track="partner")
    signup("hank", code=account.referral_code, when=now - timedelta(days=5))
    buy_plan("hank", "300.00", when=timezone.now())
    apps.get_model("payouts", "PayoutMethod").objects.create(
        account=account, type="stripe", details={"connected_account": "acct_1Demo0000"}, masked="••••0000", ready=True)
    user = User.objects.create_user("gina@example.com", "gina@example.com", PASSWORD)
    Account.objects.filter(pk=account.pk).update(user=user)
    return account


def test_it_requests_a_payout_with_errors_in_words(context, gina, width):
    page = context.new_page()
    _log_in(page, "gina@example.com")
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Payouts").click()
    page.wait_for_url("**/payouts/")
    sync_api.expect(page.get_by_text("$30.00").first).to_be_visible()
    page.get_by_label("Amount").fill("10.00")
    page.get_by_role("button", name="Request payout").click()
    sync_api.expect(page.get_by_role("alert").first).to_contain_text("25")  # below the minimum, said in words
    _check_and_shoot(page, "payouts-error", width)
    page.get_by_label("Amount").fill("25.00")
    page.get_by_role("button", name="Request payout").click()
    page.wait_for_url("**/payouts/")
    sync_api.expect(page.get_by_text("Your payout of $25.00 is requested: staff review it before it is sent.")
                    ).to_be_visible()
    history = page.get_by_role("table")
    sync_api.expect(history).to_contain_text("$25.00")
    sync_api.expect(history).to_contain_text("Stripe Connect")
    # The history fits the screen at both widths (stacked on a phone), its status not cut off.
    assert history.evaluate("t => t.parentElement.scrollWidth <= t.parentElement.clientWidth")
    status = history.locator("td", has_text="Requested").last
    assert status.evaluate("c => c.getBoundingClientRect().right <= document.documentElement.clientWidth")
    _check_and_shoot(page, "payouts", width)


# --------------------------------------------------------------------------- issue 16: the fixed pages


ERROR_RED = "rgb(180, 35, 24)"


def test_it_styles_form_errors_as_errors_not_as_help_text(context, site, width):
    page = context.new_page()
    page.goto("/signup/")
    page.get_by_label("E-mail").fill("not-an-address")
    page.get_by_role("button", name=re.compile("Sign up|Create")).click()
    error = page.locator(".errorlist").first
    sync_api.expect(error).to_be_visible()
    page.wait_for_load_state("networkidle")
    styles = error.evaluate("e => [getComputedStyle(e).color, getComputedStyle(e).fontWeight]")
    assert styles[0] == ERROR_RED and int(styles[1]) >= 600, styles
    helps = page.locator(".helptext")
    if helps.count():
        assert helps.first.evaluate("e => getComputedStyle(e).color") != ERROR_RED


def test_it_says_why_no_payout_can_be_requested_and_how_payouts_work(context, site, width):
    load_preset("runpod")
    account = signup("ivy", email="ivy@example.com")
    user = User.objects.create_user("ivy@example.com", "ivy@example.com", PASSWORD)
    Account.objects.filter(pk=account.pk).update(user=user)
    page = context.new_page()
    _log_in(page, "ivy@example.com")
    nav = page.get_by_role("navigation", name="Dashboard")
    # No programme of runpod has a Partner track: no Partner tab; the tabs stay on one row.
    assert nav.get_by_role("link", name="Partner").count() == 0
    row_height = nav.locator("ul").evaluate("e => e.getBoundingClientRect().height")
    tab_height = nav.locator("a").first.evaluate("e => e.getBoundingClientRect().height")
    assert row_height < tab_height * 1.5, (row_height, tab_height)
    nav.get_by_role("link", name="Payouts").click()
    page.wait_for_url("**/payouts/")
    reasons = page.locator("#cannot-request")
    sync_api.expect(reasons).to_contain_text("no payout method set up yet")
    sync_api.expect(reasons).to_contain_text("no cash to withdraw yet")
    assert page.get_by_label("Amount").count() == 0
    sync_api.expect(page.get_by_role("heading", name="How and when you get paid")).to_be_visible()
    _check_and_shoot(page, "payouts-cannot-request", width)


def test_it_shows_the_exact_figure_on_a_tap_and_the_total_of_the_earnings(context, alice, width):
    page = context.new_page()
    _log_in(page, "alice@example.com")
    page.goto("/dashboard/earnings/")
    sync_api.expect(page.locator("#earnings-total")).to_contain_text("Total earned")
    exact = page.locator("details.exact").first
    hidden = exact.locator("span")
    assert not hidden.is_visible()
    exact.locator("summary").click()  # a tap on a phone
    sync_api.expect(hidden).to_be_visible()
    sync_api.expect(hidden).to_contain_text("exactly $")
    assert page.get_by_text("Book").count() == 0
    page.goto("/dashboard/")
    total = page.locator('#earnings-by-programme tr[data-program="total"] [data-figure="earned"]')
    sync_api.expect(total).to_be_visible()
    _check_and_shoot(page, "dashboard-earnings-total", width)

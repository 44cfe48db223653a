"""Issue 14 "done when", in Debian's Chromium: the operator's own site, on a second origin, with
the portal's tracking script.

The operator's site is a small http.server on 127.0.0.2 (another site than the portal's
`localhost`), serving a page under a strict Content-Security-Policy with one `<script src>` tag
and a sign-up form; its "backend" turns the form into `account.created` through the real API.
A visit with `?ref=` is counted on the referrer's dashboard, the form gets the click id, and the
sign-up is attributed. A page on an origin that is not configured records nothing.
"""
import html
import json
import re
import threading
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from referrals.api.keys import api_key_create
from referrals.models import Account, Click, Referral
from tests.browser import SCREENSHOTS, sync_api
from tests.helpers import signup

pytestmark = [pytest.mark.django_db(transaction=True)]

PASSWORD = "Sturdy-pass-9911"
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"

OPERATOR_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Operator</title>
<script src="{portal}/static/referrals/track.js" defer></script></head>
<body><main><h1>GPU cloud</h1>
<form method="post" action="/signup">
  <label for="email">E-mail</label> <input id="email" name="email" type="email" required>
  <input type="hidden" name="referral_code">
  <input type="hidden" name="referral_click_id">
  <button type="submit">Sign up</button>
</form></main></body></html>"""


class OperatorSite:
    """The operator's web site and its sign-up backend, on their own host and port."""

    def __init__(self, host: str, portal: str, api_key: str):
        self.portal, self.api_key, self.sent = portal, api_key, []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: str, status: int = 200):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                # Strict: no inline script, no eval; only the portal's script and its API.
                self.send_header("Content-Security-Policy", f"default-src 'none'; script-src {site.portal}; "
                                                            f"connect-src {site.portal}; form-action 'self'")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if urlsplit(self.path).path == "/favicon.ico":
                    return self._answer("", 404)
                self._answer(OPERATOR_PAGE.format(portal=site.portal))

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                form = {name: values[0] for name, values in parse_qs(body).items()}
                answer = site.send_signup(form)
                self._answer(f'<!DOCTYPE html><html lang="en"><title>Welcome</title><pre id="result">'
                             f'{html.escape(json.dumps(answer))}</pre></html>')

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def send_signup(self, form: dict) -> dict:
        """What the operator's backend does on sign-up: `account.created` with the form's referral fields."""
        created = {"id": f"signup-{form['email']}", "type": "account.created", "account": form["email"],
                   "email": form["email"], "occurred_at": timezone.now().isoformat()}
        for field, name in (("referral_code", "referral_code"), ("click_id", "referral_click_id")):
            if form.get(name):
                created[field] = form[name]
        self.sent.append(created)
        # http.client, not urllib: a plain POST with no redirect following or proxy lookup in between.
        connection = HTTPConnection(urlsplit(self.portal).netloc, timeout=10)
        try:
            connection.request("POST", "/api/v1/events", body=json.dumps(created).encode(),
                               headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
            response = connection.getresponse()
            return {"http_status": response.status, **json.loads(response.read())}
        finally:
            connection.close()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def width():
    return "desktop"  # the sign-up and the link block are also run at phone width (parametrize)


@pytest.fixture
def portal(live_server, settings):
    settings.SITE_URL = live_server.url
    return live_server.url


@pytest.fixture
def operator(portal, settings):
    site = OperatorSite("127.0.0.2", portal, api_key_create(name="operator backend", scopes=["events:write"])[1])
    settings.REFERRAL = {**settings.REFERRAL, "TRACKING_ORIGINS": [site.url], "LANDING_URL": f"{site.url}/welcome"}
    yield site
    site.stop()


@pytest.fixture
def stranger(portal):
    """A site whose origin the portal was not told about."""
    site = OperatorSite("127.0.0.3", portal, "no-key")
    yield site
    site.stop()


@pytest.fixture
def alice(portal):
    account = signup("alice", email="alice@example.com")
    user = get_user_model().objects.create_user("alice@example.com", "alice@example.com", PASSWORD)
    Account.objects.filter(pk=account.pk).update(user=user)
    return account


@pytest.fixture
def context(browser, width):
    context = browser.new_context(viewport=WIDTHS[width], user_agent=BROWSER_UA)
    context.set_default_timeout(10_000)
    yield context
    context.close()


def csp_violations(page) -> list:
    found = []
    page.on("console", lambda message: found.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text else None)
    return found


def log_in(page, portal: str) -> None:
    page.goto(f"{portal}/login/")
    page.get_by_label("E-mail").fill("alice@example.com")
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")


def total_clicks_on_dashboard(page, portal: str) -> int:
    page.goto(f"{portal}/dashboard/")
    return int(page.locator(".stat", has=page.locator("dt", has_text=re.compile("^Total clicks$"))).locator("dd")
               .inner_text())


@pytest.mark.parametrize("width", list(WIDTHS))
def test_it_counts_a_click_on_the_operators_site_and_attributes_its_sign_up(context, browser, portal, operator,
                                                                            alice, width):
    referrer = browser.new_context(viewport=WIDTHS[width])
    referrer.set_default_timeout(10_000)
    try:
        alices_page = referrer.new_page()
        log_in(alices_page, portal)
        before = total_clicks_on_dashboard(alices_page, portal)

        page = context.new_page()
        refused = csp_violations(page)
        page.goto(f"{operator.url}/pricing?ref={alice.referral_code}")
        remembered = page.evaluate("() => new Promise(resolve => window.Referral.ready(resolve))")
        click = Click.objects.get(referrer=alice)
        assert remembered["code"] == alice.referral_code and remembered["clickId"] == str(click.public_id)
        assert click.path == f"{operator.url}/pricing"
        assert refused == [], "the script runs under the operator's strict CSP"
        # The form has the click, and the click is kept in a first-party cookie of the operator's site.
        assert page.locator('input[name="referral_click_id"]').input_value() == str(click.public_id)
        assert page.locator('input[name="referral_code"]').input_value() == alice.referral_code
        cookies = {c["name"]: c for c in context.cookies(operator.url)}
        assert cookies["ref_click"]["domain"] == "127.0.0.2" and cookies["ref_click"]["expires"] > 0
        assert not [c for c in context.cookies(portal) if c["name"] == "ref_click"]

        # A later visit without the code still hands the click to the form (the cookie).
        page.goto(f"{operator.url}/signup-page")
        page.evaluate("() => new Promise(resolve => window.Referral.ready(resolve))")
        assert page.locator('input[name="referral_click_id"]').input_value() == str(click.public_id)
        page.get_by_label("E-mail").fill(f"dana-{width}@example.com")
        page.get_by_role("button", name="Sign up").click()
        result = json.loads(page.locator("#result").inner_text())
        assert result["results"][0]["status"] == "accepted", result
        assert operator.sent[-1]["click_id"] == str(click.public_id)

        referral = Referral.objects.get(referred__external_id=f"dana-{width}@example.com")
        assert referral.referrer_id == alice.pk and referral.click_id == click.pk
        assert total_clicks_on_dashboard(alices_page, portal) == before + 1
    finally:
        referrer.close()


def test_it_records_nothing_for_a_site_whose_origin_is_not_configured(context, operator, stranger, alice):
    page = context.new_page()
    page.goto(f"{stranger.url}/?ref={alice.referral_code}")
    remembered = page.evaluate("() => new Promise(resolve => window.Referral.ready(resolve))")
    assert remembered is None
    assert page.locator('input[name="referral_click_id"]').input_value() == ""
    assert not Click.objects.exists()


def test_it_carries_a_redirect_links_click_to_the_operators_form_without_counting_it_twice(
        context, portal, operator, alice):
    page = context.new_page()
    page.goto(f"{portal}/r/{alice.referral_code}")
    page.wait_for_url(f"{operator.url}/welcome?**")
    remembered = page.evaluate("() => new Promise(resolve => window.Referral.ready(resolve))")
    click = Click.objects.get()
    assert remembered["clickId"] == str(click.public_id)
    assert page.locator('input[name="referral_click_id"]').input_value() == str(click.public_id)
    assert Click.objects.count() == 1


@pytest.mark.parametrize("width", list(WIDTHS))
def test_it_shows_the_redirect_link_beside_the_plain_link(context, portal, operator, alice, width):
    page = context.new_page()
    log_in(page, portal)
    link = page.get_by_label("Redirect link", exact=True)
    sync_api.expect(link).to_have_value(f"{portal}/r/{alice.referral_code}")
    sync_api.expect(page.get_by_role("button", name="Copy redirect link")).to_be_visible()
    block = page.locator(".link-panel")
    box = block.bounding_box()
    assert box["width"] <= WIDTHS[width]["width"]
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    block.screenshot(path=str(SCREENSHOTS / f"dashboard-links-{width}.png"))

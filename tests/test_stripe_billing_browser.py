"""The Stripe connection page in a real browser: staff see the webhook URL and the events to enable,
the saved secrets only masked, and an invoice whose price had no mapping applied as soon as they
add one in the mapping rows of the same page. Skipped with the reason without Chromium."""
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from billing.models import Inbound, PriceMapping, StripeConnection
from referrals.models import Event
from tests.browser import SCREENSHOTS, sync_api
from tests.fakes import stripe_billing as fs
from tests.test_stripe_billing import KEY, SECRET, T0, URL

PASSWORD = "Operator-pass-5523"

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_staff_map_a_price_on_the_connection_page_and_the_waiting_invoice_is_applied(browser, live_server, apimarket):
    conn = StripeConnection.objects.create(signing_secret=SECRET, api_key=KEY)
    PriceMapping.objects.create(connection=conn, stripe_id="price_pro", event_type="plan.purchased",
                                product_line="pro", description="Pro plan, monthly")
    get_user_model().objects.create_superuser("olga", "olga@operator.test", PASSWORD)
    client = Client()
    for event_id, type_, obj in [
        ("evt_b0", "customer.created", fs.customer("cus_b", created=T0, email="b@example.test", account_id="b-1")),
        ("evt_b1", "invoice.paid", fs.invoice("in_b", customer="cus_b", created=T0 + 60, charge="ch_b",
                                              lines=[("price_gpu", "prod_gpu", 4200)])),
    ]:
        body, signature = fs.webhook(event_id, type_, obj, secret=SECRET)
        response = client.post(URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)
        assert response.status_code == 200
    assert Inbound.objects.get(key="evt_b1").status == "needs_mapping"

    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/admin/")
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.goto("/admin/billing/inbound/?status=needs_mapping")
    sync_api.expect(page.get_by_text("no mapping for price_gpu")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "admin-stripe-needs-mapping.png"), full_page=True)

    page.goto(f"/admin/billing/stripeconnection/{conn.pk}/change/")
    sync_api.expect(page.get_by_text("/integrations/stripe/webhook/")).to_be_visible()
    sync_api.expect(page.get_by_text("whsec_…cret", exact=True)).to_be_visible()
    assert SECRET not in page.content() and KEY not in page.content()
    page.locator("#id_mappings-1-stripe_id").fill("prod_gpu")
    page.locator("#id_mappings-1-event_type").select_option("usage.charged")
    page.locator("#id_mappings-1-product_line").fill("serverless")
    page.locator("#id_mappings-1-description").fill("GPU hours")
    page.screenshot(path=str(SCREENSHOTS / "admin-stripe-connection.png"), full_page=True)
    page.get_by_role("button", name="Save and continue editing").click()
    sync_api.expect(page.get_by_text("1 Stripe object(s) that needed a mapping are now applied.")).to_be_visible()
    context.close()

    charge = Event.objects.get(external_id="stripe:in_b")
    assert (charge.type, charge.payload["amount"], charge.payload["product"]) == ("usage.charged", "42.00",
                                                                                   "serverless")

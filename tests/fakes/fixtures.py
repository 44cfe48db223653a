"""Fixtures that start a fake provider (payouts/fakes/, the demo's too) on a port of its own and
point the settings at it. Import them into a test
module to use them."""
import pytest

from payouts.fakes.paypal import FakePayPal
from payouts.fakes.stripe import FakeStripe
from payouts.fakes.wise import FakeWise


@pytest.fixture
def fake_stripe(settings):
    server = FakeStripe(secret_key="sk_test_fake").start()
    settings.STRIPE_API_BASE = settings.STRIPE_CONNECT_API_BASE = server.url
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_fake"
    settings.PAYOUT_PROVIDER_TIMEOUT = 2.0
    yield server
    server.stop()


@pytest.fixture
def fake_paypal(settings):
    server = FakePayPal(client_id="fake-client", client_secret="fake-secret").start()
    settings.PAYPAL_API_BASE = server.url
    settings.PAYPAL_CLIENT_ID = "fake-client"
    settings.PAYPAL_CLIENT_SECRET = "fake-secret"
    settings.PAYOUT_PROVIDER_TIMEOUT = 2.0
    yield server
    server.stop()


@pytest.fixture
def fake_wise(settings):
    server = FakeWise(token="fake-wise-token").start()
    settings.WISE_API_BASE = server.url
    settings.WISE_API_TOKEN = "fake-wise-token"
    settings.WISE_PROFILE_ID = "16000001"
    settings.PAYOUT_PROVIDER_TIMEOUT = 2.0
    yield server
    server.stop()

"""The portal's URLs plus the demo's fake PayPal, as `make run` (DEBUG) mounts them, for tests/test_demo.py."""
from django.urls import path

from payouts import demo_provider
from referrals_site.urls import urlpatterns as portal

urlpatterns = [
    path("payouts/dev/fake-paypal/v1/oauth2/token", demo_provider.token),
    path("payouts/dev/fake-paypal/v1/payments/payouts", demo_provider.create_batch),
    path("payouts/dev/fake-paypal/v1/payments/payouts/<str:batch_id>", demo_provider.read_batch),
    *portal,
]

"""Top-level routes: the portal pages, the staff admin and the integration API."""
from django.contrib import admin
from django.urls import include, path

from referrals.health import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),  # database and broker status (issue 3)
    path("api/v1/", include("payouts.api.urls")),  # payout endpoints, before the catch-all 404 (issue 4)
    path("api/v1/", include("referrals.api.urls")),
    path("api/", include("referrals.api.schema_urls")),  # /api/schema/, /api/docs/ (issue 7)
    path("dashboard/notifications/", include("notifications.urls")),
    path("integrations/stripe/", include("billing.urls")),  # Stripe billing webhooks (issue 14)
    path("payouts/", include("payouts.urls")),  # payouts page and Stripe webhooks (issue 4)
    path("", include("referrals.urls")),
]

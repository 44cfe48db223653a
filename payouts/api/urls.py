"""Payout routes of the integration API, mounted under /api/v1/ before referrals.api.urls
(whose last route is a catch-all JSON 404)."""
from django.urls import path

from . import views

app_name = "payouts-api"

urlpatterns = [
    path("accounts/<str:account>/payout-methods", views.PayoutMethodsView.as_view(), name="payout-methods"),
    path("payouts", views.PayoutsView.as_view(), name="payouts"),
    path("payouts/<int:payout_id>", views.PayoutView.as_view(), name="payout"),
    path("payouts/<int:payout_id>/approve", views.PayoutApproveView.as_view(), name="payout-approve"),
    path("payouts/<int:payout_id>/reject", views.PayoutRejectView.as_view(), name="payout-reject"),
]

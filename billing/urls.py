"""Routes of the Stripe billing connector, mounted under /integrations/stripe/."""
from django.urls import path

from . import views

app_name = "billing"

urlpatterns = [
    path("webhook/", views.stripe_webhook, name="stripe-webhook"),
]

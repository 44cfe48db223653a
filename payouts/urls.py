"""Portal routes of the payouts page and the provider webhooks, mounted under /payouts/."""
from django.conf import settings
from django.urls import path, re_path

from . import views

app_name = "payouts"

urlpatterns = [
    path("", views.payouts_page, name="index"),
    path("methods/paypal/", views.set_paypal, name="set-paypal"),
    path("methods/wise/", views.set_wise, name="set-wise"),
    path("methods/stripe/", views.stripe_connect, name="stripe-connect"),
    path("stripe/return/", views.stripe_return, name="stripe-return"),
    path("request/", views.request_payout, name="request"),
    path("<int:payout_id>/cancel/", views.cancel_payout, name="cancel"),
    path("webhooks/stripe", views.stripe_webhook, name="stripe-webhook"),
]

if settings.DEBUG and settings.PAYOUT_DEMO_FAKES:  # `make run`'s demo only (see payouts/fakes/demo.py)
    from .fakes import demo

    urlpatterns += [
        re_path(r"^dev/fake-(?P<provider>stripe|paypal|wise)/(?P<path>.+)$", demo.serve),
    ]

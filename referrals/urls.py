"""Portal routes. `?ref=CODE` works on every one of them (see `referrals.attribution.middleware`)."""
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from .attribution import redirects
from .portal import views
from .portal.forms import AccountPasswordResetForm, EmailAuthenticationForm

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(authentication_form=EmailAuthenticationForm,
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", auth_views.PasswordResetView.as_view(form_class=AccountPasswordResetForm),
         name="password_reset"),
    path("password-reset/done/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("password-reset/complete/", auth_views.PasswordResetCompleteView.as_view(),
         name="password_reset_complete"),
    path("password-reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/referrals/", views.referrals_page, name="referrals"),
    path("dashboard/referrals/<int:pk>/", views.referral_detail, name="referral_detail"),
    path("dashboard/earnings/", views.earnings_page, name="earnings"),
    path("dashboard/earnings.csv", views.earnings_csv, name="earnings_csv"),
    path("dashboard/wallet/", views.wallet_page, name="wallet"),
    path("dashboard/templates/", views.templates_page, name="templates"),
    path("dashboard/partner/", views.partner_page, name="partner"),
    # Template links are shared both with and without the trailing slash (`Template.referral_link`
    # has none); serving both avoids an APPEND_SLASH hop.
    path("t/<str:external_id>/", views.template_page, name="template_page"),
    path("t/<str:external_id>", views.template_page, name="template_page_bare"),
    # Redirect links to the operator's site (issue 14, referrals/attribution/redirects.py).
    # Any tail (slashes, even %0A, included) still lands on the operator's page, unattributed.
    re_path(r"^r/(?P<code>[^/]+)/t/(?P<template>[\s\S]+)$", redirects.follow_redirect_link,
            name="redirect_link_template"),
    re_path(r"^r/(?P<code>[\s\S]+)$", redirects.follow_redirect_link, name="redirect_link"),
]

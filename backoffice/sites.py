"""The portal's admin site: Django's, with the staff overview on its index page."""
from django.contrib import admin


class PortalAdminSite(admin.AdminSite):
    site_header = "Referral portal — staff"
    site_title = "Referral portal staff"
    index_title = "Overview"
    index_template = "admin/portal_index.html"
    # The desks' lists are wide (figures beside each row); the app list stays one click away (Home).
    enable_nav_sidebar = False

    # Infrastructure sections (schedules, integrations, logins, lock-outs, devices) crowd the index of
    # staff who only read them: an app of these is listed only to those who may change something in it.
    INFRASTRUCTURE_APPS = frozenset({"django_celery_beat", "integrations", "auth", "axes", "otp_totp", "otp_static",
                                     "notifications"})

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        return [app for app in apps if app["app_label"] not in self.INFRASTRUCTURE_APPS
                or any(model["perms"].get("change") or model["perms"].get("add") for model in app["models"])]

    def index(self, request, extra_context=None):
        from .selectors import staff_overview

        return super().index(request, extra_context={**(extra_context or {}), "overview": staff_overview()})

    # --- sign-in: password, then the authenticator code once staff have one (backoffice.otp) ---
    login_template = "admin/portal_login.html"

    @property
    def login_form(self):
        from .otp import StaffLoginForm

        return StaffLoginForm

    def has_permission(self, request):
        from . import otp

        return super().has_permission(request) and otp.otp_state(request) in (otp.VERIFIED, otp.NOT_NEEDED)

    def login(self, request, extra_context=None):
        from django.shortcuts import redirect
        from django.urls import reverse

        from . import otp

        user = request.user
        state = otp.otp_state(request) if user.is_active and user.is_staff else ""
        if request.method == "GET" and state == otp.NEEDS_ENROLMENT:
            return redirect(reverse("admin:otp_enrol", current_app=self.name))
        return super().login(request, extra_context={**(extra_context or {}), "otp_state": state})

    def get_urls(self):
        from functools import partial

        from django.urls import path

        from . import otp

        # Outside admin_view on purpose: staff who must enrol have no admin permission yet.
        return [path("two-factor/", partial(otp.enrol, admin_site=self), name="otp_enrol"), *super().get_urls()]

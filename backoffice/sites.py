"""The portal's admin site: Django's, with the staff overview on its index page."""
from django.contrib import admin


class PortalAdminSite(admin.AdminSite):
    site_header = "Referral portal — staff"
    site_title = "Referral portal staff"
    index_title = "Overview"
    index_template = "admin/portal_index.html"
    # The desks' lists are wide (figures beside each row); the app list stays one click away (Home).
    enable_nav_sidebar = False

    def index(self, request, extra_context=None):
        from .selectors import staff_overview

        return super().index(request, extra_context={**(extra_context or {}), "overview": staff_overview()})

"""Django's admin app with the portal's site (see backoffice.sites)."""
from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "backoffice.sites.PortalAdminSite"

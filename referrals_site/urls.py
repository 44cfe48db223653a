"""Top-level routes: the portal pages, the staff admin and the integration API."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("referrals.api.urls")),
    path("", include("referrals.urls")),
]

"""The portal's URLs plus `/__bare__/`: a view that does nothing, behind the same middleware."""

from django.http import HttpResponse
from django.urls import path

from referrals_site.urls import urlpatterns as portal_urls


def bare(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("__bare__/", bare), *portal_urls]

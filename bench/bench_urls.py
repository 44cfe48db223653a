"""The portal's URLs plus `/__bare__/`: a view that does nothing, behind the same middleware,
and `/__bare_user__/`: the same for a logged-in user (session and user loaded, as every
dashboard page does)."""
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.urls import path

from referrals_site.urls import urlpatterns as portal_urls


def bare(request):
    return HttpResponse("ok", content_type="text/plain")


@login_required
def bare_user(request):
    return HttpResponse(f"ok {request.user.pk}", content_type="text/plain")


urlpatterns = [path("__bare__/", bare), path("__bare_user__/", bare_user), *portal_urls]

"""Redirect links served by the portal: `/r/CODE` and `/r/CODE/t/TEMPLATE` record the click and
send the visitor to the operator's landing URL (or the template's page) with `ref` and `click_id`."""
import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpResponseRedirect
from django.views.decorators.http import require_GET

from referrals_site.client_ip import client_ip

from . import clicks, tracking
from .middleware import has_live_attribution, remember_click, visitor_id

log = logging.getLogger(__name__)


@require_GET
def follow_redirect_link(request, code: str, template: str = ""):
    template_known = bool(template) and tracking.TEMPLATE_ID_RE.fullmatch(template) is not None \
        and clicks.template_for(template) is not None
    destination = tracking.template_url(template) if template_known else tracking.landing_url()
    ip = client_ip(request)
    try:
        tracked = tracking.track_click(
            code=code, template=template if template_known else "", visitor_id=visitor_id(request), ip=ip,
            user_agent=request.META.get("HTTP_USER_AGENT", ""), page=request.path,
        )
    except DatabaseError:
        # A click we fail to count must not cost the visitor the page.
        log.exception("could not record a redirect-link click for code %r", code)
        tracked = tracking.TrackedClick(tracking.Outcome.UNKNOWN_CODE)
    click = tracked.click
    on_portal = urlsplit(destination).netloc in (request.get_host(), urlsplit(settings.SITE_URL).netloc)
    if click is not None and on_portal:
        # The portal's own page: its `?ref=` handling would count the click a second time, so the
        # click goes into the portal's attribution cookie (first-party here) and the page opens bare.
        if not (settings.REFERRAL["ATTRIBUTION_MODEL"] == "first" and has_live_attribution(request)):
            response = _redirect(destination)
            remember_click(request, response, code=tracked.code, click=click, template=tracked.template)
            return response
        return _redirect(destination)
    if click is not None:
        destination = tracking.with_query(destination, ref=tracked.code, click_id=tracked.click_id)
    return _redirect(destination)


def _redirect(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(tracking.safe_destination(url))
    # Every visit must reach us to be counted: no browser or shared cache may keep the redirect.
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex"
    return response

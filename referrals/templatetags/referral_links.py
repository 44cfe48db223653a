"""Template tags for the dashboard's link block: the account's redirect link (`/r/CODE`)."""
from urllib.parse import urlsplit

from django import template

from ..attribution import tracking

register = template.Library()


@register.simple_tag
def redirect_link_for(account) -> dict:
    """{"link": the account's redirect link, "landing_host": where it sends visitors}."""
    return {"link": tracking.redirect_link(account), "landing_host": urlsplit(tracking.landing_url()).netloc}

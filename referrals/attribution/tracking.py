"""Clicks on the operator's own site (SPEC "Referral links", API.md "Tracking clicks"): the one
service behind the tracking script's public call, the server-side click API and the redirect links.

It records through the portal's own click path (`referrals.attribution.clicks`: cached code lookups, the
buffered writer, unique clicks) with the same crawler test and per-IP click limit as `?ref=` links.
"""
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from ..models import Account
from . import clicks
from .middleware import CODE_RE, hash_ip, is_crawler, over_ip_click_rate

TEMPLATE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,120}")
VISITOR_RE = re.compile(r"[0-9a-f]{32}")


class Outcome:
    RECORDED = "recorded"
    UNKNOWN_CODE = "unknown_code"
    CRAWLER = "crawler"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class TrackedClick:
    """What happened to one reported click; `click` is set only when it was counted."""

    outcome: str
    code: str | None = None
    template: str = ""
    click: clicks.PendingClick | None = None

    @property
    def click_id(self) -> str | None:
        return str(self.click.public_id) if self.click else None

    @property
    def expires_at(self) -> datetime | None:
        if self.click is None:
            return None
        return self.click.created_at + timedelta(days=settings.REFERRAL["ATTRIBUTION_WINDOW_DAYS"])

    def as_dict(self) -> dict:
        return {"status": self.outcome, "click_id": self.click_id, "code": self.code if self.click else None,
                # Whole seconds: every browser's Date.parse reads that form.
                "expires_at": self.expires_at.isoformat(timespec="seconds").replace("+00:00", "Z")
                if self.click else None}


def track_click(*, code: str, template: str = "", visitor_id: str, ip: str, user_agent: str, page: str,
                limit_ip: bool = True) -> TrackedClick:
    """Record a click on a referral link as the portal's own links do, or say why it was not counted.

    A malformed, unknown or disabled code is `unknown_code` (never an error: the visitor's page must
    work); a crawler's visit and a click past the IP's limit per minute are not counted. An unknown
    template leaves the click without one.
    """
    code = code.strip().lower()
    if not CODE_RE.fullmatch(code):
        return TrackedClick(Outcome.UNKNOWN_CODE)
    referrer_id = clicks.referrer_for_code(code)
    if referrer_id is None:
        return TrackedClick(Outcome.UNKNOWN_CODE)
    if is_crawler(user_agent):
        return TrackedClick(Outcome.CRAWLER)
    if limit_ip and over_ip_click_rate(ip):
        return TrackedClick(Outcome.RATE_LIMITED)
    template_id = clicks.template_for(template) if template and TEMPLATE_ID_RE.fullmatch(template) else None
    click = clicks.record_click(
        referrer_id=referrer_id, visitor_id=visitor_id, ip_hash=hash_ip(ip), user_agent=user_agent,
        path=page, template_id=template_id,
    )
    return TrackedClick(Outcome.RECORDED, code=code, template=template if template_id else "", click=click)


def page_of(url: str) -> str:
    """The page a click happened on, as kept with the click: scheme, host and path, no query
    (it may hold the visitor's tokens) and no fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def visitor_for(*, given: str = "", ip: str = "", user_agent: str = "") -> str:
    """The visitor id unique clicks are counted by.

    The tracking script sends its own first-party id (32 hex digits) and it is used as is; an
    operator's server may send any id of its own, which is keyed-hashed into the same shape.
    Without one, the IP and user agent stand in for the visitor; with neither, every click is a
    visitor of its own.
    """
    if VISITOR_RE.fullmatch(given):
        return given
    material = f"id:{given}" if given else (f"ipua:{ip}\n{user_agent}" if ip or user_agent else "")
    if not material:
        return secrets.token_hex(16)
    return hmac.new(settings.SECRET_KEY.encode(), material.encode(), hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------- allowed origins


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str) -> bool:
    """An `Origin` header naming one of REFERRAL["TRACKING_ORIGINS"] (exactly: scheme, host, port)."""
    if not origin or origin == "null":
        return False
    return normalise_origin(origin) in {normalise_origin(o) for o in settings.REFERRAL["TRACKING_ORIGINS"]}


# --------------------------------------------------------------------------- redirect links


def landing_url() -> str:
    return settings.REFERRAL["LANDING_URL"] or settings.SITE_URL + "/"


def template_url(template: str) -> str:
    pattern = settings.REFERRAL["TEMPLATE_URL"] or settings.SITE_URL + "/t/{template}"
    return pattern.replace("{template}", quote(template, safe=""))


def redirect_hosts() -> set[str]:
    """The only hosts a redirect link sends anyone to: those of the configured URLs."""
    pattern = settings.REFERRAL["TEMPLATE_URL"] or settings.SITE_URL + "/t/{template}"
    return {urlsplit(url).netloc for url in (landing_url(), pattern.replace("{template}", "x"), settings.SITE_URL)
            if urlsplit(url).netloc}


def with_query(url: str, **params: str) -> str:
    """The URL with these query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode(query + list(params.items()))))


def safe_destination(url: str) -> str:
    """The URL if it is on a configured host, else the portal's home page.

    The destination is built from settings only, but a template id goes into its path: this is
    the last guard that nothing sends a visitor to another host.
    """
    hosts = redirect_hosts()
    if url_has_allowed_host_and_scheme(url, allowed_hosts=hosts) and urlsplit(url).netloc in hosts:
        return url
    return "/"


def portal_url() -> str:
    return settings.REFERRAL["PORTAL_URL"] or settings.SITE_URL


def redirect_link(account: Account) -> str:
    """The account's redirect link (`<portal>/r/<code>`): counts the click, then opens the landing URL."""
    return portal_url() + reverse("redirect_link", kwargs={"code": account.referral_code})

"""Referral links: `?ref=CODE` on any page records a click, remembers it in a signed cookie for
the attribution window, and redirects to the same page without the code (SPEC "Referral links")."""

import base64
import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import time

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpResponseRedirect
from django.urls import Resolver404, get_urlconf, resolve, reverse
from django.utils.encoding import escape_uri_path
from django.utils.http import url_has_allowed_host_and_scheme

from referrals_site.client_ip import client_ip

from ..models import CODE_ALPHABET, CODE_LENGTH, Account
from . import clicks

log = logging.getLogger(__name__)

REF_PARAM = "ref"
COOKIE_SALT = "referral"
VISITOR_COOKIE = "vid"
VISITOR_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
TEMPLATE_URL_NAMES = frozenset({"template_page", "template_page_bare"})
SKIPPED_PREFIXES = ("/api/", "/admin/", "/static/")

CODE_RE = re.compile(f"[{re.escape(CODE_ALPHABET)}]{{{CODE_LENGTH}}}")
VISITOR_RE = re.compile(r"[0-9a-f]{32}")
# Browsers treat "//host" and "/\host" as another host: never let a path start like that.
LEADING_SLASHES_RE = re.compile(r"^[/\\]+")


class ReferralLinkMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info.startswith(SKIPPED_PREFIXES):
            return self.get_response(request)
        if request.method == "GET" and REF_PARAM in request.GET:
            response = follow_referral_link(request)
        else:
            response = self.get_response(request)
        if request.COOKIES.get(VISITOR_COOKIE) != visitor_id(request):
            response.set_cookie(
                VISITOR_COOKIE,
                visitor_id(request),
                max_age=VISITOR_COOKIE_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        return response


def follow_referral_link(request) -> HttpResponseRedirect:
    """Record the click of a valid code; whatever the code, land on the same page without it.

    No database round trip in the usual case: the code and the template come from the caches of
    `referrals.attribution.clicks` and the click's row is written after the answer, in a batch.
    """
    response = HttpResponseRedirect(clean_redirect_url(request))
    code = request.GET.get(REF_PARAM, "").strip().lower()
    if not CODE_RE.fullmatch(code):
        return response
    try:
        referrer_id = clicks.referrer_for_code(code)
        if referrer_id is None:
            return response
        if is_bot(request) or over_click_rate(request):
            # Crawlers and link previews are not clicks, and one IP cannot inflate a link's
            # clicks: the visitor still lands on the page, nothing is counted or attributed.
            return response
        keep_earlier = settings.REFERRAL["ATTRIBUTION_MODEL"] == "first" and has_live_attribution(request)
        template_external_id, template_id = _template_of(request)
        click = clicks.record_click(
            referrer_id=referrer_id,
            visitor_id=visitor_id(request),
            ip_hash=hash_ip(client_ip(request)),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            path=request.path,
            template_id=template_id,
        )
    except DatabaseError:
        # A click we fail to count must not cost the visitor the page.
        log.exception("could not record a referral click for code %s", code)
        return response
    if not keep_earlier:
        remember_click(request, response, code=code, click=click, template=template_external_id)
    return response


def remember_click(request, response, *, code: str, click: clicks.PendingClick, template: str) -> None:
    """Put the click in the signed attribution cookie (also used by the redirect links, /r/)."""
    value = {"code": code, "click": click.public_id.hex, "template": template}
    # What `response.set_signed_cookie` writes (and `request.get_signed_cookie` reads), with the
    # signer built once per process instead of once per click.
    name = settings.REFERRAL["COOKIE_NAME"]
    response.set_cookie(
        name,
        _cookie_signer(name + COOKIE_SALT).sign(_encode(value)),
        max_age=_window_seconds(),
        httponly=True,
        samesite="Lax",
        secure=request.is_secure(),
    )


BOT_RE = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|facebookexternalhit|embedly|preview|python-requests|"
    r"curl/|wget/|go-http-client|httpclient|headlesschrome.*lighthouse",
    re.IGNORECASE,
)


def is_bot(request) -> bool:
    return is_crawler(request.META.get("HTTP_USER_AGENT", ""))


def is_crawler(user_agent: str) -> bool:
    return bool(BOT_RE.search(user_agent))


def over_click_rate(request) -> bool:
    return over_ip_click_rate(client_ip(request))


def over_ip_click_rate(ip: str) -> bool:
    """At most N counted clicks per IP per minute, counted atomically in the cache (Redis or local)."""
    limit = settings.REFERRAL["CLICKS_PER_IP_PER_MINUTE"]
    if not limit:
        return False
    key = f"ref-clicks:{hash_ip(ip)}:{int(time.time() // 60)}"
    try:
        cache.add(key, 0, timeout=120)
        return cache.incr(key) > limit
    except ValueError:  # the key expired between add and incr: this is the first click of a new minute
        cache.set(key, 1, timeout=120)
        return False
    except Exception:  # the cache is down (the Redis client raises its own errors): do not limit
        log.warning("click rate limit skipped: cache unavailable", exc_info=True)
        return False


def clean_redirect_url(request) -> str:
    """The current path and query without `ref`, as a same-host relative URL."""
    path = LEADING_SLASHES_RE.sub("/", request.path) or "/"
    url = escape_uri_path(path)
    if len(request.GET) > 1:  # copying the query is the costly part; most links carry only `ref`
        query = request.GET.copy()
        query.pop(REF_PARAM, None)
        url = f"{url}?{query.urlencode()}"
    if not url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return "/"
    return url


def visitor_id(request) -> str:
    """The visitor's id from the `vid` cookie, or a new one that this response will set."""
    if not hasattr(request, "_referral_visitor_id"):
        request._referral_visitor_id = existing_visitor_id(request) or secrets.token_hex(16)
    return request._referral_visitor_id


def existing_visitor_id(request) -> str:
    value = request.COOKIES.get(VISITOR_COOKIE, "")
    return value if VISITOR_RE.fullmatch(value) else ""


def hash_ip(ip: str) -> str:
    if not ip:
        return ""
    return hmac.new(settings.SECRET_KEY.encode(), ip.encode(), hashlib.sha256).hexdigest()


def read_referral_cookie(request) -> dict | None:
    """The remembered click ({"code", "click", "template"}) if the cookie is intact and in the window."""
    raw = request.get_signed_cookie(
        settings.REFERRAL["COOKIE_NAME"], default=None, salt=COOKIE_SALT, max_age=_window_seconds()
    )
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return None
    if not isinstance(data, dict) or not CODE_RE.fullmatch(str(data.get("code", ""))):
        return None
    return data


def has_live_attribution(request) -> bool:
    """A remembered click whose code still refers (for the "first click wins" model)."""
    data = read_referral_cookie(request)
    return bool(data) and Account.objects.filter(referral_code=data["code"], code_enabled=True).exists()


def _template_of(request) -> tuple[str, int | None]:
    """A template page's (external id, template id); ("", None) on any other page."""
    if not request.path_info.startswith(_template_prefix(get_urlconf() or settings.ROOT_URLCONF)):
        return "", None  # resolving the URL costs more than the rest of the click: only where it can match
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return "", None
    if match.url_name not in TEMPLATE_URL_NAMES:
        return "", None
    external_id = match.kwargs.get("external_id", "")
    template_id = clicks.template_for(external_id)
    return (external_id, template_id) if template_id is not None else ("", None)


@functools.lru_cache(maxsize=8)
def _template_prefix(urlconf: str) -> str:
    """The path that every template page starts with ("/t/")."""
    return reverse("template_page_bare", kwargs={"external_id": "x"}, urlconf=urlconf).removesuffix("x")


def _cookie_signer(salt: str):
    return _signer(settings.SIGNING_BACKEND, settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS), salt)


@functools.lru_cache(maxsize=8)
def _signer(backend: str, key: str, fallback_keys: tuple, salt: str):
    # Keyed by the settings it is made from, so a rotated key makes a new signer.
    return signing.get_cookie_signer(salt=salt)


def _encode(value: dict) -> str:
    # JSON in base64url: cookie-safe characters, so no quoting games between browsers and servers.
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def _window_seconds() -> int:
    return settings.REFERRAL["ATTRIBUTION_WINDOW_DAYS"] * 24 * 3600

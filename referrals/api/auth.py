"""Bearer API key authentication, per-scope permissions and a per-key rate limit for the API."""
import logging
import time

import redis
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.throttling import BaseThrottle

from ..models import ApiKey
from .keys import api_key_find, api_key_touch

log = logging.getLogger(__name__)

DEFAULT_RATE = "6000/minute"
# Failed authentications (wrong, malformed, revoked or expired keys) per client IP and window.
DEFAULT_FAILURE_RATE = "20/minute"


class ApiClient:
    """`request.user` for a key: an integration is not a Django user, but DRF wants one."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    def __init__(self, key: ApiKey):
        self.key = key
        self.pk = None

    def __str__(self) -> str:
        return f"API key {self.key.name}"


class ApiKeyAuthentication:
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # DRF answers 401 not_authenticated
        failures = FailedAuthentications(request)
        # Over the limit, the IP is refused before its key is even looked at: a guess that happens
        # to be right cannot be told from a wrong one until the window has passed.
        failures.refuse_if_over()
        try:
            return self._authenticate(header)
        except exceptions.AuthenticationFailed:
            failures.count()
            raise

    def _authenticate(self, header: str):
        scheme, _, plaintext = header.strip().partition(" ")
        plaintext = plaintext.strip()
        if scheme.lower() != self.keyword.lower() or not plaintext or " " in plaintext:
            raise exceptions.AuthenticationFailed(
                "the Authorization header must read 'Bearer <api key>'", code="invalid_authorization")
        key = api_key_find(plaintext)
        if key is None:
            raise exceptions.AuthenticationFailed("invalid API key", code="invalid_key")
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("this API key has been revoked", code="key_revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("this API key has expired", code="key_expired")
        api_key_touch(key=key, now=now)
        return ApiClient(key), key

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) when the key is missing or wrong.
        return f'{self.keyword} realm="api"'


class ScopePermission(BasePermission):
    """Used bare, it refuses everything: an endpoint that forgets to name its scope is closed."""

    scope: str = ""
    # Keys bound to one account only read that account (see keys.ACCOUNT_KEY_SCOPES); a
    # scope that reaches every account is refused to them even if an admin granted it.
    account_keys_allowed = False

    def has_permission(self, request, view):
        key = request.auth
        if not isinstance(key, ApiKey):
            return False
        if not self.scope:
            raise exceptions.PermissionDenied("this endpoint is not open to API keys", code="no_scope")
        if not key.has_scope(self.scope):
            raise exceptions.PermissionDenied(f"this API key lacks the '{self.scope}' scope", code="missing_scope")
        if key.account_id is not None and not self.account_keys_allowed:
            raise exceptions.PermissionDenied(
                f"a key bound to one account cannot use the '{self.scope}' scope", code="account_key")
        return True


class CanWriteEvents(ScopePermission):
    scope = ApiKey.Scope.EVENTS_WRITE.value


class CanRead(ScopePermission):
    scope = ApiKey.Scope.READ.value
    account_keys_allowed = True


class IsStaffKey(ScopePermission):
    scope = ApiKey.Scope.STAFF.value


class ApiKeyThrottle(BaseThrottle):
    """Requests per key and fixed window; the rate is REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api_key"].

    Each request is one atomic increment of the key's counter for the current window: INCR
    (+EXPIRE) in Redis when API_THROTTLE_REDIS_URL (default REDIS_URL) is set, shared by every
    server process; otherwise the local-memory cache, whose `incr` is atomic within a process.
    A read-modify-write of a request history (DRF's SimpleRateThrottle, used here before) would
    let concurrent requests overshoot the limit.
    """

    scope = "api_key"
    wait_seconds: float | None = None

    def get_rate(self) -> str:
        rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES") or {}
        return rates.get(self.scope, DEFAULT_RATE)

    def allow_request(self, request, view) -> bool:
        if not isinstance(request.auth, ApiKey):
            return True
        limit, period = parse_rate(self.get_rate())
        now = time.time()
        window = int(now // period)
        count = counters.incr(f"throttle:{self.scope}:{request.auth.prefix}:{window}", ttl=period)
        if count is None or count <= limit:
            return True
        self.wait_seconds = max(period - (now % period), 1)
        return False

    def wait(self) -> float | None:
        return self.wait_seconds

    def get_ident(self, request) -> str:
        """The client IP for any per-IP throttle built on this one: the portal's one client-IP
        function (trusted proxies), not DRF's NUM_PROXIES reading of X-Forwarded-For."""
        from referrals_site.client_ip import client_ip

        return client_ip(request)


class FailedAuthentications:
    """Failed authentications per client IP (referrals_site/client_ip.py) and fixed window, in
    the same atomic counters as the per-key throttle; the rate is
    REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api_auth_failures"]. Past it, 429 with Retry-After
    until the window ends. Correct keys are never counted, so a partner's own IP is only ever
    limited by its own wrong keys."""

    scope = "api_auth_failures"

    def __init__(self, request):
        from referrals_site.client_ip import client_ip

        rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES") or {}
        self.limit, self.period = parse_rate(rates.get(self.scope, DEFAULT_FAILURE_RATE))
        self.now = time.time()
        self.key = f"throttle:{self.scope}:{client_ip(request) or '-'}:{int(self.now // self.period)}"

    def refuse_if_over(self) -> None:
        count = counters.get(self.key)
        if count is not None and count >= self.limit:
            wait = max(int(self.period - (self.now % self.period)), 1)
            raise exceptions.Throttled(
                wait=wait, detail=f"too many failed authentications from this address; retry in {wait} s")

    def count(self) -> None:
        counters.incr(self.key, ttl=self.period)


def parse_rate(rate: str) -> tuple[int, int]:
    """"6000/minute" -> (6000, 60)."""
    number, _, period = rate.partition("/")
    return int(number), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[:1]]


class Counters:
    """Atomic counters with an expiry: Redis when configured, else the local-memory cache."""

    def __init__(self):
        self._redis = None
        self._redis_url = None

    def incr(self, key: str, *, ttl: int) -> int | None:
        url = getattr(settings, "API_THROTTLE_REDIS_URL", "")
        if url:
            return self._incr_redis(url, key, ttl)
        cache.add(key, 0, timeout=ttl + 1)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=ttl + 1)
            return 1

    def get(self, key: str) -> int | None:
        """The counter's value now (0 when absent); None when Redis cannot be reached."""
        url = getattr(settings, "API_THROTTLE_REDIS_URL", "")
        if not url:
            return int(cache.get(key) or 0)
        try:
            return int(self._client(url).get(key) or 0)
        except redis.RedisError:
            log.warning("throttle counters: Redis unreachable, counter not read", exc_info=True)
            return None

    def _client(self, url: str) -> redis.Redis:
        if self._redis is None or self._redis_url != url:
            self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._redis_url = url
        return self._redis

    def _incr_redis(self, url: str, key: str, ttl: int) -> int | None:
        try:
            pipe = self._client(url).pipeline()
            pipe.incr(key)
            pipe.expire(key, ttl + 1, nx=True)
            count, _ = pipe.execute()
            return int(count)
        except redis.RedisError:
            # Rate limiting is protection, not correctness: an unreachable Redis must not take
            # the API down with it. Logged, and the request is let through.
            log.warning("throttle counters: Redis unreachable, request not counted", exc_info=True)
            return None


counters = Counters()

"""Bearer API key authentication, per-scope permissions and a per-key rate limit for the API."""
from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle

from referrals.models import ApiKey

from .keys import api_key_find, api_key_touch

DEFAULT_RATE = "6000/minute"


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


class ApiKeyThrottle(SimpleRateThrottle):
    """Requests per key; the rate is REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api_key"]."""

    scope = "api_key"

    def get_rate(self):
        rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES") or {}
        return rates.get(self.scope, DEFAULT_RATE)

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.prefix}

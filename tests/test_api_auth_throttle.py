"""Failed API authentication is throttled per client IP (issue 15.11): past the limit of wrong,
malformed, revoked or expired keys in a window, that IP gets 429 with Retry-After (even for a
correct key, so guessing cannot be confirmed), while a correct key from another IP is unaffected.
Counted in the cache-backed counters: a real redis-server when one is available, and the
local-memory cache."""
import pytest
from rest_framework.test import APIClient

from referrals.api.keys import api_key_create
from tests.helpers import signup
from tests.test_api_throttle import redis_url  # noqa: F401 - the fixture

LIMIT = 20
ATTACKER, PARTNER, PROXY = "203.0.113.66", "198.51.100.7", "10.0.0.5"


@pytest.fixture(params=["local", "redis"])
def counters(request, settings):
    # Per hour in the tests: the fixed window (a minute by default) never turns mid-test.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_auth_failures": f"{LIMIT}/hour"}}
    settings.API_THROTTLE_REDIS_URL = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    return request.param


@pytest.fixture
def good_key(db):
    signup("alice")
    return api_key_create(name="dash", scopes=["read"])[1]


def _get(key: str, ip: str, **extra):
    api = APIClient(REMOTE_ADDR=ip, **extra)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api.get("/api/v1/accounts/alice")


def test_wrong_keys_from_one_ip_are_throttled_and_other_ips_are_not(counters, good_key):
    answers = [_get(f"rk_wrong{i:04d}", ATTACKER) for i in range(LIMIT + 10)]
    assert [a.status_code for a in answers] == [401] * LIMIT + [429] * 10
    over = answers[-1]
    assert 0 < int(over["Retry-After"]) <= 3600
    assert over.json()["error"]["code"] == "throttled"
    # The attacker's IP is shut out for the window, even with a correct key ...
    assert _get(good_key, ATTACKER).status_code == 429
    # ... the partner's correct key from its own IP is not, and neither is a wrong one there.
    assert _get(good_key, PARTNER).status_code == 200
    assert _get("rk_wrong_partner", PARTNER).status_code == 401


def test_malformed_headers_count_as_failures_too(counters, good_key):
    api = APIClient(REMOTE_ADDR=ATTACKER)
    api.credentials(HTTP_AUTHORIZATION="Basic Zm9vOmJhcg==")
    codes = [api.get("/api/v1/accounts/alice").status_code for _ in range(LIMIT + 1)]
    assert codes == [401] * LIMIT + [429]


def test_correct_keys_are_never_counted(counters, good_key):
    assert {_get(good_key, ATTACKER).status_code for _ in range(LIMIT + 5)} == {200}
    assert _get("rk_wrong", ATTACKER).status_code == 401


def test_behind_a_trusted_proxy_each_visitor_has_its_own_count(counters, good_key, settings):
    settings.REFERRAL = {**settings.REFERRAL, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    codes = [_get(f"rk_wrong{i}", PROXY, HTTP_X_FORWARDED_FOR=ATTACKER).status_code for i in range(LIMIT + 1)]
    assert codes[-1] == 429
    assert _get(good_key, PROXY, HTTP_X_FORWARDED_FOR=PARTNER).status_code == 200
    # A spoofed header does not get the attacker a fresh count.
    assert _get("rk_wrong", PROXY, HTTP_X_FORWARDED_FOR=f"1.2.3.4, {ATTACKER}").status_code == 429

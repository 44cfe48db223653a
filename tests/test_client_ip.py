"""The visitor's IP behind a TLS proxy (issue 15.3): one function (referrals_site/client_ip.py)
reads X-Forwarded-For right to left, but only when the peer is a trusted proxy
(REFERRAL_TRUSTED_PROXIES, CIDRs) or a hop count is configured (REFERRAL_PROXY_COUNT). The click
path's per-IP limit, the sign-up IP signal, the failed-key throttle and django-axes all use it."""
import pytest
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory

from referrals.models import Account, Click, FraudFlag, Referral
from referrals_site.client_ip import client_ip
from tests.helpers import signup

PROXY = "10.0.0.5"
PASSWORD = "a-long-password-42"


def _behind(settings, *, proxies=(), count=0):
    settings.REFERRAL = {**settings.REFERRAL, "TRUSTED_PROXIES": list(proxies), "PROXY_COUNT": count}


def _ip(peer, forwarded=None):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return client_ip(RequestFactory().get("/", REMOTE_ADDR=peer, **extra))


def test_without_configuration_the_header_is_never_trusted(settings):
    _behind(settings)
    assert _ip("203.0.113.9", "198.51.100.1") == "203.0.113.9"


def test_a_trusted_proxy_hands_on_the_rightmost_untrusted_address(settings):
    _behind(settings, proxies=["10.0.0.0/8", "2001:db8::/32"])
    assert _ip(PROXY, "198.51.100.1") == "198.51.100.1"
    # A client-sent (spoofed) prefix is ignored: the proxy appended the real address last.
    assert _ip(PROXY, "1.1.1.1, 198.51.100.1") == "198.51.100.1"
    # Two proxies of ours, the inner one's address in the header too.
    assert _ip(PROXY, "1.1.1.1, 198.51.100.1, 10.0.0.7") == "198.51.100.1"
    assert _ip("2001:db8::1", "2001:db8:1::5, 2a00:1450::1") == "2a00:1450::1"
    assert _ip(PROXY, "198.51.100.1:51234") == "198.51.100.1"
    assert _ip(PROXY, "[2a00:1450::1]:443") == "2a00:1450::1"
    # No header, or garbage where the client should be: the proxy's own address, never garbage.
    assert _ip(PROXY) == PROXY
    assert _ip(PROXY, "not-an-ip") == PROXY
    assert _ip(PROXY, "") == PROXY


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored(settings):
    _behind(settings, proxies=["10.0.0.0/8"])
    assert _ip("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert _ip("203.0.113.9", "10.0.0.1") == "203.0.113.9"


def test_a_hop_count_takes_the_address_that_many_hops_from_the_right(settings):
    _behind(settings, count=1)
    assert _ip(PROXY, "1.1.1.1, 198.51.100.1") == "198.51.100.1"
    _behind(settings, count=2)
    assert _ip(PROXY, "1.1.1.1, 198.51.100.1, 10.0.0.7") == "198.51.100.1"
    assert _ip(PROXY, "198.51.100.1") == PROXY  # fewer hops than configured: not trusted


def test_the_api_throttles_identify_clients_by_the_same_function(settings):
    from rest_framework.request import Request

    from referrals.api.auth import ApiKeyThrottle

    _behind(settings, proxies=["10.0.0.0/8"])
    request = Request(RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.1"))
    assert ApiKeyThrottle().get_ident(request) == "198.51.100.1"
    spoofed = Request(RequestFactory().get("/", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="198.51.100.1"))
    assert ApiKeyThrottle().get_ident(spoofed) == "203.0.113.9"


def test_it_refuses_a_malformed_setting(settings):
    settings.REFERRAL = {**settings.REFERRAL, "TRUSTED_PROXIES": ["not-a-network"], "PROXY_COUNT": 0}
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        _ip(PROXY, "198.51.100.1")


# --------------------------------------------------------------------------- the users of it


def test_two_hundred_visitors_through_the_proxy_are_two_hundred_clicks(settings, db):
    _behind(settings, proxies=["10.0.0.0/8"])
    alice = signup("alice")
    for i in range(200):
        Client().get("/", {"ref": alice.referral_code}, REMOTE_ADDR=PROXY,
                     HTTP_X_FORWARDED_FOR=f"198.51.{i // 250}.{i % 250 + 1}")
    assert Click.objects.filter(referrer=alice).count() == 200


def test_one_untrusted_peer_cannot_spoof_its_way_past_the_per_ip_limit(settings, db):
    _behind(settings, proxies=["10.0.0.0/8"])
    alice = signup("alice")
    for i in range(60):
        Client().get("/", {"ref": alice.referral_code}, REMOTE_ADDR="203.0.113.9",
                     HTTP_X_FORWARDED_FOR=f"198.51.100.{i + 1}")
    assert Click.objects.filter(referrer=alice).count() == settings.REFERRAL["CLICKS_PER_IP_PER_MINUTE"]


def _portal_sign_up(email, visitor_ip, code=None):
    browser = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=visitor_ip)
    if code:
        browser.get("/", {"ref": code})
    answer = browser.post("/signup/", {"email": email, "password1": PASSWORD, "password2": PASSWORD})
    assert answer.status_code == 302, answer.content
    return Account.objects.get(user__username=email)


def test_two_strangers_through_the_proxy_are_not_one_sign_up_ip(settings, db):
    _behind(settings, proxies=["10.0.0.0/8"])
    dana = _portal_sign_up("dana@example.com", "198.51.100.1")
    erin = _portal_sign_up("erin@example.org", "198.51.100.2", code=dana.referral_code)
    assert (dana.signup_ip, erin.signup_ip) == ("198.51.100.1", "198.51.100.2")
    referral = Referral.objects.get(referred=erin)
    assert referral.referrer == dana
    assert not FraudFlag.objects.filter(referral=referral).exists()
    # The same visitor twice still is.
    frank = _portal_sign_up("frank@example.net", "198.51.100.1", code=dana.referral_code)
    flag = FraudFlag.objects.get(referral__referred=frank)
    assert {"signal": "same_ip", "detail": "198.51.100.1"} in flag.signals


def test_axes_locks_the_attacker_out_not_everyone_behind_the_proxy(settings, db):
    _behind(settings, proxies=["10.0.0.0/8"])
    settings.AXES_ENABLED = True
    get_user_model().objects.create_user("alice@example.com", "alice@example.com", PASSWORD)
    attacker = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.66")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attacker.post("/login/", {"username": "alice@example.com", "password": "wrong"})
    assert attacker.post("/login/", {"username": "alice@example.com", "password": PASSWORD}).status_code == 429
    alice = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert alice.post("/login/", {"username": "alice@example.com", "password": PASSWORD}).status_code == 302

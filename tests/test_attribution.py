"""SPEC "Referral links and attribution": clicks, the attribution cookie, safe redirects, sign-up."""
import hashlib
import hmac
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import Client, RequestFactory
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from referrals.attribution.middleware import read_referral_cookie
from referrals.models import Account, Click, Referral, Template
from tests.helpers import event, push, signup

PASSWORD = "Sturdy-pass-9911"


@pytest.fixture
def alice(db):
    return signup("alice")


@pytest.fixture
def bob(db):
    return signup("bob")


def remembered(client: Client) -> dict | None:
    """What the attribution cookie in the client's jar says, read the way the portal reads it."""
    request = RequestFactory().get("/")
    request.COOKIES = {name: morsel.value for name, morsel in client.cookies.items()}
    return read_referral_cookie(request)


def sign_up(client: Client, email: str = "carol@example.com"):
    return client.post("/signup/", {"email": email, "password1": PASSWORD, "password2": PASSWORD})


def new_account(email: str = "carol@example.com") -> Account:
    return Account.objects.get(user__username=email)


# --------------------------------------------------------------------------- clicks and the cookie


def test_it_records_a_click_and_redirects_to_the_same_page_without_the_code(client, alice):
    response = client.get("/", {"ref": alice.referral_code, "utm_source": "news", "page": "2"})
    assert response.status_code == 302
    assert response["Location"] == "/?utm_source=news&page=2"
    click = Click.objects.get()
    assert click.referrer == alice and click.is_unique and click.path == "/"
    assert click.visitor_id == client.cookies["vid"].value
    expected_hash = hmac.new(settings.SECRET_KEY.encode(), b"127.0.0.1", hashlib.sha256).hexdigest()
    assert click.ip_hash == expected_hash, "the IP is kept only as a keyed hash"


def test_it_remembers_the_click_in_a_signed_httponly_cookie_for_the_window(client, alice):
    client.get("/signup/", {"ref": alice.referral_code})
    click = Click.objects.get()
    assert remembered(client) == {"code": alice.referral_code, "click": click.public_id.hex, "template": ""}
    cookie = client.cookies[settings.REFERRAL["COOKIE_NAME"]]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["max-age"] == settings.REFERRAL["ATTRIBUTION_WINDOW_DAYS"] * 24 * 3600


def test_it_refuses_a_cookie_that_was_tampered_with(client, alice):
    client.get("/", {"ref": alice.referral_code})
    name = settings.REFERRAL["COOKIE_NAME"]
    client.cookies[name] = client.cookies[name].value[:-2] + "xx"
    assert remembered(client) is None


def test_it_accepts_an_upper_case_code(client, alice):
    response = client.get("/", {"ref": alice.referral_code.upper()})
    assert response["Location"] == "/"
    assert Click.objects.get().referrer == alice


def test_it_counts_a_repeat_click_within_the_window_once_as_unique(client, alice):
    client.get("/", {"ref": alice.referral_code})
    client.get("/", {"ref": alice.referral_code})
    Client().get("/", {"ref": alice.referral_code})  # another visitor
    assert Click.objects.count() == 3
    assert Click.objects.filter(is_unique=True).count() == 2
    first, repeat, other = Click.objects.order_by("id")
    assert first.visitor_id == repeat.visitor_id != other.visitor_id
    assert not repeat.is_unique


def test_it_counts_a_click_after_the_window_as_unique_again(client, alice):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client.get("/", {"ref": alice.referral_code})
        clock.shift(timedelta(seconds=settings.REFERRAL["CLICK_UNIQUE_WINDOW"], minutes=1))
        client.get("/", {"ref": alice.referral_code})
    assert Click.objects.filter(is_unique=True).count() == 2


def test_it_counts_one_visitor_as_unique_for_each_referrer(client, alice, bob):
    client.get("/", {"ref": alice.referral_code})
    client.get("/", {"ref": bob.referral_code})
    assert Click.objects.filter(is_unique=True).count() == 2


@pytest.mark.parametrize("code", ["zz9zz9zz", "abc", "abcdefghi", "abc-defg", "ab cdefg", "../../..", "", "é" * 8])
def test_it_lands_normally_on_an_unknown_or_malformed_code(client, alice, code):
    response = client.get("/dashboard/", {"ref": code, "tab": "stats"})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/?tab=stats"
    assert not Click.objects.exists()
    assert settings.REFERRAL["COOKIE_NAME"] not in response.cookies


def test_it_lands_normally_on_a_disabled_code(client, alice):
    Account.objects.filter(pk=alice.pk).update(code_enabled=False)
    response = client.get("/", {"ref": alice.referral_code})
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Click.objects.exists()
    assert settings.REFERRAL["COOKIE_NAME"] not in response.cookies


def test_it_leaves_the_api_and_the_admin_alone(client, alice):
    response = client.get("/admin/login/", {"ref": alice.referral_code})
    assert response.status_code == 200
    client.get("/api/v1/", {"ref": alice.referral_code})
    assert not Click.objects.exists()


def test_it_only_follows_links_on_get(client, alice):
    client.post(f"/signup/?ref={alice.referral_code}", {})
    assert not Click.objects.exists()


# --------------------------------------------------------------------------- no open redirect

OPEN_REDIRECT_PATHS = ["//evil.com", "/\\evil.com", "///evil.com", "/%2F%2Fevil.com", "/\\\\evil.com",
                       "/%5Cevil.com", "//evil.com/%2F..", "/\t/evil.com", "//\\evil.com"]


def _assert_same_host(location: str) -> None:
    assert location.startswith("/")
    assert not location.startswith(("//", "/\\")), location
    assert url_has_allowed_host_and_scheme(location, allowed_hosts={"testserver"})


@pytest.mark.parametrize("path", OPEN_REDIRECT_PATHS)
@pytest.mark.parametrize("valid_code", [True, False])
def test_it_never_redirects_to_another_host(client, alice, path, valid_code):
    code = alice.referral_code if valid_code else "nope"
    if any(ord(char) < 0x20 for char in path):  # no page's path holds a control character (referrals_site.text)
        assert client.get("/", {"ref": code}, PATH_INFO=path).status_code == 404
        return
    # As the WSGI server hands it over (already percent-decoded by the test client) ...
    response = client.get(f"{path}?ref={code}&x=1")
    _assert_same_host(response["Location"])
    # ... and with PATH_INFO forced verbatim, since the client parses a leading "//" as a host.
    response = client.get("/", {"ref": code, "x": "1"}, PATH_INFO=path)
    if any(ord(char) < 32 for char in path):
        # A path holding control characters is no page's address: the text check answers 404
        # before any redirect is built (referrals_site/text.py).
        assert response.status_code == 404
        return
    assert response.status_code == 302
    _assert_same_host(response["Location"])
    assert response["Location"].endswith("?x=1")


def test_it_collapses_leading_slashes_into_one(client, alice):
    response = client.get("/", {"ref": alice.referral_code}, PATH_INFO="//evil.com")
    assert response["Location"] == "/evil.com"


# --------------------------------------------------------------------------- sign-up attribution


def test_it_attributes_a_sign_up_through_a_referral_link(client, alice):
    client.get("/", {"ref": alice.referral_code})
    click = Click.objects.get()
    response = sign_up(client)
    assert response.status_code == 302 and response["Location"] == "/dashboard/"
    carol = new_account()
    referral = Referral.objects.get(referred=carol)
    assert referral.referrer == alice and referral.click == click
    assert carol.external_id.startswith("portal-") and carol.email == "carol@example.com"
    assert carol.device_id == client.cookies["vid"].value and carol.signup_ip == "127.0.0.1"
    assert client.cookies[settings.REFERRAL["COOKIE_NAME"]].value == "", "the attribution cookie is spent"
    assert client.get("/dashboard/").status_code == 200, "the new user is logged in"


def test_it_signs_up_without_a_cookie_unattributed(client, alice):
    response = sign_up(client)
    assert response.status_code == 302
    assert not Referral.objects.exists()
    assert new_account().user.get_username() == "carol@example.com"


def test_it_still_signs_up_when_the_code_was_disabled_since_the_click(client, alice):
    client.get("/", {"ref": alice.referral_code})
    Account.objects.filter(pk=alice.pk).update(code_enabled=False)
    response = sign_up(client)
    assert response.status_code == 302
    assert new_account() and not Referral.objects.exists()


def test_it_still_signs_up_when_the_remembered_click_is_gone(client, alice):
    client.get("/", {"ref": alice.referral_code})
    Click.objects.all().delete()
    assert sign_up(client).status_code == 302
    # The unknown click is ignored (a warning); the remembered code still attributes the account.
    assert new_account() and Referral.objects.get().referrer == alice


def test_it_ignores_a_tampered_cookie_at_sign_up(client, alice):
    client.cookies[settings.REFERRAL["COOKIE_NAME"]] = "eyJjb2RlIjoiYWxpY2UifQ:forged:signature"
    assert sign_up(client).status_code == 302
    assert not Referral.objects.exists()


@pytest.mark.parametrize("trailing_slash", ["", "/"])
def test_it_attributes_a_template_link_to_the_creator_and_records_the_template(client, alice, trailing_slash):
    push(event("template.published", "alice", template="sd-webui", name="Stable Diffusion WebUI"))
    template = Template.objects.get(external_id="sd-webui")
    response = client.get(f"/t/sd-webui{trailing_slash}", {"ref": alice.referral_code})
    assert response["Location"] == f"/t/sd-webui{trailing_slash}"
    assert client.get(response["Location"]).status_code == 200
    click = Click.objects.get()
    assert click.template == template
    assert remembered(client)["template"] == "sd-webui"
    sign_up(client)
    referral = Referral.objects.get(referred=new_account())
    assert referral.referrer == alice and referral.template == template and referral.click == click


def test_it_follows_the_template_link_the_model_builds(client, alice):
    push(event("template.published", "alice", template="sd-webui"))
    link = Template.objects.get().referral_link.removeprefix(settings.SITE_URL)
    response = client.get(link)
    assert response.status_code == 302 and response["Location"] == "/t/sd-webui"
    assert Click.objects.get().template.external_id == "sd-webui"


def test_it_lets_the_last_click_win_by_default(client, alice, bob):
    client.get("/", {"ref": alice.referral_code})
    client.get("/", {"ref": bob.referral_code})
    sign_up(client)
    assert Referral.objects.get().referrer == bob


def test_it_keeps_the_first_code_under_the_first_click_model(client, alice, bob, settings):
    settings.REFERRAL = {**settings.REFERRAL, "ATTRIBUTION_MODEL": "first"}
    client.get("/", {"ref": alice.referral_code})
    client.get("/", {"ref": bob.referral_code})
    assert Click.objects.count() == 2, "every click is still counted"
    assert remembered(client)["code"] == alice.referral_code
    sign_up(client)
    referral = Referral.objects.get()
    assert referral.referrer == alice and referral.click == Click.objects.filter(referrer=alice).get()


def test_it_lets_a_later_click_win_under_the_first_click_model_once_the_first_code_is_disabled(
        client, alice, bob, settings):
    settings.REFERRAL = {**settings.REFERRAL, "ATTRIBUTION_MODEL": "first"}
    client.get("/", {"ref": alice.referral_code})
    Account.objects.filter(pk=alice.pk).update(code_enabled=False)
    client.get("/", {"ref": bob.referral_code})
    sign_up(client)
    assert Referral.objects.get().referrer == bob


def test_it_ignores_a_click_older_than_the_attribution_window(db):
    from referrals.engine.services import ingest_event
    from referrals.models import Click, Referral
    from tests.helpers import at, event, signup

    alice = signup("alice")
    click = Click.objects.create(referrer=alice, visitor_id="v" * 32, created_at=at(0))
    stale = ingest_event(event("account.created", "bob", email="bob@example.com", click_id=str(click.pk), when=at(31)))
    assert stale.status == "accepted"
    assert [(w["field"], w["code"]) for w in stale.warnings] == [("click_id", "click_expired")]
    assert not Referral.objects.filter(referred__external_id="bob").exists()
    fresh = ingest_event(event("account.created", "carol", email="carol@example.com", click_id=str(click.pk),
                               when=at(29)))
    assert fresh.status == "accepted" and not fresh.warnings
    assert Referral.objects.get(referred__external_id="carol").referrer == alice


def test_it_refuses_template_ids_that_cannot_appear_in_a_link(db):
    from referrals.engine.services import ingest_event
    from tests.helpers import event, signup

    signup("alice")
    result = ingest_event(event("template.published", "alice", template="a b/c?"))
    assert result.status == "rejected" and list(result.fields) == ["template"]


def test_it_does_not_count_crawlers_or_link_previews_as_clicks(client, db):
    from referrals.models import Click
    from tests.helpers import signup

    alice = signup("alice")
    for agent in ("Googlebot/2.1 (+http://www.google.com/bot.html)", "facebookexternalhit/1.1",
                  "Slackbot-LinkExpanding 1.0", "python-requests/2.32"):
        response = client.get(f"/?ref={alice.referral_code}", HTTP_USER_AGENT=agent)
        assert response.status_code == 302 and response["Location"] == "/"
    assert not Click.objects.exists()
    client.get(f"/?ref={alice.referral_code}", HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
    assert Click.objects.count() == 1


def test_it_counts_at_most_the_limit_of_clicks_per_ip_and_minute(client, db, settings):
    from django.core.cache import cache

    from referrals.models import Click
    from tests.helpers import signup

    cache.clear()
    settings.REFERRAL = {**settings.REFERRAL, "CLICKS_PER_IP_PER_MINUTE": 5}
    alice = signup("alice")
    for _ in range(8):
        client.cookies.clear()
        assert client.get(f"/?ref={alice.referral_code}", REMOTE_ADDR="198.51.100.9").status_code == 302
    assert Click.objects.count() == 5
    client.get(f"/?ref={alice.referral_code}", REMOTE_ADDR="198.51.100.10")
    assert Click.objects.count() == 6, "another IP is not limited"

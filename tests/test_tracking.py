"""Issue 14 items 2-4: clicks on the operator's own site.

The tracking script's public call (`POST /api/v1/track/click`: CORS limited to the configured
origins, crawlers, bursts, hostile bodies), the redirect links (`/r/CODE`, never to another host)
and the server-side click call (`POST /api/v1/clicks`). All of them record through the portal's
own click path; the real browser run is in tests/test_tracking_browser.py.
"""
import json
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from referrals.api.keys import api_key_create
from referrals.attribution.middleware import hash_ip, read_referral_cookie
from referrals.models import Account, Click, Referral, Template
from tests.helpers import event, push, signup

OPERATOR = "https://operator.example"
TRACK = "/api/v1/track/click"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture(autouse=True)
def _operator_site(settings):
    settings.REFERRAL = {**settings.REFERRAL, "TRACKING_ORIGINS": [OPERATOR, "http://127.0.0.2:8080"],
                         "LANDING_URL": f"{OPERATOR}/welcome?utm_source=portal",
                         "TEMPLATE_URL": f"{OPERATOR}/templates/{{template}}"}


@pytest.fixture
def alice(db):
    return signup("alice")


def track(body, *, origin: str | None = OPERATOR, ua: str = BROWSER_UA, ip: str = "203.0.113.7", raw: bool = False):
    headers = {"HTTP_USER_AGENT": ua, "REMOTE_ADDR": ip}
    if origin is not None:
        headers["HTTP_ORIGIN"] = origin
    data = body if raw else json.dumps(body)
    return Client().post(TRACK, data=data, content_type="application/json", **headers)


def pusher() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='billing', scopes=['events:write'])[1]}")
    return client


# --------------------------------------------------------------------------- the public call


def test_it_records_a_click_from_the_operators_site_and_answers_its_id(alice):
    before = timezone.now()
    response = track({"code": alice.referral_code, "url": f"{OPERATOR}/pricing?ref={alice.referral_code}&t=secret",
                      "referrer": "https://news.example/", "visitor": "ab" * 16})
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == OPERATOR
    assert "Origin" in response["Vary"]
    body = response.json()
    click = Click.objects.get()
    assert body["status"] == "recorded" and body["code"] == alice.referral_code
    assert body["click_id"] == str(click.public_id)
    window = timedelta(days=30)
    assert before.replace(microsecond=0) + window <= parse_datetime(body["expires_at"]) <= timezone.now() + window
    assert click.referrer == alice and click.is_unique and click.visitor_id == "ab" * 16
    assert click.path == f"{OPERATOR}/pricing", "the page is kept without its query string"
    assert click.ip_hash == hash_ip("203.0.113.7")


def test_it_counts_a_visitors_repeat_click_once_as_unique(alice):
    for _ in range(3):
        assert track({"code": alice.referral_code, "visitor": "cd" * 16}).json()["status"] == "recorded"
    assert Click.objects.count() == 3 and Click.objects.filter(is_unique=True).count() == 1


def test_it_attributes_the_sign_up_that_sends_the_click_id(alice):
    click_id = track({"code": alice.referral_code}).json()["click_id"]
    result = push(event("account.created", "carol", email="carol@example.com", click_id=click_id,
                        when=timezone.now()))
    assert result
    referral = Referral.objects.get(referred__external_id="carol")
    assert referral.referrer == alice and str(referral.click.public_id) == click_id


def test_it_answers_a_preflight_from_a_configured_origin(alice):
    response = Client().options(TRACK, HTTP_ORIGIN=OPERATOR, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                                HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == OPERATOR
    assert response["Access-Control-Allow-Methods"] == "POST"
    assert response["Access-Control-Allow-Headers"] == "content-type"
    assert int(response["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response


def test_it_refuses_a_preflight_from_another_origin_without_cors_headers(alice):
    response = Client().options(TRACK, HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response
    assert response.json()["error"]["code"] == "origin_not_allowed"


@pytest.mark.parametrize("origin", ["https://evil.example", "https://operator.example.evil.example",
                                    "http://operator.example", "https://operator.example:8443", "null", None])
def test_it_refuses_a_call_from_an_origin_not_configured_and_records_nothing(alice, origin):
    response = track({"code": alice.referral_code}, origin=origin)
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response
    error = response.json()["error"]
    assert error["code"] == "origin_not_allowed" and "REFERRAL_TRACKING_ORIGINS" in error["message"]
    assert not Click.objects.exists()


def test_it_answers_an_unknown_malformed_or_disabled_code_with_a_null_click(alice):
    Account.objects.filter(pk=alice.pk).update(code_enabled=False)
    for code in ("zz9zz9zz", "not a code", "", "x" * 64, alice.referral_code):
        response = track({"code": code})
        assert response.status_code == 200, code
        assert response.json() == {"status": "unknown_code", "click_id": None, "code": None, "expires_at": None}
    assert not Click.objects.exists()


@pytest.mark.parametrize("ua", ["Googlebot/2.1 (+http://www.google.com/bot.html)",
                                "facebookexternalhit/1.1", "Slackbot-LinkExpanding 1.0", "curl/8.5.0"])
def test_it_does_not_count_crawlers(alice, ua):
    response = track({"code": alice.referral_code}, ua=ua)
    assert response.status_code == 200
    assert response.json()["status"] == "crawler" and response.json()["click_id"] is None
    assert not Click.objects.exists()


def test_it_limits_counted_clicks_per_ip_like_the_portals_own_links(alice, settings):
    settings.REFERRAL = {**settings.REFERRAL, "CLICKS_PER_IP_PER_MINUTE": 3}
    answers = [track({"code": alice.referral_code}, ip="198.51.100.9").status_code for _ in range(5)]
    assert answers == [200, 200, 200, 429, 429]
    assert Click.objects.count() == 3
    refused = track({"code": alice.referral_code}, ip="198.51.100.9")
    assert refused.json()["error"]["code"] == "rate_limited" and refused["Retry-After"]
    assert refused["Access-Control-Allow-Origin"] == OPERATOR, "the script can read why"
    # The same budget as `?ref=` links on the portal: that IP's portal clicks are not counted either.
    Client(REMOTE_ADDR="198.51.100.9").get("/", {"ref": alice.referral_code})
    assert Click.objects.count() == 3
    assert track({"code": alice.referral_code}, ip="198.51.100.10").status_code == 200


def test_it_limits_calls_per_ip_even_with_made_up_codes(db, settings):
    settings.REFERRAL = {**settings.REFERRAL, "TRACK_REQUESTS_PER_IP_PER_MINUTE": 5}
    answers = [track({"code": f"zz{i:06d}"}, ip="192.0.2.1").status_code for i in range(7)]
    assert answers == [200] * 5 + [429] * 2
    assert track({"code": "zz000001"}, ip="192.0.2.2").status_code == 200


@pytest.mark.parametrize("body, field", [
    ([1, 2], "body"),
    ("just a string", "body"),
    ({}, "code"),
    ({"code": None}, "code"),
    ({"code": ["a"]}, "code"),
    ({"code": {"$gt": ""}}, "code"),
    ({"code": "abcd1234", "extra": 1}, "extra"),
    ({"code": "abcd\u00001234"}, "code"),
    ({"code": "abcd1234", "url": "x" * 5000}, "url"),
    ({"code": "abcd1234", "visitor": "../../etc/passwd"}, "visitor"),
    ({"code": "abcd1234", "template": "t" * 500}, "template"),
    ({"code": "abcd1234", "referrer": {"a": 1}}, "referrer"),
])
def test_it_refuses_hostile_bodies_naming_the_field(alice, body, field):
    response = track(body)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Click.objects.exists()


@pytest.mark.parametrize("raw, field", [
    ("{not json", "body"),
    ('{"code": "\\ud800abcdefg"}', "code"),
    ("\xff\xfe", "body"),
    ("[" * 100_000, "body"),
    ('{"code": "' + "a" * 20_000 + '"}', "body"),
])
def test_it_refuses_broken_json_lone_surrogates_and_oversized_bodies(alice, raw, field):
    response = track(raw, raw=True)
    assert response.status_code in (400, 413), response.content
    assert field in response.json()["error"]["fields"]
    assert not Click.objects.exists()


def test_it_ignores_an_api_key_and_a_portal_session_on_the_public_call(alice):
    response = Client().post(TRACK, data=json.dumps({"code": alice.referral_code}), content_type="application/json",
                             HTTP_ORIGIN=OPERATOR, HTTP_AUTHORIZATION="Bearer rk_forged_key")
    assert response.status_code == 200 and response.json()["status"] == "recorded"


def test_it_keeps_an_unknown_template_out_of_the_click(alice):
    push(event("template.published", "alice", template="comfy", name="Comfy"))
    assert track({"code": alice.referral_code, "template": "comfy"}).json()["status"] == "recorded"
    assert track({"code": alice.referral_code, "template": "nope"}).json()["status"] == "recorded"
    assert [c.template.external_id if c.template else None for c in Click.objects.order_by("id")] == ["comfy", None]


def test_it_serves_the_tracking_script_as_a_static_file(db):
    response = Client().get("/static/referrals/track.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = body.decode()
    assert "/api/v1/track/click" in text and "window.Referral" in text
    assert "eval(" not in text and "new Function" not in text and "innerHTML" not in text


# --------------------------------------------------------------------------- redirect links


def test_it_redirects_to_the_landing_url_with_the_code_and_click_id(alice):
    response = Client(HTTP_USER_AGENT=BROWSER_UA).get(f"/r/{alice.referral_code}")
    assert response.status_code == 302
    assert response["Cache-Control"] == "no-store"
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{OPERATOR}/welcome"
    query = parse_qs(target.query)
    click = Click.objects.get()
    assert query == {"utm_source": ["portal"], "ref": [alice.referral_code], "click_id": [str(click.public_id)]}
    assert click.referrer == alice and click.path == f"/r/{alice.referral_code}"


def test_it_sends_a_template_link_to_the_templates_page(alice):
    push(event("template.published", "alice", template="comfy-ui", name="Comfy"))
    response = Client(HTTP_USER_AGENT=BROWSER_UA).get(f"/r/{alice.referral_code.upper()}/t/comfy-ui")
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{OPERATOR}/templates/comfy-ui"
    assert parse_qs(target.query)["ref"] == [alice.referral_code]
    assert Click.objects.get().template.external_id == "comfy-ui"


def test_it_sends_an_unknown_code_or_template_to_the_landing_url_without_attribution(alice):
    for path in ("/r/zz9zz9zz", "/r/zz9zz9zz/t/comfy", "/r/%2F%2Fevil.example", "/r/..%5C..%5Cevil"):
        response = Client().get(path)
        assert response.status_code == 302, path
        assert response["Location"] == f"{OPERATOR}/welcome?utm_source=portal", path
    response = Client(HTTP_USER_AGENT=BROWSER_UA).get(f"/r/{alice.referral_code}/t/nope")
    assert urlsplit(response["Location"]).path == "/welcome"
    assert Click.objects.get().template is None


@pytest.mark.parametrize("template", ["%2F%2Fevil.example", "..", "%40evil.example", "a%3A%2F%2Fevil.example",
                                      "x%0D%0ALocation%3A%20https%3A%2F%2Fevil.example"])
def test_it_never_redirects_to_another_host(alice, template):
    # Even a template whose id was made to look like a URL (written past the event validation)
    # leaves the visitor on the configured host.
    Template.objects.create(external_id=unquote(template), creator=alice)
    response = Client(HTTP_USER_AGENT=BROWSER_UA).get(f"/r/{alice.referral_code}/t/{template}?next=https://evil.example")
    if "%0D" in template:
        # A path holding control characters is no page's address: the text check answers 404.
        assert response.status_code == 404
        return
    assert response.status_code == 302
    location = response["Location"]
    assert urlsplit(location).netloc == "operator.example", location
    assert "evil" not in urlsplit(location).netloc and "\n" not in location


def test_it_stays_on_the_portal_when_no_landing_url_is_configured(alice, settings):
    settings.REFERRAL = {**settings.REFERRAL, "LANDING_URL": "", "TEMPLATE_URL": ""}
    settings.SITE_URL = "http://testserver"
    client = Client(HTTP_USER_AGENT=BROWSER_UA)
    response = client.get(f"/r/{alice.referral_code}")
    assert response["Location"] == "http://testserver/"
    click = Click.objects.get()
    # The portal's own page would count a `?ref=` again: the click goes into its cookie instead.
    request = type("R", (), {})()
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.COOKIES = {name: morsel.value for name, morsel in client.cookies.items()}
    assert read_referral_cookie(request)["click"] == click.public_id.hex
    client.get("/")
    assert Click.objects.count() == 1


def test_it_redirects_crawlers_without_counting_them(alice):
    response = Client(HTTP_USER_AGENT="Twitterbot/1.0").get(f"/r/{alice.referral_code}")
    assert response["Location"] == f"{OPERATOR}/welcome?utm_source=portal"
    assert not Click.objects.exists()


def test_it_shows_the_redirect_link_on_the_dashboard(alice, client, settings, django_user_model):
    settings.REFERRAL = {**settings.REFERRAL, "PORTAL_URL": "https://portal.example"}
    user = django_user_model.objects.create_user("alice@example.com", "alice@example.com", "pw-alice-12345")
    Account.objects.filter(pk=alice.pk).update(user=user)
    client.force_login(user)
    html = client.get("/dashboard/").content.decode()
    assert f'value="https://portal.example/r/{alice.referral_code}"' in html
    assert "then opens operator.example" in html


# --------------------------------------------------------------------------- server-side clicks


def test_it_records_server_side_clicks_one_or_a_batch_with_a_result_each(alice):
    api = pusher()
    one = api.post("/api/v1/clicks", {"code": alice.referral_code, "ip": "203.0.113.7", "visitor": "s-1",
                                      "user_agent": BROWSER_UA, "url": f"{OPERATOR}/?ref={alice.referral_code}"},
                   format="json")
    assert one.status_code == 200
    [result] = one.json()["results"]
    assert result["status"] == "recorded" and uuid.UUID(result["click_id"])
    batch = api.post("/api/v1/clicks", {"clicks": [
        {"code": alice.referral_code, "visitor": "s-1"},
        {"code": "zz9zz9zz"},
        {"code": alice.referral_code, "user_agent": "Googlebot/2.1"},
        {"code": alice.referral_code, "ip": "not-an-ip"},
        "a string",
        {"code": alice.referral_code, "visitor": "s-2", "colour": "red"},
    ]}, format="json")
    results = batch.json()["results"]
    assert [r["status"] for r in results] == ["recorded", "unknown_code", "crawler", "rejected", "rejected", "rejected"]
    assert results[3]["error"]["fields"] == {"ip": "Enter a valid IPv4 or IPv6 address."}
    assert "colour" in results[5]["error"]["fields"] and "body" in results[4]["error"]["fields"]
    clicks = list(Click.objects.order_by("id"))
    assert len(clicks) == 2 and [c.is_unique for c in clicks] == [True, False], "visitor s-1 twice: one unique"
    assert clicks[0].ip_hash == hash_ip("203.0.113.7") and clicks[0].path == f"{OPERATOR}/"


def test_it_needs_the_events_write_scope_for_server_side_clicks(alice):
    assert APIClient().post("/api/v1/clicks", {"code": alice.referral_code}, format="json").status_code == 401
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='r', scopes=['read'])[1]}")
    assert reader.post("/api/v1/clicks", {"code": alice.referral_code}, format="json").status_code == 403
    assert not Click.objects.exists()


def test_it_refuses_a_clicks_body_that_is_neither_a_click_nor_a_batch(alice):
    api = pusher()
    for body, field in (([], "body"), ({"url": "x"}, "body"), ({"clicks": "x"}, "clicks"),
                        ({"clicks": [], "x": 1}, "x"), ({"clicks": [{"code": "a"}] * 1001}, "clicks")):
        response = api.post("/api/v1/clicks", body, format="json")
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"]
    assert not Click.objects.exists()


def test_it_limits_server_side_clicks_by_the_visitors_ip_not_the_callers(alice, settings):
    settings.REFERRAL = {**settings.REFERRAL, "CLICKS_PER_IP_PER_MINUTE": 2}
    api = pusher()
    results = api.post("/api/v1/clicks", {"clicks": [{"code": alice.referral_code, "ip": "198.51.100.1"}] * 3
                                          + [{"code": alice.referral_code}] * 3}, format="json").json()["results"]
    assert [r["status"] for r in results] == ["recorded", "recorded", "rate_limited"] + ["recorded"] * 3


def test_it_describes_the_tracking_endpoints_in_the_openapi_schema(db):
    schema = json.loads(Client().get("/api/schema/?format=json").content)
    track_op = schema["paths"]["/api/v1/track/click"]["post"]
    assert track_op.get("security", []) in ([], [{}]), "the public call takes no key"
    assert {"200", "403", "429"} <= set(track_op["responses"])
    clicks_op = schema["paths"]["/api/v1/clicks"]["post"]
    assert clicks_op["security"] == [{"apiKey": []}]
    assert "options" not in schema["paths"]["/api/v1/track/click"]

"""Issue 15: hostile input at every public entry point. NUL bytes, lone surrogates, control
characters, numbers where strings belong, huge and deeply nested bodies: never a 500, an error
naming the field where there is one, and nothing changed (row counts and balances).

The entry points are a table (`ENTRY_POINTS`): a row says how to put one piece of hostile text
into that entry point's field and what a correct refusal looks like. Add a row for a new entry
point (the tracking call, the Stripe billing webhook, ...) and every hostile value runs against it.
Raw bytes are sent as an attacker would: surrogates as their (invalid) UTF-8 bytes in URLs and
forms, as "\\ud800" escapes in JSON.
"""
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client, override_settings
from rest_framework.test import APIClient

from billing.models import Inbound, StripeConnection
from ledger.models import Balance, Entry
from payouts.fakes.stripe import event as stripe_event
from payouts.fakes.stripe import sign
from payouts.models import Payout, PayoutMethod, StripeWebhook
from payouts.services import payout_method_set
from referrals.api.keys import api_key_create
from referrals.models import Account, Accrual, AuditLog, Click, Event, Referral, Template
from referrals.presets import load_preset
from tests.fakes.stripe_billing import webhook as billing_webhook
from tests.helpers import buy_credits, event, signup, spend

User = get_user_model()
PASSWORD = "Sturdy-pass-9911"
WEBHOOK_SECRET = "whsec_test_hostile"
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

NUL, SURROGATE, BELL = "a\x00b", "a\ud800b", "a\x07b"
HOSTILE_TEXTS = {"nul": NUL, "lone_surrogate": SURROGATE, "control_char": BELL}


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_WEBHOOK_TOLERANCE = 300
    settings.PAYOUT_PROCESS_ON_APPROVE = False


@dataclass
class World:
    api: APIClient
    anonymous: Client
    member: Client
    admin: Client
    code: str


@pytest.fixture(scope="module")
def _world_rows(django_db_setup, django_db_blocker):
    """Built once for the module, inside a transaction rolled back at its end; every test runs in
    a savepoint within it (pytest-django's `db`). alice refers bob (who spends), alice has a
    portal login and a PayPal method; sam is a superuser."""
    with django_db_blocker.unblock(), override_settings(PASSWORD_HASHERS=FAST_HASHERS), transaction.atomic():
        load_preset("vast")
        StripeConnection.objects.create(signing_secret=BILLING_SECRET, api_key="rk_test_hostile")
        alice = signup("alice", email="alice@example.com")
        signup("bob", code=alice.referral_code)
        buy_credits("bob", "500.00")
        spend("bob", "20.00")
        Template.objects.create(external_id="tpl-1", creator=alice)
        user = User.objects.create_user("alice@example.com", "alice@example.com", PASSWORD)
        Account.objects.filter(pk=alice.pk).update(user=user)
        payout_method_set(account=alice, type="paypal", email="alice@example.com")
        admin = User.objects.create_superuser("sam", "sam@operator.test", PASSWORD)
        key = api_key_create(name="billing", scopes=["events:write", "read", "staff"])[1]
        yield {"member": user.pk, "admin": admin.pk, "key": key, "code": alice.referral_code}
        transaction.set_rollback(True)


@pytest.fixture
def world(db, _world_rows):
    api = APIClient(raise_request_exception=False)
    api.credentials(HTTP_AUTHORIZATION="Bearer " + _world_rows["key"])
    member = Client(raise_request_exception=False)
    member.force_login(User.objects.get(pk=_world_rows["member"]))
    admin = Client(raise_request_exception=False)
    admin.force_login(User.objects.get(pk=_world_rows["admin"]))
    return World(api=api, anonymous=Client(raise_request_exception=False), member=member, admin=admin,
                 code=_world_rows["code"])


def state() -> dict:
    """What any of these requests could change."""
    counted = (Event, Entry, Account, Referral, Accrual, Template, Click, Payout, PayoutMethod, StripeWebhook,
               Inbound, User, AuditLog)
    return {
        **{model.__name__: model.objects.count() for model in counted},
        "balances": sorted(Balance.objects.values_list("account_id", "book", "amount")),
        "methods": sorted(PayoutMethod.objects.values_list("pk", "details")),
    }


# --------------------------------------------------------------------------- how requests carry hostile text


def url_text(value: str) -> str:
    """The value percent-encoded as raw bytes: a lone surrogate as the invalid UTF-8 it would be."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def form_body(fields: dict) -> str:
    return "&".join(f"{url_text(name)}={url_text(str(value))}" for name, value in fields.items())


def post_form(client: Client, path: str, fields: dict):
    return client.post(path, form_body(fields), content_type="application/x-www-form-urlencoded")


def post_json(client, path: str, body) -> object:
    text = body if isinstance(body, str) else json.dumps(body)  # ensure_ascii: "\ud800" stays an escape
    return client.post(path, text, content_type="application/json")


def purchase(**fields) -> dict:
    return {**event("credits.purchased", "alice", amount="5.00"), **fields}


# --------------------------------------------------------------------------- what a refusal looks like


def _names(name: str, field_name: str) -> bool:
    return name == field_name or name.startswith(field_name + ".") or (
        field_name.endswith("\\u") and name.startswith(field_name))


def api_error_naming(field_name: str, status: int = 400):
    def check(response):
        assert response.status_code == status, response.content
        body = response.json()["error"]
        assert any(_names(name, field_name) for name in body["fields"]), body
    return check


def events_rejected_naming(field_name: str):
    def check(response):
        assert response.status_code == 200, response.content
        results = response.json()["results"]
        assert results and all(result["status"] == "rejected" for result in results), results
        for result in results:
            assert any(_names(name, field_name) for name in result["error"]["fields"]), result
    return check


def status_in(*statuses: int):
    def check(response):
        assert response.status_code in statuses, (response.status_code, response.content[:500])
    return check


NOT_FOUND = status_in(404)


@dataclass(frozen=True)
class EntryPoint:
    name: str
    send: Callable[[World, str], object]  # puts the hostile value where the field goes, sends it
    check: Callable[[object], None]
    stores: dict = field(default_factory=dict)  # rows a refusal may still add, e.g. a bounded webhook record


def _webhook(world, value):
    body = stripe_event("evt_1", "transfer.created", {"id": value, "object": "transfer"}, created=int(time.time()))
    return world.anonymous.post("/payouts/webhooks/stripe", body, content_type="application/json",
                                HTTP_STRIPE_SIGNATURE="t=1,v1=" + "0" * 64)


def _signed_webhook(world, value):
    body = stripe_event(value, "transfer.created", {"id": "tr_1", "object": "transfer"}, created=int(time.time()))
    return world.anonymous.post("/payouts/webhooks/stripe", body, content_type="application/json",
                                HTTP_STRIPE_SIGNATURE=sign(body, WEBHOOK_SECRET))


BILLING_SECRET = "whsec_hostile_billing"  # noqa: S105 - a test secret
TRACKING_ORIGIN = "https://operator.example"


def _track(world, body):
    """The public tracking call, from an origin the operator configured."""
    with override_settings(REFERRAL={**settings.REFERRAL, "TRACKING_ORIGINS": [TRACKING_ORIGIN]}):
        return post_json_from(world.anonymous, "/api/v1/track/click", body, TRACKING_ORIGIN)


def post_json_from(client, path: str, body, origin: str):
    return client.post(path, json.dumps(body), content_type="application/json", HTTP_ORIGIN=origin)


def _billing_unsigned(world, value):
    customer = {"id": "cus_1", "object": "customer", "created": int(time.time())}
    body, _ = billing_webhook(value, "customer.created", customer, secret=BILLING_SECRET)
    return world.anonymous.post("/integrations/stripe/webhook/", body, content_type="application/json",
                                HTTP_STRIPE_SIGNATURE="t=1,v1=" + "0" * 64)


def _billing_signed(world, value):
    body, signature = billing_webhook("evt_hostile", "customer.created", {
        "id": "cus_1", "object": "customer", "created": int(time.time()), "metadata": {"account_id": value}},
        secret=BILLING_SECRET)
    return world.anonymous.post("/integrations/stripe/webhook/", body, content_type="application/json",
                                HTTP_STRIPE_SIGNATURE=signature)


ENTRY_POINTS = [
    # the events API, one event and a batch; ids, free text and object keys
    EntryPoint("event id", lambda w, v: post_json(w.api, "/api/v1/events", purchase(id=v)),
               events_rejected_naming("id")),
    EntryPoint("event account", lambda w, v: post_json(w.api, "/api/v1/events", purchase(account=v)),
               events_rejected_naming("account")),
    EntryPoint("event text field", lambda w, v: post_json(w.api, "/api/v1/events", purchase(payment_fingerprint=v)),
               events_rejected_naming("payment_fingerprint")),
    EntryPoint("event amount", lambda w, v: post_json(w.api, "/api/v1/events", purchase(amount=v)),
               events_rejected_naming("amount")),
    EntryPoint("event field name", lambda w, v: post_json(w.api, "/api/v1/events", purchase(**{v: "x"})),
               events_rejected_naming("a\\u")),  # the name shown with the character escaped
    EntryPoint("event type", lambda w, v: post_json(w.api, "/api/v1/events", purchase(type=v)),
               events_rejected_naming("type")),
    EntryPoint("batch of sign-ups", lambda w, v: post_json(w.api, "/api/v1/events", {"events": [
        event("account.created", "carol", email=f"carol{v}@example.com"),
        event("account.created", v, email="dave@example.com"),
        event("account.created", "erin", email="erin@example.com", referral_code=v)]}),
        lambda r: _batch_all_rejected(r, ["email", "account", "referral_code"])),
    # reads with path parameters and query parameters
    EntryPoint("account read", lambda w, v: w.api.get(f"/api/v1/accounts/{url_text(v)}"), NOT_FOUND),
    EntryPoint("account stats", lambda w, v: w.api.get(f"/api/v1/accounts/{url_text(v)}/stats"), NOT_FOUND),
    EntryPoint("account earnings", lambda w, v: w.api.get(f"/api/v1/accounts/{url_text(v)}/earnings"), NOT_FOUND),
    EntryPoint("account referrals", lambda w, v: w.api.get(f"/api/v1/accounts/{url_text(v)}/referrals"), NOT_FOUND),
    EntryPoint("template read", lambda w, v: w.api.get(f"/api/v1/templates/{url_text(v)}"), NOT_FOUND),
    EntryPoint("referrals filter", lambda w, v: w.api.get(f"/api/v1/accounts/alice/referrals?status={url_text(v)}"),
               api_error_naming("status")),
    EntryPoint("referrals cursor", lambda w, v: w.api.get(f"/api/v1/accounts/alice/referrals?cursor={url_text(v)}"),
               api_error_naming("cursor")),
    EntryPoint("applications filter", lambda w, v: w.api.get(f"/api/v1/applications?status={url_text(v)}"),
               api_error_naming("status")),
    # staff actions
    EntryPoint("application reject", lambda w, v: post_json(w.api, "/api/v1/applications/1/reject", {"reason": v}),
               api_error_naming("reason")),
    EntryPoint("account track", lambda w, v: post_json(w.api, "/api/v1/accounts/alice/track", {"track": v}),
               api_error_naming("track")),
    EntryPoint("track of an account path", lambda w, v: post_json(
        w.api, f"/api/v1/accounts/{url_text(v)}/track", {"track": "partner"}), NOT_FOUND),
    EntryPoint("jobs run at", lambda w, v: post_json(w.api, "/api/v1/jobs/run", {"at": v}), api_error_naming("at")),
    EntryPoint("jobs run names", lambda w, v: post_json(w.api, "/api/v1/jobs/run", {"jobs": [v]}),
               api_error_naming("jobs")),
    # the payouts API
    EntryPoint("payout account", lambda w, v: post_json(
        w.api, "/api/v1/payouts", {"account": v, "amount": "5.00", "method": "paypal"}), api_error_naming("account")),
    EntryPoint("payout amount", lambda w, v: post_json(
        w.api, "/api/v1/payouts", {"account": "alice", "amount": v, "method": "paypal"}), api_error_naming("amount")),
    EntryPoint("payout method name", lambda w, v: post_json(
        w.api, "/api/v1/payouts", {"account": "alice", "amount": "5.00", "method": v}), api_error_naming("method")),
    EntryPoint("payout-method e-mail", lambda w, v: post_json(
        w.api, "/api/v1/accounts/alice/payout-methods", {"type": "paypal", "email": f"x{v}@example.com"}),
        api_error_naming("email")),
    EntryPoint("payout-method account path", lambda w, v: post_json(
        w.api, f"/api/v1/accounts/{url_text(v)}/payout-methods", {"type": "paypal", "email": "x@example.com"}),
        NOT_FOUND),
    EntryPoint("payout read", lambda w, v: w.api.get(f"/api/v1/payouts/{url_text(v)}"), NOT_FOUND),
    # the portal's public paths: referral links anywhere, template pages
    # Invalid UTF-8 in a URL reaches Django still percent-encoded in the path and replaced by U+FFFD
    # in the query: harmless text, so such a click on a valid code is counted like any other.
    EntryPoint("click path", lambda w, v: w.anonymous.get(f"/{url_text(v)}?ref={w.code}"), status_in(302, 404),
               stores={"Click": 1}),
    EntryPoint("click code", lambda w, v: w.anonymous.get(f"/?ref={url_text(v)}"), status_in(302, 400)),
    EntryPoint("click other parameter", lambda w, v: w.anonymous.get(f"/?ref={w.code}&utm={url_text(v)}"),
               status_in(302, 400), stores={"Click": 1}),
    EntryPoint("template page", lambda w, v: w.anonymous.get(f"/t/{url_text(v)}"), NOT_FOUND),
    EntryPoint("template page with slash", lambda w, v: w.anonymous.get(f"/t/{url_text(v)}/"), NOT_FOUND),
    EntryPoint("template page click", lambda w, v: w.anonymous.get(f"/t/{url_text(v)}?ref={w.code}"),
               status_in(302, 404), stores={"Click": 1}),
    # the Stripe payouts webhook: unsigned (a stranger) and signed (text Stripe would never send)
    EntryPoint("stripe webhook unsigned", _webhook, status_in(400), stores={"StripeWebhook": 1}),
    EntryPoint("stripe webhook signed", _signed_webhook, status_in(400), stores={"StripeWebhook": 1}),
    # clicks on the operator's site: the public tracking call, server-side clicks, redirect links
    EntryPoint("tracking call code", lambda w, v: _track(w, {"code": v}), api_error_naming("code")),
    EntryPoint("tracking call url", lambda w, v: _track(w, {"code": w.code, "url": v}), api_error_naming("url")),
    EntryPoint("server-side click code", lambda w, v: post_json(w.api, "/api/v1/clicks", {"code": v}),
               api_error_naming("code")),
    EntryPoint("redirect link code", lambda w, v: w.anonymous.get(f"/r/{url_text(v)}"), status_in(302, 404)),
    EntryPoint("redirect link template", lambda w, v: w.anonymous.get(f"/r/{w.code}/t/{url_text(v)}"),
               status_in(302, 404), stores={"Click": 1}),
    # the Stripe billing connector's webhook: forged, and signed with text Stripe would never send
    EntryPoint("billing webhook unsigned", _billing_unsigned, status_in(400)),
    # (a signed object the connector cannot use is kept for staff as "needs attention", never applied)
    EntryPoint("billing webhook signed", _billing_signed, status_in(200, 400), stores={"Inbound": 1}),
    # portal forms
    EntryPoint("sign-up e-mail", lambda w, v: post_form(w.anonymous, "/signup/", {
        "email": f"new{v}@example.com", "password1": PASSWORD, "password2": PASSWORD}), status_in(200, 400)),
    EntryPoint("sign-up password", lambda w, v: post_form(w.anonymous, "/signup/", {
        # Mismatched: a surrogate arrives as U+FFFD, which a password may hold; the refusal is the point.
        "email": "new@example.com", "password1": PASSWORD + v, "password2": v + PASSWORD}), status_in(200, 400)),
    EntryPoint("login", lambda w, v: post_form(w.anonymous, "/login/", {"username": f"alice{v}@example.com",
                                                                        "password": v}), status_in(200, 400)),
    EntryPoint("password reset", lambda w, v: post_form(w.anonymous, "/password-reset/", {"email": f"a{v}@x.io"}),
               status_in(200, 400)),
    EntryPoint("payout request form", lambda w, v: post_form(w.member, "/payouts/request/", {
        "amount": v, "method": "paypal"}), status_in(200, 400)),
    EntryPoint("payout request method", lambda w, v: post_form(w.member, "/payouts/request/", {
        "amount": "5.00", "method": v}), status_in(200, 400)),
    EntryPoint("paypal method form", lambda w, v: post_form(w.member, "/payouts/methods/paypal/", {
        "email": f"x{v}@example.com"}), status_in(200, 400)),
    EntryPoint("wise method form", lambda w, v: post_form(w.member, "/payouts/methods/wise/", {"recipient": v}),
               status_in(200, 400)),
    EntryPoint("dashboard referrals filter", lambda w, v: w.member.get(f"/dashboard/referrals/?q={url_text(v)}"),
               status_in(200, 400)),
    # the admin, as a superuser: search, list filters, object paths, actions
    *(EntryPoint(f"admin search {model}", lambda w, v, model=model: w.admin.get(
        f"/admin/{model}/?q={url_text(v)}"), status_in(200, 400))
      for model in ("referrals/account", "referrals/event", "referrals/referral", "referrals/click",
                    "referrals/accrual", "payouts/payout", "payouts/payoutmethod", "payouts/stripewebhook")),
    *(EntryPoint(f"admin filter {model} {name}", lambda w, v, model=model, name=name: w.admin.get(
        f"/admin/{model}/?{name}={url_text(v)}"), status_in(200, 302, 400))
      for model, name in (("payouts/payout", "status"), ("payouts/payout", "method_type"),
                          ("referrals/account", "track"), ("referrals/event", "type"),
                          ("referrals/referral", "status"), ("payouts/stripewebhook", "type"))),
    EntryPoint("admin object path", lambda w, v: w.admin.get(f"/admin/referrals/account/{url_text(v)}/change/"),
               status_in(302, 404)),
    EntryPoint("admin action ids", lambda w, v: post_form(w.admin, "/admin/payouts/payout/", {
        "action": "reject_selected", "_selected_action": v, "reason": "x"}), status_in(200, 302, 400)),
]


def _batch_all_rejected(response, fields: list[str]) -> None:
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [result["status"] for result in results] == ["rejected"] * len(fields), results
    for result, name in zip(results, fields, strict=True):
        assert name in result["error"]["fields"], result


@pytest.mark.parametrize("value", list(HOSTILE_TEXTS.values()), ids=list(HOSTILE_TEXTS))
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[entry.name for entry in ENTRY_POINTS])
def test_it_refuses_hostile_text_at_every_entry_point_and_changes_nothing(world, entry, value):
    before = state()
    response = entry.send(world, value)
    assert response.status_code < 500, (response.status_code, response.content[:500])
    entry.check(response)
    after = state()
    for name, grown in entry.stores.items():
        assert after[name] - before[name] <= grown, name
        after[name] = before[name]
    assert after == before, "a refused input changed something"


# --------------------------------------------------------------------------- numbers where strings belong


NUMBER_FIELDS = [
    ("event id", lambda w: post_json(w.api, "/api/v1/events", purchase(id=5)), events_rejected_naming("id")),
    ("event account", lambda w: post_json(w.api, "/api/v1/events", purchase(account=5)),
     events_rejected_naming("account")),
    ("event amount integer", lambda w: post_json(w.api, "/api/v1/events", purchase(amount=5)),
     events_rejected_naming("amount")),
    ("event amount fraction", lambda w: post_json(w.api, "/api/v1/events", purchase(amount=5.25)),
     events_rejected_naming("amount")),
    ("refund amount", lambda w: post_json(w.api, "/api/v1/events", event("payment.refunded", "bob", amount=1,
                                                                          refunds="evt-1")),
     events_rejected_naming("amount")),
    ("event occurred_at", lambda w: post_json(w.api, "/api/v1/events", purchase(occurred_at=1767225600)),
     events_rejected_naming("occurred_at")),
    ("payout amount", lambda w: post_json(w.api, "/api/v1/payouts", {"account": "alice", "amount": 5,
                                                                      "method": "paypal"}),
     api_error_naming("amount")),
    ("jobs run at", lambda w: post_json(w.api, "/api/v1/jobs/run", {"at": 5}), api_error_naming("at")),
    ("jobs run names", lambda w: post_json(w.api, "/api/v1/jobs/run", {"jobs": [5]}), api_error_naming("jobs")),
    ("application reason", lambda w: post_json(w.api, "/api/v1/applications/1/reject", {"reason": ["x"]}),
     api_error_naming("reason")),
]


@pytest.mark.parametrize(("send", "check"), [row[1:] for row in NUMBER_FIELDS], ids=[row[0] for row in NUMBER_FIELDS])
def test_it_refuses_numbers_where_strings_belong(world, send, check):
    before = state()
    response = send(world)
    check(response)
    assert state() == before


# --------------------------------------------------------------------------- huge and deep bodies


DEEP = "[" * 100_000
JSON_PATHS = ["/api/v1/events", "/api/v1/payouts", "/api/v1/jobs/run", "/api/v1/accounts/alice/payout-methods",
              "/api/v1/accounts/alice/track"]


@pytest.mark.parametrize("path", JSON_PATHS)
def test_it_answers_a_deeply_nested_body_with_a_400_naming_the_body(world, path):
    before = state()
    started = time.monotonic()
    response = post_json(world.api, path, DEEP)
    assert time.monotonic() - started < 5
    api_error_naming("body")(response)
    assert state() == before


@pytest.mark.parametrize("path", JSON_PATHS)
def test_it_refuses_a_body_over_the_limit_before_parsing_it(world, path):
    from referrals.api.base import MAX_BODY_BYTES

    before = state()
    body = json.dumps({"events": [purchase(payment_fingerprint="x" * 1000) for _ in range(MAX_BODY_BYTES // 1000)]})
    api_error_naming("body", status=413)(post_json(world.api, path, body))
    assert state() == before


def test_it_keeps_the_form_body_limit_sensible():
    # Django's own default is 2.5 MB; the portal's forms are a few fields, the API has its own limit.
    assert 64 * 1024 <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE <= 2.5 * 1024 * 1024


def test_it_refuses_a_form_body_over_the_limit(world):
    before = state()
    response = post_form(world.anonymous, "/signup/", {"email": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                                                      "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code in (400, 413)
    assert state() == before


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_it_refuses_a_huge_webhook_without_storing_it(world, signed):
    before = state()
    body = stripe_event("evt_big", "transfer.created", {"id": "tr_1", "object": "transfer",
                                                        "padding": "x" * (3 * 1024 * 1024)}, created=int(time.time()))
    signature = sign(body, WEBHOOK_SECRET) if signed else "t=1,v1=" + "0" * 64
    response = world.anonymous.post("/payouts/webhooks/stripe", body, content_type="application/json",
                                    HTTP_STRIPE_SIGNATURE=signature)
    assert response.status_code == 413
    assert state() == before


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_it_answers_a_deeply_nested_webhook_without_a_500(world, signed):
    signature = sign(DEEP, WEBHOOK_SECRET) if signed else "t=1,v1=" + "0" * 64
    response = world.anonymous.post("/payouts/webhooks/stripe", DEEP, content_type="application/json",
                                    HTTP_STRIPE_SIGNATURE=signature)
    assert response.status_code == 400


# --------------------------------------------------------------------------- batches tell the truth


def test_it_stores_the_good_events_of_a_batch_and_rejects_the_hostile_one_naming_its_field(world):
    """Issue 15.4: [purchase, sign-up, event with NUL] answered 500 "nothing was changed" while
    the first two had been committed."""
    body = {"events": [purchase(id="good-purchase"), event("account.created", "carol", id="good-signup",
                                                           email="carol@example.com"),
                       event("usage.charged", "alice", id="bad-charge", amount="1.00", product="p\x00ds"),
                       event("usage.charged", "alice", id="bad-\ud800", amount="1.00", product="pods")]}
    response = post_json(world.api, "/api/v1/events", body)
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [result["status"] for result in results] == ["accepted", "accepted", "rejected", "rejected"]
    assert results[2]["error"]["fields"] == {"product": "must not contain NUL bytes (\\u0000)"}
    assert list(results[3]["error"]["fields"]) == ["id"]
    assert results[3]["id"] == "bad-\ud800", "the id is echoed back (as a JSON escape)"
    stored = set(Event.objects.values_list("external_id", flat=True))
    assert {"good-purchase", "good-signup"} <= stored and not {"bad-charge", "bad-\ufffd"} & stored


def test_it_reads_an_api_body_labelled_as_a_form_as_json_and_checks_its_text_there(world):
    # `curl -d` labels a JSON body application/x-www-form-urlencoded; a "%00" inside a string of
    # it is text, not an encoded NUL.
    body = json.dumps(purchase(id="curl-1", payment_fingerprint="https://example.com/%00"))
    response = world.api.post("/api/v1/events", body, content_type="application/x-www-form-urlencoded")
    assert response.json()["results"][0]["status"] == "accepted", response.content
    hostile = json.dumps(purchase(id="curl-2", payment_fingerprint="a\x00b"))
    response = world.api.post("/api/v1/events", hostile, content_type="application/x-www-form-urlencoded")
    events_rejected_naming("payment_fingerprint")(response)

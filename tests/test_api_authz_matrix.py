"""The authorization matrix: every object-scoped endpoint against every kind of key.

alice and bob are partners with their own keys (bound to their account, scope `read`);
`reader` reads everything, `pusher` only pushes events, `ops` has every scope. A key without
an endpoint's scope gets 403; a partner key asking about another partner's objects gets 404,
exactly like an unknown object, so it cannot even learn that they exist.
"""
import json

import pytest
from rest_framework.test import APIClient

from referrals.api.keys import api_key_create
from referrals.models import Application
from tests.helpers import at, event, push, signup, spend, usd

ALL = ["events:write", "read", "staff"]

# (method, path template, scope). {account} and {template} are filled with alice's objects,
# {application} with alice's application, {payout} with an id (scope checks come first).
MATRIX = [
    ("get", "/api/v1/accounts/{account}", "read"),
    ("get", "/api/v1/accounts/{account}/stats", "read"),
    ("get", "/api/v1/accounts/{account}/earnings", "read"),
    ("get", "/api/v1/accounts/{account}/referrals", "read"),
    ("get", "/api/v1/templates/{template}", "read"),
    ("post", "/api/v1/accounts/{account}/track", "staff"),
    ("post", "/api/v1/accounts/{account}/payout-methods", "staff"),
    ("get", "/api/v1/applications", "staff"),
    ("post", "/api/v1/applications/{application}/approve", "staff"),
    ("post", "/api/v1/applications/{application}/reject", "staff"),
    ("post", "/api/v1/payouts", "staff"),
    ("get", "/api/v1/payouts/{payout}", "staff"),
    ("post", "/api/v1/payouts/{payout}/approve", "staff"),
    ("post", "/api/v1/payouts/{payout}/reject", "staff"),
    ("post", "/api/v1/jobs/run", "staff"),
    ("post", "/api/v1/events", "events:write"),
    ("post", "/api/v1/clicks", "events:write"),
]
# Public operations (no key; their own guards are tested in tests/test_tracking.py).
PUBLIC = {("post", "/api/v1/track/click")}
KEYS = {"ops": ALL, "reader": ["read"], "pusher": ["events:write"], "staff_only": ["staff"]}


def client(plaintext: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return api


@pytest.fixture
def world(runpod):
    alice = signup("alice", when=at(0))
    bob = signup("bob", when=at(0))
    push(event("template.published", "alice", when=at(0), template="alice-tpl"))
    push(event("template.published", "bob", when=at(0), template="bob-tpl"))
    for i in range(2):
        signup(f"a{i}", code=alice.referral_code, when=at(1))
        spend(f"a{i}", "20.00", when=at(2))
    # An application as the gate job opens it (meeting the real gate takes 25 referrals).
    Application.objects.create(program=runpod["revenue_share"], account=alice, referrals_at_open=25,
                               spend_at_open=usd("500.00"), opened_at=at(3))
    keys = {name: client(api_key_create(name=name, scopes=scopes)[1]) for name, scopes in KEYS.items()}
    keys["alice"] = client(api_key_create(name="alice's tools", scopes=["read"], account=alice)[1])
    keys["bob"] = client(api_key_create(name="bob's tools", scopes=["read"], account=bob)[1])
    objects = {"account": "alice", "template": "alice-tpl", "payout": 1,
               "application": Application.objects.get(account=alice).pk}
    return keys, objects


def call(api: APIClient, method: str, template: str, objects: dict):
    return getattr(api, method)(template.format(**objects), {}, format="json")


def allowed(key: str, scope: str) -> bool:
    scopes = {"alice": ["read"], "bob": ["read"], **KEYS}[key]
    partner = key in ("alice", "bob")
    return scope in scopes and not (partner and scope != "read")


@pytest.mark.parametrize(("method", "template", "scope"), MATRIX)
def test_it_answers_403_to_every_key_without_the_endpoints_scope(world, method, template, scope):
    keys, objects = world
    refused = {name: call(api, method, template, objects) for name, api in keys.items() if not allowed(name, scope)}
    assert refused, "every endpoint has keys it must refuse"
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 403)
    assert {r.json()["error"]["code"] for r in refused.values()} <= {"missing_scope", "account_key"}


@pytest.mark.parametrize(("method", "template", "scope"), [row for row in MATRIX if row[2] == "read"])
def test_it_hides_a_partners_objects_from_another_partner_with_404(world, method, template, scope):
    keys, objects = world
    assert call(keys["alice"], method, template, objects).status_code == 200
    assert call(keys["reader"], method, template, objects).status_code == 200
    response = call(keys["bob"], method, template, objects)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    # bob's own objects are his to read
    own = call(keys["bob"], method, template, {**objects, "account": "bob", "template": "bob-tpl"})
    assert own.status_code == 200


def test_it_shows_a_partner_only_its_own_referrals(world):
    keys, _ = world
    alice_referrals = keys["alice"].get("/api/v1/accounts/alice/referrals").json()["results"]
    assert len(alice_referrals) == 2
    assert keys["bob"].get("/api/v1/accounts/bob/referrals").json()["results"] == []


def test_it_covers_every_operation_of_the_schema(db):
    schema = json.loads(APIClient().get("/api/schema/?format=json").content)
    operations = {(method, path) for path, item in schema["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    covered = {(method, template.replace("{application}", "{application_id}").replace("{payout}", "{payout_id}"))
               for method, template, _ in MATRIX}
    assert operations - covered - PUBLIC == set(), "add the new endpoint to the authorization matrix"

"""The integration API of shared/API.md: auth and scopes, events, reads and staff actions.

Named keys: `integration` has every scope, `reader` only reads, `pusher` only pushes
events, and `partner` is alice's own key (reads only alice).
"""
from datetime import timedelta
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from ledger.models import Entry
from referrals.api.keys import ApiKeyInvalid, api_key_create, api_key_revoke
from referrals.engine.jobs import JOBS
from referrals.models import Account, ApiKey, Application, AuditLog, Event
from tests.helpers import at, event, push, signup, spend

ALL_SCOPES = ["events:write", "read", "staff"]


def client_for(plaintext: str | None) -> APIClient:
    client = APIClient()
    if plaintext:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


@pytest.fixture
def integration(db):
    return client_for(api_key_create(name="billing", scopes=ALL_SCOPES)[1])


@pytest.fixture
def reader(db):
    return client_for(api_key_create(name="dashboard", scopes=["read"])[1])


@pytest.fixture
def pusher(db):
    return client_for(api_key_create(name="pusher", scopes=["events:write"])[1])


@pytest.fixture
def alice(db):
    return signup("alice")


@pytest.fixture
def partner(alice):
    return client_for(api_key_create(name="alice's tools", scopes=["read"], account=alice)[1])


def referred_spenders(referrer: Account, n: int, each: str, *, product: str = "pods") -> None:
    for i in range(n):
        signup(f"r{i}", code=referrer.referral_code, when=at(1))
        spend(f"r{i}", each, when=at(2), product=product)


def post_events(client, body):
    return client.post("/api/v1/events", body, format="json")


# --------------------------------------------------------------------------- events


def test_it_accepts_a_single_event_with_one_result(integration, runpod):
    response = post_events(integration, event("account.created", "alice", id="e-1", email="alice@example.com"))
    assert response.status_code == 200
    assert response.json() == {"results": [{"id": "e-1", "status": "accepted"}]}
    assert Event.objects.get(external_id="e-1").source == "api"


def test_it_answers_a_batch_in_input_order_with_accepted_duplicate_and_rejected(integration, runpod):
    alice = signup("alice", when=at(0))
    batch = [
        event("account.created", "bob", id="b-1", when=at(1), email="bob@example.com",
              referral_code=alice.referral_code),
        event("usage.charged", "bob", id="b-2", when=at(2), amount="10.00", product="pods"),
        event("usage.charged", "nobody", id="b-3", when=at(2), amount="10.00", product="pods"),
        event("usage.charged", "bob", id="b-2", when=at(2), amount="10.00", product="pods"),
        event("usage.charged", "bob", id="b-4", when=at(2), amount="abc", product="pods"),
    ]
    response = post_events(integration, {"events": batch})
    assert response.status_code == 200
    assert response.json() == {"results": [
        {"id": "b-1", "status": "accepted"},
        {"id": "b-2", "status": "accepted"},
        {"id": "b-3", "status": "rejected", "error": {
            "code": "unknown_account", "message": "account: unknown account 'nobody'",
            "fields": {"account": "unknown account 'nobody'"}}},
        {"id": "b-2", "status": "duplicate"},
        {"id": "b-4", "status": "rejected", "error": {
            "code": "invalid", "message": "amount: is not a valid decimal number",
            "fields": {"amount": "is not a valid decimal number"}}},
    ]}
    assert integration.get("/api/v1/accounts/alice").json()["balances"]["pending"] == "0.20"


def test_it_rejects_the_same_id_with_different_content_as_id_conflict(integration, runpod, alice):
    first = event("usage.charged", "alice", id="u-1", amount="5.00", product="pods")
    assert post_events(integration, first).json()["results"][0]["status"] == "accepted"
    events_before = Event.objects.count()

    result = post_events(integration, {**first, "amount": "6.00"}).json()["results"][0]

    assert result["status"] == "rejected"
    assert result["error"]["code"] == "id_conflict"
    assert result["error"]["fields"] == {"id": "already used by an event with different content"}
    assert Event.objects.count() == events_before
    assert Event.objects.get(external_id="u-1").amount == 5 * 10**10


def test_it_changes_nothing_when_a_batch_is_sent_again(integration, runpod, alice):
    batch = {"events": [
        event("account.created", f"p{i}", when=at(1), email=f"p{i}@example.com", referral_code=alice.referral_code)
        for i in range(3)
    ] + [event("usage.charged", "p0", when=at(2), amount="50.00", product="pods")]}
    post_events(integration, batch)
    before = (Event.objects.count(), Entry.objects.count(), integration.get("/api/v1/accounts/alice").json())

    again = post_events(integration, batch)

    assert [r["status"] for r in again.json()["results"]] == ["duplicate"] * 4
    assert (Event.objects.count(), Entry.objects.count(), integration.get("/api/v1/accounts/alice").json()) == before


def test_it_takes_an_empty_batch(integration):
    response = post_events(integration, {"events": []})
    assert response.status_code == 200
    assert response.json() == {"results": []}


# --------------------------------------------------------------------------- reading


def test_it_reads_an_account_with_its_pending_revenue_share(integration, runpod, alice):
    referred_spenders(alice, 20, "100.00")

    response = integration.get("/api/v1/accounts/alice")

    assert response.status_code == 200
    assert response.json() == {
        "account": "alice", "referral_code": alice.referral_code,
        "referral_link": f"http://127.0.0.1:8000/?ref={alice.referral_code}", "referred_by": None,
        "track": "basic", "balances": {"credits": "0.00", "cash_available": "0.00", "pending": "40.00"},
    }
    assert integration.get("/api/v1/accounts/r0").json()["referred_by"] == alice.referral_code


def test_it_reads_stats_with_an_exact_conversion_rate(integration, runpod, alice):
    referred_spenders(alice, 20, "100.00")
    for i in range(5):
        signup(f"idle{i}", code=alice.referral_code, when=at(1))

    response = integration.get("/api/v1/accounts/alice/stats")

    assert response.status_code == 200
    assert response.json() == {
        "total_referrals": 25, "conversions": 20, "conversion_rate": "0.8000", "total_clicks": 0,
        "unique_clicks": 0, "pending_referrals": 5, "total_earnings": "40.00",
    }


def test_it_reads_stats_of_an_account_without_referrals(integration, alice):
    assert integration.get("/api/v1/accounts/alice/stats").json()["conversion_rate"] == "0.0000"


def test_it_reads_earnings_per_program(integration, runpod, alice):
    referred_spenders(alice, 20, "100.00")

    response = integration.get("/api/v1/accounts/alice/earnings")

    assert response.status_code == 200
    assert response.json() == {"programs": [{
        "program": "runpod-revenue-share", "name": "Lifetime revenue share",
        "earned": "40.00", "pending": "40.00", "available": "0.00", "paid": "0.00", "reserved": "0.00",
    }]}


def _template_week(creator: str = "carol") -> None:
    """SPEC A.3's example: 20 users run a template at $0.54/h for a week = $1,814.40 of spend."""
    signup(creator)
    push(event("template.published", creator, template="comfy", name="ComfyUI"))
    for i in range(20):
        signup(f"u{i}", when=at(1))
        spend(f"u{i}", "90.72", when=at(8), template="comfy", runtime_seconds=168 * 3600)


def test_it_reads_a_template_with_its_sub_cent_earnings(integration, runpod):
    _template_week()

    response = integration.get("/api/v1/templates/comfy")

    assert response.status_code == 200
    assert response.json() == {
        "template": "comfy", "name": "ComfyUI", "creator": "carol", "runtime_seconds": 20 * 168 * 3600,
        "qualified": True, "earned": "18.144",
    }


def test_it_writes_every_figure_of_a_row_at_the_precision_of_earned(integration, runpod):
    _template_week()

    earnings = integration.get("/api/v1/accounts/carol/earnings").json()
    account = integration.get("/api/v1/accounts/carol").json()

    assert earnings == {"programs": [{
        "program": "runpod-template-share", "name": "Template revenue share",
        "earned": "18.144", "pending": "0.000", "available": "18.144", "paid": "0.000", "reserved": "0.000",
    }]}
    assert account["balances"] == {"credits": "18.14", "cash_available": "0.00", "pending": "0.00"}
    assert integration.get("/api/v1/accounts/carol/stats").json()["total_earnings"] == "18.144"


def test_it_lists_referrals_newest_first_in_pages_of_fifty(integration, runpod, alice):
    for i in range(52):
        signup(f"r{i:02}", code=alice.referral_code, when=at(1))
    spend("r51", "12.50", when=at(2))

    first = integration.get("/api/v1/accounts/alice/referrals").json()

    assert len(first["results"]) == 50 and first["previous"] is None
    assert first["results"][0] == {
        "account": "r51", "status": "converted", "ineligible_reason": "", "spend": "12.50", "purchases": "0.00",
        "signed_up_at": "2026-01-02T00:00:00Z", "converted_at": "2026-01-03T00:00:00Z",
    }
    assert first["results"][1]["status"] == "pending" and first["results"][1]["converted_at"] is None
    second = integration.get(first["next"]).json()
    assert [r["account"] for r in second["results"]] == ["r01", "r00"]
    assert second["next"] is None


def test_it_filters_referrals_by_status(integration, runpod, alice):
    referred_spenders(alice, 2, "1.00")
    signup("idle", code=alice.referral_code, when=at(1))

    pending = integration.get("/api/v1/accounts/alice/referrals?status=pending").json()["results"]
    converted = integration.get("/api/v1/accounts/alice/referrals?status=converted").json()["results"]

    assert [r["account"] for r in pending] == ["idle"]
    assert [r["account"] for r in converted] == ["r1", "r0"]


def test_it_shows_an_ineligible_referral_with_its_reason(integration, runpod, alice):
    signup("alias", email="alice@example.com", code=alice.referral_code, when=at(1))

    (row,) = integration.get("/api/v1/accounts/alice/referrals").json()["results"]

    assert row["status"] == "ineligible" and row["ineligible_reason"] == "same e-mail as the referrer"


# --------------------------------------------------------------------------- staff actions


def _open_application(integration, alice) -> dict:
    referred_spenders(alice, 25, "20.00")
    response = integration.post("/api/v1/jobs/run", {"at": "2026-01-04T00:00:00Z", "jobs": ["revenue_share_gates"]},
                                format="json")
    assert response.json() == {"at": "2026-01-04T00:00:00Z", "applied_events": 0,
                               "results": {"revenue_share_gates": {"applications_opened": 1}}}
    (application,) = integration.get("/api/v1/applications?status=open").json()["results"]
    return application


def test_it_lists_open_applications(integration, runpod, alice):
    application = _open_application(integration, alice)

    assert application == {
        "id": Application.objects.get().pk, "program": "runpod-revenue-share", "account": "alice", "status": "open",
        "referrals_at_open": 25, "spend_at_open": "500.00", "opened_at": "2026-01-04T00:00:00Z",
        "decided_at": None, "reason": "",
    }
    assert integration.get("/api/v1/applications?status=approved").json()["results"] == []


def test_it_approves_an_application_and_releases_the_held_earnings(integration, runpod, alice):
    application = _open_application(integration, alice)

    response = integration.post(f"/api/v1/applications/{application['id']}/approve", {"reason": "looks good"},
                                format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "approved" and response.json()["reason"] == "looks good"
    assert integration.get("/api/v1/accounts/alice").json()["balances"] == {
        "credits": "10.00", "cash_available": "0.00", "pending": "0.00"}
    audit = AuditLog.objects.get(action="api:application.approve")
    assert audit.data == {"api_key": "billing", "api_key_prefix": ApiKey.objects.get(name="billing").prefix}


def test_it_approves_with_an_empty_body(integration, runpod, alice):
    application = _open_application(integration, alice)
    response = integration.post(f"/api/v1/applications/{application['id']}/approve")
    assert response.status_code == 200 and response.json()["status"] == "approved"


def test_it_refuses_to_approve_twice_with_409(integration, runpod, alice):
    application = _open_application(integration, alice)
    integration.post(f"/api/v1/applications/{application['id']}/approve")
    events_before = Event.objects.count()

    response = integration.post(f"/api/v1/applications/{application['id']}/approve")

    assert response.status_code == 409
    message = "only open applications can be approved (this one is approved)"
    assert response.json() == {"error": {"code": "action_refused", "message": message, "fields": {}}}
    assert Event.objects.count() == events_before


def test_it_rejects_an_application_with_a_reason_and_keeps_earnings_held(integration, runpod, alice):
    application = _open_application(integration, alice)

    response = integration.post(f"/api/v1/applications/{application['id']}/reject",
                                {"reason": "traffic from a coupon site"}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "rejected" and response.json()["reason"] == "traffic from a coupon site"
    assert response.json()["decided_at"] is not None
    assert integration.get("/api/v1/accounts/alice").json()["balances"]["pending"] == "10.00"
    again = integration.post(f"/api/v1/applications/{application['id']}/reject", {"reason": "again"}, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "only open applications can be rejected (this one is rejected)"


def test_it_answers_404_for_an_unknown_application(integration):
    response = integration.post("/api/v1/applications/999/approve")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/api/v1/payouts/%0A/reject", "/api/v1/payouts/%0A", "/api/v1/x%0Ay"])
def test_a_path_holding_a_newline_gets_the_json_404(integration, path):
    # Found by schemathesis: "." in the catch-all route does not match a newline, which fell
    # through to Django's HTML 404.
    response = integration.post(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_it_switches_the_track_and_answers_the_account(integration, apimarket, alice):
    response = integration.post("/api/v1/accounts/alice/track", {"track": "partner"}, format="json")

    assert response.status_code == 200
    assert response.json()["track"] == "partner" and response.json()["account"] == "alice"
    assert Account.objects.get(external_id="alice").track == "partner"
    assert AuditLog.objects.filter(action="api:account.track").exists()


def test_it_runs_all_jobs_when_none_are_named(integration, runpod):
    response = integration.post("/api/v1/jobs/run", {"at": "2026-02-01T00:00:00+01:00"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["at"], body["applied_events"]) == ("2026-01-31T23:00:00Z", 0)
    assert list(body["results"]) == list(JOBS)  # every job, in order, each with its counts
    assert {name: counts for name, counts in body["results"].items() if name in (
        "revenue_share_gates", "template_gates", "milestones", "expire_credits", "release_holds")} == {
        "revenue_share_gates": {"applications_opened": 0}, "template_gates": {"accruals_released": 0},
        "milestones": {"milestones_awarded": 0}, "expire_credits": {"grants_expired": 0},
        "release_holds": {"accruals_released": 0},
    }
    assert all(set(counts.values()) <= {0} for counts in body["results"].values())


def test_it_runs_jobs_now_without_at(integration):
    before = timezone.now()
    response = integration.post("/api/v1/jobs/run", {"jobs": ["milestones"]}, format="json")
    assert response.status_code == 200
    assert response.json()["results"] == {"milestones": {"milestones_awarded": 0}}
    assert response.json()["at"] >= before.isoformat().replace("+00:00", "Z")[:19]


# --------------------------------------------------------------------------- authentication and scopes

READS = ["/api/v1/accounts/alice", "/api/v1/accounts/alice/stats", "/api/v1/accounts/alice/earnings",
         "/api/v1/accounts/alice/referrals", "/api/v1/templates/comfy"]
STAFF_POSTS = ["/api/v1/applications/1/approve", "/api/v1/applications/1/reject", "/api/v1/accounts/alice/track",
               "/api/v1/jobs/run"]
EVERY_ENDPOINT = ([("get", path) for path in READS] + [("post", "/api/v1/events"), ("get", "/api/v1/applications")]
                  + [("post", path) for path in STAFF_POSTS])


@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT)
def test_it_answers_401_without_a_key(db, method, path):
    response = getattr(client_for(None), method)(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json() == {"error": {"code": "not_authenticated", "fields": {},
                                         "message": "Authentication credentials were not provided."}}


@pytest.mark.parametrize("header", [
    "Bearer rk_abcdefgh_not-the-secret", "Bearer nonsense", "Bearer ", "Basic dXNlcjpwdw==", "rk_abcdefgh_x",
])
def test_it_answers_401_for_a_bad_key(db, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/accounts/alice")
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"invalid_key", "invalid_authorization"}


def test_it_answers_401_for_a_key_with_the_right_prefix_and_a_wrong_secret(db):
    key, plaintext = api_key_create(name="x", scopes=["read"])
    response = client_for(plaintext[:-2] + "zz").get("/api/v1/accounts/alice")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_key"


def test_it_answers_401_for_a_revoked_key(alice):
    key, plaintext = api_key_create(name="old", scopes=["read"])
    api_key_revoke(key=key, reason="leaked")
    response = client_for(plaintext).get("/api/v1/accounts/alice")
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "key_revoked", "message": "this API key has been revoked", "fields": {}}


def test_it_answers_401_for_an_expired_key(alice):
    key, plaintext = api_key_create(name="temp", scopes=["read"], expires_at=timezone.now() + timedelta(days=1))
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(plaintext).get("/api/v1/accounts/alice")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "key_expired"


@pytest.mark.parametrize(("method", "path"), [("post", "/api/v1/events"), ("get", "/api/v1/applications")]
                         + [("post", path) for path in STAFF_POSTS])
def test_it_answers_403_to_a_read_only_key_outside_its_scope(reader, method, path):
    response = getattr(reader, method)(path, {}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "missing_scope"


@pytest.mark.parametrize("path", READS)
def test_it_answers_403_to_an_events_key_reading(pusher, path):
    response = pusher.get(path)
    assert response.status_code == 403
    assert response.json()["error"] == {"code": "missing_scope", "fields": {},
                                        "message": "this API key lacks the 'read' scope"}


def test_it_lets_a_partner_key_read_its_own_account(partner, runpod, alice):
    referred_spenders(alice, 2, "100.00")
    assert partner.get("/api/v1/accounts/alice").json()["balances"]["pending"] == "4.00"
    for path in READS[1:4]:
        assert partner.get(path).status_code == 200, path


@pytest.mark.parametrize("path", ["/api/v1/accounts/bob", "/api/v1/accounts/bob/stats",
                                  "/api/v1/accounts/bob/earnings", "/api/v1/accounts/bob/referrals",
                                  "/api/v1/templates/bobs-template"])
def test_it_hides_other_accounts_from_a_partner_key_with_404(partner, reader, path):
    signup("bob")
    push(event("template.published", "bob", template="bobs-template"))
    assert reader.get(path).status_code == 200, "the account exists"
    response = partner.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["error"]["message"].startswith("no ")


def test_it_refuses_a_partner_key_that_was_granted_more_than_read(alice):
    key, plaintext = api_key_create(name="partner", scopes=["read"], account=alice)
    ApiKey.objects.filter(pk=key.pk).update(scopes=["read", "events:write", "staff"])  # e.g. edited in the admin
    client = client_for(plaintext)
    assert client.post("/api/v1/events", event("usage.charged", "alice", amount="1.00", product="pods"),
                       format="json").status_code == 403
    assert client.post("/api/v1/jobs/run", {}, format="json").json()["error"]["code"] == "account_key"


def test_it_answers_404_for_an_unknown_account(reader):
    response = reader.get("/api/v1/accounts/nobody")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "no account 'nobody'", "fields": {}}}


def test_it_answers_json_404_for_an_unknown_path(reader):
    for path in ["/api/v1/nope", "/api/v1/accounts/alice/", "/api/v1/applications/x/approve"]:
        response = reader.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_it_answers_json_405_for_a_wrong_method(integration):
    response = integration.get("/api/v1/events")
    assert response.status_code == 405
    assert response.json() == {"error": {"code": "method_not_allowed", "message": 'Method "GET" not allowed.',
                                         "fields": {}}}


def test_it_throttles_a_key_with_json_429(reader, alice, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "2/minute"}}
    cache.clear()
    try:
        assert [reader.get("/api/v1/accounts/alice").status_code for _ in range(2)] == [200, 200]
        response = reader.get("/api/v1/accounts/alice")
    finally:
        cache.clear()
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_it_records_when_a_key_was_last_used_at_most_once_a_minute(alice):
    key, plaintext = api_key_create(name="x", scopes=["read"])
    client = client_for(plaintext)
    client.get("/api/v1/accounts/alice")
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None
    client.get("/api/v1/accounts/alice")
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first


def test_it_stores_only_a_hash_of_the_key(db):
    key, plaintext = api_key_create(name="x", scopes=["read", "read"])
    assert plaintext.startswith(f"rk_{key.prefix}_")
    assert plaintext not in (key.hashed_key, key.prefix) and len(key.hashed_key) == 64
    assert key.scopes == ["read"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": "x", "scopes": ["write"]}, "scopes"),
    ({"name": "x", "scopes": []}, "scopes"),
    ({"name": " ", "scopes": ["read"]}, "name"),
    ({"name": "x", "scopes": ["read"], "expires_at": timezone.now() - timedelta(days=1)}, "expires_at"),
])
def test_it_refuses_bad_key_arguments(db, kwargs, field):
    with pytest.raises(ApiKeyInvalid) as exc:
        api_key_create(**kwargs)
    assert field in exc.value.fields


def test_it_refuses_a_partner_key_with_write_scopes(alice):
    with pytest.raises(ApiKeyInvalid) as exc:
        api_key_create(name="x", scopes=["read", "events:write"], account=alice)
    assert exc.value.fields == {"scopes": "a key bound to an account may only have the 'read' scope"}


# --------------------------------------------------------------------------- create_api_key


def test_it_prints_a_new_key_once_from_the_command(alice):
    out = StringIO()
    call_command("create_api_key", "--name", "cli", "--scopes", "events:write,read,staff", "--expires-days", "30",
                 stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Created API key 'cli' (scopes events:write, read, staff; expires ")
    assert lines[2] == "Store it now: it will not be shown again."
    assert client_for(lines[1]).get("/api/v1/accounts/alice").status_code == 200
    key = ApiKey.objects.get(name="cli")
    assert key.scopes == ALL_SCOPES and key.expires_at > timezone.now() + timedelta(days=29)


def test_it_binds_a_key_to_an_account_from_the_command(alice):
    out = StringIO()
    call_command("create_api_key", "--name", "p", "--scopes", "read", "--account", "alice", stdout=out)
    assert ApiKey.objects.get(name="p").account == alice
    assert "reads only account alice" in out.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (["--scopes", "read,admin"], "--scopes: unknown scope 'admin'"),
    (["--scopes", ""], "--scopes: at least one scope is required"),
    (["--scopes", "read", "--account", "nobody"], "--account: unknown account 'nobody'"),
    (["--scopes", "read", "--expires-days", "0"], "--expires-days must be a positive number of days"),
])
def test_it_refuses_bad_command_arguments(db, args, message):
    with pytest.raises(CommandError) as exc:
        call_command("create_api_key", "--name", "x", *args, stdout=StringIO())
    assert message in str(exc.value)
    assert not ApiKey.objects.exists()

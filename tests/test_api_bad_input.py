"""SPEC "Bad input" through the API: every bad input gets an error naming the field, and
changes nothing (events, ledger entries, balances, accounts, ... are counted before and after).

Decided here (see docs/api.md): `amount` is a plain decimal string. A JSON number is refused,
with a fraction (12.5: a float has already lost exactness when it is parsed) or without (12:
API.md's contract is a decimal string, issue 15.12). Exponents ("1e3"), digit separators, a
"+" sign and non-ASCII digits are malformed.
"""
import io
import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from ledger.models import Balance, Entry
from referrals.api.keys import api_key_create
from referrals.engine import events
from referrals.engine.jobs import run_jobs
from referrals.engine.verification import check_integrity, replay_differences
from referrals.models import (
    Account,
    Accrual,
    Application,
    AuditLog,
    CreditGrant,
    Event,
    JobRun,
    Referral,
    Template,
    TrackChange,
)
from tests.helpers import at, buy_credits, event, signup, spend


@pytest.fixture
def api(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + api_key_create(name="billing",
                                                                     scopes=["events:write", "read", "staff"])[1])
    return client


@pytest.fixture
def alice(runpod):
    return signup("alice")


def state() -> dict:
    """Everything an event or a staff action could change."""
    counted = (Event, Entry, Account, Referral, Accrual, Template, Application, TrackChange, CreditGrant, JobRun,
               AuditLog)
    return {
        **{model.__name__: model.objects.count() for model in counted},
        "balances": sorted(Balance.objects.values_list("account_id", "book", "amount")),
        "refunded": sorted(Event.objects.values_list("external_id", "refunded")),
        "tracks": sorted(Account.objects.values_list("external_id", "track")),
        "grants": sorted(CreditGrant.objects.values_list("pk", "remaining")),
        "applications": sorted(Application.objects.values_list("pk", "status", "reason")),
    }


@contextmanager
def changes_nothing():
    before = state()
    yield
    assert state() == before, "a refused input changed something"


def rejected(response) -> dict:
    assert response.status_code == 200, response.content
    (result,) = response.json()["results"]
    assert result["status"] == "rejected", result
    return result["error"]


def post_event(api, raw):
    return api.post("/api/v1/events", raw, format="json")


def charge(**fields):
    return event("usage.charged", "alice", **{"amount": "10.00", "product": "pods", **fields})


# --------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(("amount", "reason"), [
    ("abc", "is not a valid decimal number"),
    ("12,50", "is not a valid decimal number"),
    ("1.2.3", "is not a valid decimal number"),
    ("NaN", "is not a valid decimal number"),
    ("Infinity", "is not a valid decimal number"),
    (12.5, 'must be a decimal string, e.g. "12.34"'),
    (12, 'must be a decimal string, e.g. "12.34"'),
    (0, 'must be a decimal string, e.g. "12.34"'),
    (True, 'must be a decimal string, e.g. "12.34"'),
    (["12.50"], 'must be a decimal string, e.g. "12.34"'),
    ("", "this field is required"),
])
def test_it_rejects_a_malformed_amount_naming_it(api, alice, amount, reason):
    with changes_nothing():
        error = rejected(post_event(api, charge(amount=amount)))
    assert error["fields"] == {"amount": reason}


@pytest.mark.parametrize("amount", ["1e3", "1E-2", "1_000", "١٢", "+5"])
def test_it_rejects_an_amount_that_is_not_a_plain_decimal_string(api, alice, amount):
    with changes_nothing():
        error = rejected(post_event(api, charge(amount=amount)))
    assert list(error["fields"]) == ["amount"]


@pytest.mark.parametrize("amount", ["-5", "0", "0.000000", "-0.01"])
def test_it_rejects_a_negative_or_zero_amount(api, alice, amount):
    with changes_nothing():
        error = rejected(post_event(api, charge(amount=amount)))
    assert error["fields"] == {"amount": "must be greater than zero"}


def test_it_rejects_an_amount_with_more_than_six_decimals(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, charge(amount="12.3456789")))
    assert error["fields"] == {"amount": "must have at most 6 decimal places"}


def test_it_accepts_six_decimals_exactly(api, alice):
    assert post_event(api, charge(amount="0.000001")).json()["results"][0]["status"] == "accepted"


def test_it_rejects_an_amount_above_the_maximum(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, charge(amount="1000000.01")))
    assert error["fields"] == {"amount": "must be at most 1000000"}


# --------------------------------------------------------------------------- what the event refers to


def test_it_rejects_an_unknown_event_type(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, event("usage.refunded", "alice", amount="1.00")))
    assert error["code"] == "unknown_type"
    assert list(error["fields"]) == ["type"]
    assert error["fields"]["type"].startswith("unknown event type 'usage.refunded'; expected one of account.created")


def test_it_rejects_an_event_for_an_unknown_account(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, event("usage.charged", "mallory", amount="1.00", product="pods")))
    assert error == {"code": "unknown_account", "message": "account: unknown account 'mallory'",
                     "fields": {"account": "unknown account 'mallory'"}}


@pytest.mark.parametrize(("fields", "field", "code"), [
    ({"referral_code": "zzzz9999"}, "referral_code", "unknown_code"),
    ({"referral_code": 12345}, "referral_code", "malformed_code"),
    ({"referral_code": "x" * 300}, "referral_code", "malformed_code"),
    ({"click_id": "00000000-0000-4000-8000-000000000000"}, "click_id", "unknown_click"),
    ({"click_id": ["not", "a", "click"]}, "click_id", "malformed_click"),
])
def test_a_sign_up_with_a_bad_code_or_click_is_accepted_unattributed_with_a_warning(api, alice, fields, field,
                                                                                       code):
    response = post_event(api, event("account.created", "bob", email="bob@example.com", **fields))
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["status"] == "accepted" and "error" not in result
    (warning,) = result["warnings"]
    assert warning["field"] == field and warning["code"] == code and warning["message"]
    bob = Account.objects.get(external_id="bob")
    assert not Referral.objects.filter(referred=bob).exists()
    # The account is kept: its later events are applied, and the log replays the same.
    assert post_event(api, event("usage.charged", "bob", amount="5.00", product="pods")).json()[
        "results"][0]["status"] == "accepted"
    assert Referral.objects.count() == 0
    assert check_integrity() == [] and replay_differences() == []


def test_a_sign_up_with_a_disabled_referral_code_is_accepted_unattributed_with_a_warning(api, alice):
    Account.objects.filter(pk=alice.pk).update(code_enabled=False)
    response = post_event(api, event("account.created", "bob", email="bob@example.com",
                                     referral_code=alice.referral_code))
    (result,) = response.json()["results"]
    assert result["status"] == "accepted"
    assert result["warnings"] == [{"field": "referral_code", "code": "disabled_code",
                                   "message": "this referral code is disabled; the account is not attributed"}]
    assert Account.objects.filter(external_id="bob").exists() and not Referral.objects.exists()
    # Enabled again later: the replay still leaves the sign-up unattributed, as it was answered.
    Account.objects.filter(pk=alice.pk).update(code_enabled=True)
    assert replay_differences() == []


def test_a_clean_sign_up_answers_no_warnings(api, alice):
    response = post_event(api, event("account.created", "bob", email="bob@example.com",
                                     referral_code=alice.referral_code))
    (result,) = response.json()["results"]
    assert result == {"id": result["id"], "status": "accepted"}
    assert Referral.objects.get().referrer == alice


def test_it_rejects_a_second_sign_up_of_the_same_account(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, event("account.created", "alice", email="alice2@example.com")))
    assert error["code"] == "account_exists" and list(error["fields"]) == ["account"]


def test_it_rejects_usage_on_an_unknown_template(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, charge(template="nope", runtime_seconds=60)))
    assert error["fields"] == {"template": "unknown template 'nope'"}


# --------------------------------------------------------------------------- time


def test_it_rejects_an_event_in_the_future(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, {**charge(), "occurred_at": "2999-01-01T00:00:00Z"}))
    assert error["fields"] == {"occurred_at": "is in the future"}


@pytest.mark.parametrize(("occurred_at", "reason"), [
    ("2026-01-01T00:00:00", "must include a time zone (e.g. Z or +00:00)"),
    ("yesterday", "must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z"),
    (1767225600, "must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z"),
])
def test_it_rejects_an_occurred_at_that_is_not_a_zoned_iso_date_time(api, alice, occurred_at, reason):
    with changes_nothing():
        error = rejected(post_event(api, {**charge(), "occurred_at": occurred_at}))
    assert error["fields"] == {"occurred_at": reason}


@pytest.mark.parametrize("occurred_at", ["2026-02-30T00:00:00Z", "2026-01-01T25:00:00Z", "0001-01-01T00:00:00+05:00"])
def test_it_never_fails_on_an_impossible_date(api, alice, occurred_at):
    with changes_nothing():
        response = post_event(api, {"events": [{**charge(), "occurred_at": occurred_at},
                                               event("usage.charged", "mallory", amount="1.00", product="pods")]})
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["status"] == "rejected"
    assert second["error"]["code"] == "unknown_account", "one bad event does not sink the batch"


@pytest.mark.parametrize("occurred_at", ["2026-02-30T00:00:00Z", "0001-01-01T00:00:00+05:00"])
def test_it_names_occurred_at_for_an_impossible_date(api, alice, occurred_at):
    error = rejected(post_event(api, {**charge(), "occurred_at": occurred_at}))
    assert list(error["fields"]) == ["occurred_at"]


# --------------------------------------------------------------------------- ids, refunds, redemptions


def test_it_answers_a_duplicate_id_as_a_duplicate_and_changes_nothing(api, alice):
    raw = charge(id="c-1")
    assert post_event(api, raw).json()["results"] == [{"id": "c-1", "status": "accepted"}]
    with changes_nothing():
        assert post_event(api, raw).json()["results"] == [{"id": "c-1", "status": "duplicate"}]
        assert post_event(api, {"events": [raw, raw]}).json()["results"] == [{"id": "c-1", "status": "duplicate"}] * 2


def test_it_rejects_the_same_id_with_other_content(api, alice):
    post_event(api, charge(id="c-1"))
    with changes_nothing():
        error = rejected(post_event(api, charge(id="c-1", product="serverless")))
    assert error["code"] == "id_conflict" and list(error["fields"]) == ["id"]


def test_it_rejects_a_refund_larger_than_the_payment(api, alice):
    paid = spend("alice", "10.00", when=at(1))
    post_event(api, event("payment.refunded", "alice", when=at(2), amount="4.00", refunds=paid))
    with changes_nothing():
        error = rejected(post_event(api, event("payment.refunded", "alice", when=at(3), amount="6.01", refunds=paid)))
    assert error == {"code": "refund_too_large", "message": "amount: is larger than what is left to refund (6.00)",
                     "fields": {"amount": "is larger than what is left to refund (6.00)"}}


def test_it_rejects_a_refund_of_an_unknown_payment(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, event("payment.refunded", "alice", amount="1.00", refunds="nope")))
    assert error["fields"] == {"refunds": "unknown event 'nope'"}


def test_it_rejects_a_refund_of_another_accounts_payment(api, alice):
    signup("bob")
    paid = buy_credits("bob", "10.00", when=at(1))
    with changes_nothing():
        error = rejected(post_event(api, event("payment.refunded", "alice", when=at(2), amount="1.00", refunds=paid)))
    assert error["fields"] == {"refunds": "belongs to a different account"}


def test_it_rejects_a_redemption_above_the_credits(api, apimarket):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))  # $2.50 of sign-up credit
    with changes_nothing():
        error = rejected(post_event(api, event("credits.redeemed", "bob", when=at(2), amount="2.51")))
    assert error == {"code": "insufficient_credits", "message": "amount: is more than the account's spendable "
                     "credits (2.50)", "fields": {"amount": "is more than the account's spendable credits (2.50)"}}


# --------------------------------------------------------------------------- fields


def test_it_names_every_missing_field(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, {"type": "usage.charged"}))
    assert error["fields"] == {"id": "this field is required", "account": "this field is required",
                               "occurred_at": "this field is required", "amount": "this field is required",
                               "product": "this field is required"}


def test_it_rejects_an_extra_unknown_field(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, charge(coupon="SAVE10")))
    assert error["fields"] == {"coupon": "is not a field of usage.charged events"}


def test_it_rejects_a_field_of_the_wrong_type(api, alice):
    with changes_nothing():
        error = rejected(post_event(api, {**charge(runtime_seconds="60"), "account": ["alice"]}))
    assert error["fields"] == {"account": "must be a string",
                               "runtime_seconds": "must be a whole number of seconds, zero or more"}


def test_it_rejects_a_batch_item_that_is_not_an_object(api, alice):
    with changes_nothing():
        response = post_event(api, {"events": ["usage.charged"]})
    assert response.json()["results"] == [{"id": "", "status": "rejected", "error": {
        "code": "invalid", "message": "event: must be a JSON object", "fields": {"event": "must be a JSON object"}}}]


def test_it_isolates_an_event_that_trips_an_internal_error(api, alice, monkeypatch):
    real_validate = events.validate_event

    def validate(raw, **kwargs):
        if raw.get("id") == "boom":
            raise RuntimeError("a bug, not bad input")
        return real_validate(raw, **kwargs)

    monkeypatch.setattr(events, "validate_event", validate)
    with changes_nothing():
        response = post_event(api, {"events": [charge(id="boom"), {**charge(id="after"), "account": "mallory"}]})
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"id": "boom", "status": "rejected", "error": {
            "code": "internal_error", "message": "this event could not be processed; nothing of it was applied",
            "fields": {}}},
        {"id": "after", "status": "rejected", "error": {
            "code": "unknown_account", "message": "account: unknown account 'mallory'",
            "fields": {"account": "unknown account 'mallory'"}}},
    ]


def test_it_ignores_a_click_id_that_is_not_ascii_digits_with_a_warning(api, alice):
    (result,) = post_event(api, event("account.created", "bob", email="bob@example.com", click_id="²")).json()[
        "results"]
    assert result["status"] == "accepted"
    assert result["warnings"] == [{"field": "click_id", "code": "unknown_click",
                                   "message": "unknown click '²'; it is ignored"}]
    assert not Referral.objects.exists()


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(("body", "content_type"), [
    ("not json", "application/json"),
    ('{"id": "x",', "application/json"),
    ('{"amount": NaN}', "application/json"),
    ("id=x&type=usage.charged", "application/x-www-form-urlencoded"),
    (b"\xff\xfe{}", "application/json"),
    ("[" * 100_000, "application/json"),
])
def test_it_answers_400_for_a_body_that_is_not_json(api, alice, body, content_type):
    with changes_nothing():
        response = api.generic("POST", "/api/v1/events", body, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert list(response.json()["error"]["fields"]) == ["body"]


def test_it_reads_a_json_body_whatever_its_content_type(api, alice):
    response = api.generic("POST", "/api/v1/events", json.dumps(charge()), content_type="text/plain")
    assert response.json()["results"][0]["status"] == "accepted"


@pytest.mark.parametrize(("body", "field"), [
    ([], "body"),
    ([{"id": "x", "type": "usage.charged"}], "body"),
    ("usage.charged", "body"),
    (5, "body"),
    (None, "body"),
    ({}, "body"),
    ({"id": "x", "account": "alice"}, "body"),
    ({"events": {"id": "x"}}, "events"),
    ({"events": "x"}, "events"),
    ({"events": [], "source": "billing"}, "source"),
])
def test_it_answers_400_for_a_body_that_is_neither_an_event_nor_a_batch(api, alice, body, field):
    with changes_nothing():
        response = api.generic("POST", "/api/v1/events", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert list(response.json()["error"]["fields"]) == [field]


def test_it_answers_400_for_an_empty_body(api, alice):
    with changes_nothing():
        response = api.generic("POST", "/api/v1/events", "", content_type="application/json")
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["body"]


def test_it_refuses_a_batch_over_1000_events_and_applies_none_of_them(api, alice):
    with changes_nothing():
        batch = [charge() for _ in range(1001)]
    response = post_event(api, {"events": batch})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"events": "at most 1000 events per batch (got 1001); split the batch"}


def test_it_takes_a_batch_of_exactly_1000_events(api, alice):
    response = post_event(api, {"events": [event("usage.charged", "nobody", amount="1", product="p")] * 1000})
    assert response.status_code == 200 and len(response.json()["results"]) == 1000


def test_it_answers_413_for_a_body_too_large(api, alice):
    with changes_nothing():
        body = json.dumps({"events": [charge(product="x" * 1000)] * 5000})
    response = api.generic("POST", "/api/v1/events", body, content_type="application/json")
    assert response.status_code == 413
    assert list(response.json()["error"]["fields"]) == ["body"]


# --------------------------------------------------------------------------- staff actions and queries


@pytest.mark.parametrize(("body", "field"), [
    ({"at": "yesterday"}, "at"),
    ({"at": "2026-01-01T00:00:00"}, "at"),
    ({"at": "2026-02-30T00:00:00Z"}, "at"),
    ({"at": "0001-01-01T00:00:00+05:00"}, "at"),
    ({"at": 5}, "at"),
    ({"at": "2100-01-01T00:00:00Z"}, "at"),
    ({"jobs": ["milestones", "payday"]}, "jobs"),
    ({"jobs": "milestones"}, "jobs"),
    ({"jobs": []}, "jobs"),
    ({"jobs": [1]}, "jobs"),
    ({"names": ["milestones"]}, "names"),
])
def test_it_refuses_bad_job_run_input(api, alice, body, field):
    with changes_nothing():
        response = api.post("/api/v1/jobs/run", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_it_refuses_a_job_run_in_the_future_beyond_the_clock_skew(api, alice, settings):
    """Issue 15.9: an `at` in 2100 expired live sign-up credits."""
    skew = settings.REFERRAL["MAX_CLOCK_SKEW_SECONDS"]
    later = timezone.now() + timedelta(seconds=skew + 60)
    with changes_nothing():
        response = api.post("/api/v1/jobs/run", {"at": later.isoformat()}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "at": f"is in the future (more than {skew} seconds ahead of the server's clock)"}
    within = timezone.now() + timedelta(seconds=skew // 2)
    assert api.post("/api/v1/jobs/run", {"at": within.isoformat(), "jobs": ["milestones"]},
                    format="json").status_code == 200


@pytest.mark.parametrize("at", ["2100-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "tomorrow"])
def test_it_refuses_a_future_or_malformed_at_on_the_command_line(alice, at):
    with changes_nothing(), pytest.raises(CommandError, match="--at"):
        call_command("run_jobs", "--at", at, stdout=io.StringIO())


@pytest.mark.parametrize("body", [{"track": "gold"}, {"track": ""}, {}, {"track": None}])
def test_it_refuses_an_unknown_track(api, alice, body):
    with changes_nothing():
        response = api.post("/api/v1/accounts/alice/track", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["track"]


@pytest.fixture
def application(alice):
    for i in range(25):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "20.00", when=at(2))
    run_jobs(at=at(3), names=["revenue_share_gates"])
    return Application.objects.get()


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": None}])
def test_it_requires_a_reason_to_reject_an_application(api, application, body):
    with changes_nothing():
        response = api.post(f"/api/v1/applications/{application.pk}/reject", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["reason"]


def test_it_refuses_an_unknown_field_when_approving(api, application):
    with changes_nothing():
        response = api.post(f"/api/v1/applications/{application.pk}/approve", {"reson": "typo"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"reson": "is not a field of this request"}


@pytest.mark.parametrize("path", ["/api/v1/accounts/alice/referrals?status=won", "/api/v1/applications?status=won"])
def test_it_refuses_an_unknown_status_filter(api, alice, path):
    response = api.get(path)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["status"]


@pytest.mark.parametrize("cursor", ["garbage", "cD1hYmM=", "cD05OTk5OTk5OTk5OTk5OTk5OTk5OTk5"])
def test_it_refuses_a_forged_cursor(api, alice, cursor):
    response = api.get(f"/api/v1/accounts/alice/referrals?cursor={cursor}")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["cursor"]


def test_it_answers_404_for_an_application_id_beyond_the_database_range(api, alice):
    response = api.post("/api/v1/applications/99999999999999999999999/approve")
    assert response.status_code == 404

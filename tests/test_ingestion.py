"""Batch ingestion (referrals.engine.ingestion): set-based storing of stateless money events, answers
in input order, stateful events kept synchronous, and applying stored events exactly once."""
import threading

import pytest
from celery import current_app
from django.db import DatabaseError, connection, connections
from django.db.models import F
from django.test import override_settings
from rest_framework.test import APIClient

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.api.keys import api_key_create
from referrals.engine import ingestion
from referrals.engine.ingestion import apply_pending, ingest_batch
from referrals.engine.verification import check_integrity, replay_differences
from referrals.models import Account, Accrual, Event, Referral
from referrals.presets import load_preset
from tests.helpers import at, event, signup, usd


@pytest.fixture
def referred(runpod):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    return alice


def charges(n: int, account: str = "bob", amount: str = "1.00", prefix: str = "c") -> list[dict]:
    return [event("usage.charged", account, id=f"{prefix}-{i}", when=at(2), amount=amount, product="pods")
            for i in range(n)]


def statuses(results) -> list[str]:
    return [r.status for r in results]


def test_it_stores_a_thousand_charges_with_a_bounded_number_of_queries(referred, settings,
                                                                       django_assert_max_num_queries):
    settings.INGEST_INLINE_APPLY_MAX = 0  # leave applying to the task queued on commit
    # Dedupe, accounts, templates, one INSERT: on SQLite the INSERT is split into batches by
    # its limit on query parameters; on PostgreSQL it is a single statement.
    with django_assert_max_num_queries(8 if connection.vendor == "postgresql" else 30):
        results = ingest_batch(charges(1000))
    assert statuses(results) == ["accepted"] * 1000
    assert Event.objects.filter(external_id__startswith="c-", applied_at__isnull=True).count() == 1000


def test_it_applies_stored_charges_like_one_by_one_ingestion(referred, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    ingest_batch(charges(40, amount="25.00"))
    assert balances_for(referred.pk).get(Book.PENDING, 0) == 0

    assert apply_pending() == 40

    assert balances_for(referred.pk)[Book.PENDING] == usd("20.00")  # 2% of 40 x $25, held for the gate
    assert Referral.objects.get(referred__external_id="bob").spend == usd("1000.00")
    assert not Event.objects.filter(applied_at__isnull=True).exists()
    assert check_integrity() == []
    assert replay_differences() == []


def test_it_applies_a_small_batch_inside_the_request(referred):
    ingest_batch(charges(3, amount="100.00"))
    assert balances_for(referred.pk)[Book.PENDING] == usd("6.00")


def test_it_stores_and_applies_a_batch_in_one_transaction_without_claiming_it(referred, settings,
                                                                             django_assert_max_num_queries):
    settings.INGEST_INLINE_APPLY_MAX = 1000
    # Dedupe, accounts, templates, the accounts' locks, one INSERT, the claim of what earlier
    # requests left pending, then the engine's loading queries and writes.
    with django_assert_max_num_queries(30 if connection.vendor == "postgresql" else 60):
        results = ingest_batch(charges(500, amount="2.00"))
    assert statuses(results) == ["accepted"] * 500
    assert balances_for(referred.pk)[Book.PENDING] == usd("20.00")  # 2% of 500 x $2
    # Stored as applied (one moment for all, the INSERT's), in the transaction that applied
    # them: never pending, never claimed.
    stored = Event.objects.filter(external_id__startswith="c-")
    assert stored.count() == 500 and stored.values("applied_at").distinct().count() == 1
    if connection.vendor == "postgresql":
        assert not stored.exclude(applied_at=F("received_at")).exists()
    assert check_integrity() == [] and replay_differences() == []


def test_it_applies_what_an_earlier_request_left_pending_before_a_batch_applied_in_its_request(referred, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    ingest_batch(charges(3, amount="10.00", prefix="old"))  # stored, left to the task
    settings.INGEST_INLINE_APPLY_MAX = 1000
    ingest_batch(charges(2, amount="10.00", prefix="new"))
    assert not Event.objects.filter(applied_at__isnull=True).exists()
    # Applied in id order, the old ones first (their accruals were written first), as a replay does.
    applied = list(Accrual.objects.order_by("id").values_list("event__external_id", flat=True))
    assert applied == ["old-0", "old-1", "old-2", "new-0", "new-1"]
    assert balances_for(referred.pk)[Book.PENDING] == usd("1.00")
    assert check_integrity() == [] and replay_differences() == []


def test_a_batch_whose_apply_fails_in_its_request_stays_stored_for_the_task(referred, settings, monkeypatch,
                                                                           django_capture_on_commit_callbacks):
    settings.INGEST_INLINE_APPLY_MAX = 1000

    def broken(events, **kwargs):
        Accrual.objects.filter(pk=-1).update(amount=1)  # a write the rollback must take with it
        raise DatabaseError("the database went away mid-apply")

    monkeypatch.setattr(ingestion.engine, "apply_events", broken)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        results = ingest_batch(charges(4, amount="50.00"))
    assert statuses(results) == ["accepted"] * 4
    assert Event.objects.filter(external_id__startswith="c-", applied_at__isnull=True).count() == 4
    assert balances_for(referred.pk).get(Book.PENDING, 0) == 0
    monkeypatch.undo()
    for callback in callbacks:
        callback()  # the task queued on commit
    assert balances_for(referred.pk)[Book.PENDING] == usd("4.00")
    assert check_integrity() == [] and replay_differences() == []


def test_it_queues_a_large_batch_on_commit_and_applies_it(referred, settings, django_capture_on_commit_callbacks):
    settings.INGEST_INLINE_APPLY_MAX = 10
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ingest_batch(charges(11, amount="100.00"))
    assert len(callbacks) == 1
    assert Event.objects.filter(applied_at__isnull=True).count() == 11
    callbacks[0]()  # what runs when the request's transaction commits
    assert balances_for(referred.pk)[Book.PENDING] == usd("22.00")


def test_it_answers_a_mixed_batch_in_input_order(referred):
    batch = [
        event("account.created", "carol", id="m-1", when=at(1), email="carol@example.com",
              referral_code=referred.referral_code),
        event("usage.charged", "carol", id="m-2", when=at(2), amount="10.00", product="pods"),
        event("usage.charged", "ghost", id="m-3", when=at(2), amount="10.00", product="pods"),
        event("usage.charged", "carol", id="m-2", when=at(2), amount="10.00", product="pods"),
        event("usage.charged", "carol", id="m-2", when=at(2), amount="11.00", product="pods"),
        event("usage.charged", "carol", id="m-4", when=at(2), amount="1.00", product="pods", template="nope"),
        event("payment.refunded", "carol", id="m-5", when=at(3), amount="4.00", refunds="m-2"),
        event("payment.refunded", "carol", id="m-6", when=at(3), amount="7.00", refunds="m-2"),
    ]
    results = [r.as_dict() for r in ingest_batch(batch)]
    assert [(r["id"], r["status"], r.get("error", {}).get("code")) for r in results] == [
        ("m-1", "accepted", None), ("m-2", "accepted", None), ("m-3", "rejected", "unknown_account"),
        ("m-2", "duplicate", None), ("m-2", "rejected", "id_conflict"),
        ("m-4", "rejected", "unknown_template"),
        ("m-5", "accepted", None),  # sees m-2 applied before it
        ("m-6", "rejected", "refund_too_large"),  # 4 + 7 > 10
    ]
    assert results[2]["error"]["fields"] == {"account": "unknown account 'ghost'"}
    assert Referral.objects.get(referred__external_id="carol").spend == usd("6.00")
    assert check_integrity() == [] and replay_differences() == []


def test_it_checks_a_redemption_against_charges_stored_earlier_by_another_batch(apimarket, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))  # bob gets $2.50 of sign-up credit
    ingest_batch([event("plan.purchased", "bob", id="p-1", when=at(2), amount="20.00", plan="pro")])
    assert Event.objects.get(external_id="p-1").applied_at is None

    (result,) = ingest_batch([event("credits.redeemed", "bob", id="r-1", when=at(3), amount="2.00")])

    assert result.status == "accepted"
    ids = list(Event.objects.filter(external_id__in=["p-1", "r-1"]).order_by("applied_at").values_list(
        "external_id", flat=True))
    assert ids == ["p-1", "r-1"]  # the stored purchase was applied first, in id order
    assert balances_for(alice.pk)[Book.CREDITS] == usd("1.00")  # 5% of the plan


def test_it_answers_a_repeated_batch_with_duplicates_and_changes_nothing(referred):
    ingest_batch(charges(5, amount="10.00"))
    before = balances_for(referred.pk)
    assert statuses(ingest_batch(charges(5, amount="10.00"))) == ["duplicate"] * 5
    assert balances_for(referred.pk) == before
    assert Event.objects.filter(external_id__startswith="c-").count() == 5


def test_it_keeps_unapplied_events_out_of_the_replay(referred, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    ingest_batch(charges(3, amount="10.00"))
    assert replay_differences() == []
    apply_pending()
    assert replay_differences() == []


def test_it_applies_pending_events_before_jobs_run_answers(referred, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='ops', scopes=['staff', 'read'])[1]}")
    ingest_batch(charges(4, amount="50.00"))
    assert client.get("/api/v1/accounts/alice").json()["balances"]["pending"] == "0.00"

    response = client.post("/api/v1/jobs/run", {"jobs": ["release_holds"]}, format="json")

    assert response.status_code == 200 and response.json()["applied_events"] == 4
    assert client.get("/api/v1/accounts/alice").json()["balances"]["pending"] == "4.00"


def test_it_skips_an_event_that_cannot_be_applied_and_records_why(referred, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    ingest_batch(charges(2, amount="10.00"))
    # The account vanished between storing and applying (only possible by hand): the event is
    # kept out of the ledger with its reason instead of blocking the account's other events.
    Event.objects.filter(external_id="c-0").update(payload={**Event.objects.get(external_id="c-0").payload,
                                                             "account": "nobody"})
    assert apply_pending() == 1
    failed = Event.objects.get(external_id="c-0")
    assert failed.applied_at is None and "unknown account" in failed.apply_error
    assert check_integrity() == [] and replay_differences() == []


@pytest.mark.django_db(transaction=True)
def test_it_applies_each_event_once_with_two_appliers_at_once():
    if connection.vendor != "postgresql":
        pytest.skip(reason="needs PostgreSQL row locks: set DATABASE_URL (make test provisions it)")
    load_preset("runpod")
    alice = signup("alice")
    for name in ("bob", "dave"):
        signup(name, code=alice.referral_code, when=at(1))
    # The task goes to an in-memory broker nobody consumes, so the two appliers below find
    # all 120 events pending.
    conf = current_app.conf  # the project's app reads Django settings under the CELERY_ namespace
    broker, eager = conf.CELERY_BROKER_URL, conf.CELERY_TASK_ALWAYS_EAGER
    conf.CELERY_BROKER_URL, conf.CELERY_TASK_ALWAYS_EAGER = "memory://", False
    try:
        with override_settings(INGEST_INLINE_APPLY_MAX=0):
            ingest_batch(charges(60, "bob", "2.00", "b") + charges(60, "dave", "2.00", "d"))
    finally:
        conf.CELERY_BROKER_URL, conf.CELERY_TASK_ALWAYS_EAGER = broker, eager
        # Pools are built from the broker URL on first use: drop the in-memory one.
        current_app._pool = None
        current_app.amqp._producer_pool = None
    assert Event.objects.filter(applied_at__isnull=True).count() == 120
    barrier = threading.Barrier(2)
    applied = [0, 0]

    def applier(i):
        try:
            barrier.wait()
            applied[i] = apply_pending()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=applier, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(applied) == 120
    assert balances_for(alice.pk)[Book.PENDING] == usd("4.80")  # 2% of 120 x $2, exactly once
    assert Account.objects.get(external_id="bob").referred_by.spend == usd("120.00")
    assert check_integrity() == []


def test_it_applies_an_accounts_older_pending_events_first_and_leaves_newer_ones(referred, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    ingest_batch(charges(3, amount="10.00", prefix="old"))
    ingest_batch(charges(2, amount="10.00", prefix="new"))
    second_batch = list(Event.objects.filter(external_id__startswith="new-").order_by("id")
                        .values_list("pk", flat=True))

    assert apply_pending(event_ids=second_batch[:1]) == 4  # the three older ones, then new-0

    assert list(Event.objects.filter(applied_at__isnull=True).values_list("external_id", flat=True)) == ["new-1"]

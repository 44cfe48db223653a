"""Stripe webhooks: stored raw, signature-verified, idempotent by event id and tolerant of
out-of-order delivery — the same set replayed three times in shuffled order gives one state."""
import random
import time

import pytest
from django.conf import settings

from ledger.models import Book
from ledger.selectors import balances_for
from payouts import services
from payouts.fakes.stripe import event, sign
from payouts.models import Payout, PayoutMethod, StripeWebhook
from payouts.webhooks import REJECTED_BODY_KEPT
from referrals.engine.verification import verify
from tests.helpers import at, buy_credits, signup, usd

SECRET = "whsec_test_fake"
URL = "/payouts/webhooks/stripe"


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_WEBHOOK_TOLERANCE = 300
    settings.PAYOUT_PROCESS_ON_APPROVE = False


@pytest.fixture
def world(vast, staff):
    """alice (45.00 cash) with a Stripe method and two approved payouts of 20.00 each."""
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    buy_credits("bob", "2000.00", when=at(2))
    alice.refresh_from_db()
    services.payout_method_set(account=alice, type="stripe", connected_account="acct_alice0001", ready=False)
    PayoutMethod.objects.filter(account=alice).update(ready=True)
    first, second = (services.payout_approve(
        payout=services.payout_request(account=alice, amount="20.00", method="stripe"), actor=staff)
        for _ in range(2))
    return {"alice": alice, "first": first, "second": second}


def _transfer(payout, transfer_id, *, reversed_=False):
    return {"id": transfer_id, "object": "transfer", "amount": 2000, "currency": "usd",
            "destination": "acct_alice0001", "reversed": reversed_,
            "metadata": {"payout_id": str(payout.pk), "attempt": str(payout.attempt)}}


def _events(world) -> list[str]:
    now = int(time.time())
    first, second = world["first"], world["second"]
    return [
        event("evt_1", "transfer.created", _transfer(first, "tr_1"), created=now - 50),
        event("evt_2", "transfer.created", _transfer(second, "tr_2"), created=now - 40),
        event("evt_3", "transfer.reversed", _transfer(second, "tr_2", reversed_=True), created=now - 30),
        event("evt_4", "account.updated", {"id": "acct_alice0001", "object": "account",
                                           "capabilities": {"transfers": "inactive"}}, created=now - 20),
        event("evt_5", "account.updated", {"id": "acct_alice0001", "object": "account",
                                           "capabilities": {"transfers": "active"}}, created=now - 10),
        event("evt_6", "payout.paid", {"id": "po_1", "object": "payout", "status": "paid"},
              created=now - 9, account="acct_alice0001"),
        event("evt_7", "payout.failed", {"id": "po_2", "object": "payout", "status": "failed",
                                         "failure_message": "account closed"}, created=now - 5,
              account="acct_alice0001"),
    ]


def _deliver(client, body: str, *, secret: str = SECRET, timestamp: int | None = None):
    return client.post(URL, data=body, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=sign(body, secret, timestamp=timestamp))


def _state(world) -> dict:
    method = PayoutMethod.objects.get(account=world["alice"], type="stripe")
    return {
        "payouts": sorted(Payout.objects.values_list("pk", "status", "provider_reference")),
        "books": balances_for(world["alice"].pk),
        "method": (method.ready, method.details.get("bank_payout", {}).get("status")),
    }


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_it_reaches_one_state_whatever_the_order_and_number_of_deliveries(client, world, seed):
    bodies = _events(world)
    rng = random.Random(seed)
    states = []
    for round_ in range(3):
        shuffled = rng.sample(bodies, len(bodies))
        answers = [_deliver(client, body) for body in shuffled]
        assert all(a.status_code == 200 for a in answers), [a.content for a in answers]
        if round_:
            assert {a.json()["status"] for a in answers} == {"duplicate"}
        states.append(_state(world))
    assert states[0] == states[1] == states[2]
    first, second = world["first"], world["second"]
    assert states[0]["payouts"] == sorted([(first.pk, "paid", "tr_1"), (second.pk, "failed", "tr_2")])
    assert states[0]["method"] == (True, "failed")
    books = states[0]["books"]
    assert (books[Book.CASH], books[Book.RESERVED]) == (usd("25.00"), 0)
    assert StripeWebhook.objects.filter(status="processed").count() == 7
    assert verify() == []


def test_it_rejects_a_tampered_body_and_keeps_a_bounded_record_of_it(client, world):
    body = _events(world)[0]
    signature = sign(body, SECRET)
    tampered = body.replace('"amount": 2000', '"amount": 2')
    answer = client.post(URL, data=tampered, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)
    assert answer.status_code == 400
    stored = StripeWebhook.objects.get()
    assert (stored.status, stored.body) == ("rejected", tampered[:REJECTED_BODY_KEPT])
    assert f"{len(tampered)} bytes" in stored.error
    assert stored.headers["Stripe-Signature"] == signature
    assert Payout.objects.get(pk=world["first"].pk).status == "approved"


def test_it_stores_only_a_bounded_record_of_unsigned_deliveries(client, world):
    """Issue 15.8: five unsigned 2 MB posts were stored whole (10.6 MB) before verification."""
    padding = "x" * (settings.STRIPE_WEBHOOK_MAX_BYTES - 1000)
    body = event("evt_big", "transfer.created", {"id": "tr_1", "padding": padding}, created=int(time.time()))
    for _ in range(5):
        answer = client.post(URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1,v1=00")
        assert answer.status_code == 400
    stored = list(StripeWebhook.objects.values_list("status", "body", "headers"))
    assert len(stored) == 5 and {status for status, _, _ in stored} == {"rejected"}
    assert sum(len(body) + len(str(headers)) for _, body, headers in stored) < 5 * 2 * REJECTED_BODY_KEPT


def test_it_refuses_a_delivery_over_the_size_limit_unread_and_unstored(client, world):
    body = event("evt_big", "transfer.created", {"id": "tr_1", "padding": "x" * settings.STRIPE_WEBHOOK_MAX_BYTES},
                 created=int(time.time()))
    answer = client.post(URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(body, SECRET))
    assert answer.status_code == 413
    assert not StripeWebhook.objects.exists()


def test_it_rejects_a_signed_event_holding_text_no_column_can_store(client, world):
    body = event("evt_\u0000", "transfer.created", _transfer(world["first"], "tr_1"), created=int(time.time()))
    answer = _deliver(client, body)
    assert answer.status_code == 400
    stored = StripeWebhook.objects.get()
    assert stored.status == "rejected" and "NUL" in stored.error
    assert Payout.objects.get(pk=world["first"].pk).status == "approved"


def test_it_rejects_a_stale_signature_and_a_wrong_secret(client, world):
    body = _events(world)[0]
    assert _deliver(client, body, timestamp=int(time.time()) - 301).status_code == 400
    assert _deliver(client, body, secret="whsec_someone_else").status_code == 400
    assert client.post(URL, data=body, content_type="application/json").status_code == 400  # no signature
    assert set(StripeWebhook.objects.values_list("status", flat=True)) == {"rejected"}
    assert Payout.objects.get(pk=world["first"].pk).status == "approved"


def test_it_answers_a_replayed_event_as_a_duplicate_without_effect(client, world):
    body = _events(world)[0]
    assert _deliver(client, body).json()["status"] == "processed"
    cash = balances_for(world["alice"].pk)
    replay = _deliver(client, body)
    assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
    assert balances_for(world["alice"].pk) == cash


def test_it_ignores_unknown_event_types_and_transfers_of_other_attempts(client, world):
    now = int(time.time())
    assert _deliver(client, event("evt_x", "charge.succeeded", {"id": "ch_1"}, created=now)).json()["status"] \
        == "ignored"
    stale = _transfer(world["first"], "tr_9")
    stale["metadata"]["attempt"] = "7"
    assert _deliver(client, event("evt_y", "transfer.created", stale, created=now)).json()["status"] == "processed"
    assert Payout.objects.get(pk=world["first"].pk).status == "approved"


def test_it_refuses_get_and_needs_no_csrf_token(world):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    assert client.get(URL).status_code == 405
    assert _deliver(client, _events(world)[0]).status_code == 200

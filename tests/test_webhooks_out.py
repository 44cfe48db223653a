"""Outbound webhooks against a real HTTP server on 127.0.0.1: signed deliveries for the domain
messages, exponential backoff, endpoints disabled after repeated failures, and the admin."""
import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from integrations.models import WebhookDelivery, WebhookEndpoint
from integrations.services import backoff, deliver_due, on_outbox_message, webhook_deliver, webhook_redeliver
from referrals.engine import outbox
from referrals.models import AuditLog
from tests.helpers import at, buy_plan, signup


class Receiver:
    """A local HTTP server that records what it receives and answers the queued statuses."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                status = receiver.answers.pop(0) if receiver.answers else 200
                reply = json.dumps({"received": status < 300}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def endpoint(db, receiver):
    return WebhookEndpoint.objects.create(url=receiver.url, description="billing")


def verify(secret: str, request: dict) -> bool:
    timestamp = request["headers"]["X-Referrals-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"]["X-Referrals-Signature"], f"v1={expected}")


def test_it_delivers_signed_referral_and_commission_messages(apimarket, endpoint, receiver,
                                                             django_capture_on_commit_callbacks):
    alice = signup("alice")
    with django_capture_on_commit_callbacks(execute=True):
        signup("bob", code=alice.referral_code, when=at(1))
        buy_plan("bob", "10.00", when=at(2))

    kinds = [r["headers"]["X-Referrals-Event"] for r in receiver.requests]
    assert {"referral.created", "referral.converted", "commission.created"} <= set(kinds)
    assert all(verify(endpoint.secret, r) for r in receiver.requests)
    commission = next(json.loads(r["body"]) for r in receiver.requests
                      if r["headers"]["X-Referrals-Event"] == "commission.created"
                      and json.loads(r["body"])["account"] == "alice")
    assert commission["type"] == "commission.created" and commission["data"]["amount"] == "0.50"
    assert all(d.status == "succeeded" and d.response_code == 200 for d in WebhookDelivery.objects.all())


def test_it_refuses_a_tampered_body_with_the_same_signature(apimarket, endpoint, receiver,
                                                            django_capture_on_commit_callbacks):
    alice = signup("alice")
    with django_capture_on_commit_callbacks(execute=True):
        signup("bob", code=alice.referral_code, when=at(1))
    request = dict(receiver.requests[0])
    assert verify(endpoint.secret, request)
    assert not verify(endpoint.secret, {**request, "body": request["body"].replace(b"bob", b"eve")})
    assert not verify("whsec_other", request)


def test_it_sends_only_the_kinds_and_account_an_endpoint_asked_for(apimarket, receiver,
                                                                  django_capture_on_commit_callbacks):
    alice = signup("alice")
    carol = signup("carol")
    WebhookEndpoint.objects.create(url=receiver.url, kinds=["referral.converted"], account=carol)
    with django_capture_on_commit_callbacks(execute=True):
        signup("bob", code=alice.referral_code, when=at(1))
        buy_plan("bob", "10.00", when=at(2))
        signup("dan", code=carol.referral_code, when=at(1))
        buy_plan("dan", "10.00", when=at(2))
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    assert [(b["type"], b["account"], b["data"]["referred"]) for b in bodies] == [
        ("referral.converted", "carol", "dan")]


def test_it_maps_payout_messages(db, endpoint, receiver, django_capture_on_commit_callbacks):
    alice = signup("alice")
    with django_capture_on_commit_callbacks(execute=True):
        outbox.publish("payout.paid", account_id=alice.pk, data={"payout": 7, "amount": "25.00"})
        outbox.publish("payout.failed", account_id=alice.pk, data={"payout": 8, "reason": "closed account"})
        outbox.publish("application.decided", account_id=alice.pk, data={})  # not a webhook kind
    assert [json.loads(r["body"])["type"] for r in receiver.requests] == ["payout.paid", "payout.failed"]


def test_it_retries_with_exponential_backoff_and_records_each_response(db, endpoint, receiver, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "BACKOFF_BASE_SECONDS": 30, "MAX_ATTEMPTS": 3}
    receiver.answers = [500, 503, 200]
    (delivery,) = on_outbox_message("payout.paid", account_id=signup("alice").pk, data={"payout": 1})
    now = timezone.now()

    first = webhook_deliver(delivery_id=delivery.pk, now=now)
    assert (first.status, first.attempts, first.response_code) == ("retrying", 1, 500)
    assert first.next_attempt_at == now + timedelta(seconds=30)
    assert '"received":false' in first.response_body.replace(" ", "")
    assert webhook_deliver(delivery_id=delivery.pk, now=now + timedelta(seconds=29)) is None  # not due yet

    second = webhook_deliver(delivery_id=delivery.pk, now=now + timedelta(seconds=30))
    assert (second.status, second.attempts, second.response_code) == ("retrying", 2, 503)
    assert second.next_attempt_at == now + timedelta(seconds=30 + 60)

    assert deliver_due(now=now + timedelta(seconds=90)) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("succeeded", 3, 200)
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).consecutive_failures == 0


def test_it_gives_up_after_the_last_attempt(db, endpoint, receiver, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "MAX_ATTEMPTS": 2}
    receiver.answers = [500, 500]
    (delivery,) = on_outbox_message("payout.paid", account_id=signup("alice").pk, data={})
    now = timezone.now()
    webhook_deliver(delivery_id=delivery.pk, now=now)
    last = webhook_deliver(delivery_id=delivery.pk, now=now + timedelta(hours=1))
    assert (last.status, last.attempts, last.next_attempt_at) == ("failed", 2, None)


def test_it_records_a_connection_failure(db, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "TIMEOUT_SECONDS": 1}
    closed = Receiver()
    closed.close()  # nothing listens on this port any more
    WebhookEndpoint.objects.create(url=closed.url)
    (delivery,) = on_outbox_message("payout.paid", account_id=signup("alice").pk, data={})
    attempt = webhook_deliver(delivery_id=delivery.pk)
    assert attempt.status == "retrying" and attempt.response_code is None and "ConnectError" in attempt.error


def test_it_disables_an_endpoint_after_repeated_failures(db, endpoint, receiver, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "DISABLE_AFTER_FAILURES": 3}
    receiver.answers = [500] * 3
    alice = signup("alice")
    deliveries = [on_outbox_message("payout.paid", account_id=alice.pk, data={"payout": i})[0] for i in range(4)]
    for delivery in deliveries[:3]:
        webhook_deliver(delivery_id=delivery.pk)
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_at is not None
    assert "3 failed deliveries in a row" in endpoint.disabled_reason
    assert AuditLog.objects.filter(action="webhook_endpoint.disable", object_id=str(endpoint.pk)).exists()

    last = webhook_deliver(delivery_id=deliveries[3].pk)
    assert (last.status, last.error) == ("failed", "the endpoint is disabled")
    assert len(receiver.requests) == 3
    assert on_outbox_message("payout.paid", account_id=alice.pk, data={}) == []  # nothing new for it


def test_it_redelivers_the_same_message_as_a_new_delivery(db, endpoint, receiver, staff):
    (delivery,) = on_outbox_message("payout.failed", account_id=signup("alice").pk, data={"payout": 3})
    webhook_deliver(delivery_id=delivery.pk)
    copy = webhook_redeliver(delivery=delivery, actor=staff)
    webhook_deliver(delivery_id=copy.pk)
    first, second = receiver.requests
    assert first["body"] == second["body"]
    assert first["headers"]["X-Referrals-Delivery"] == second["headers"]["X-Referrals-Delivery"]
    assert copy.redelivery_of_id == delivery.pk
    assert AuditLog.objects.filter(action="webhook.redeliver", actor=staff).exists()


def test_it_shows_deliveries_with_their_response_in_the_admin_and_redelivers(
        db, endpoint, receiver, staff, client, django_capture_on_commit_callbacks):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    receiver.answers = [502]
    (delivery,) = on_outbox_message("payout.paid", account_id=signup("alice").pk, data={"payout": 9})
    webhook_deliver(delivery_id=delivery.pk)

    listing = client.get("/admin/integrations/webhookdelivery/")
    assert listing.status_code == 200 and b"502" in listing.content
    detail = client.get(f"/admin/integrations/webhookdelivery/{delivery.pk}/change/")
    assert detail.status_code == 200 and b"received" in detail.content

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/integrations/webhookdelivery/", {
            "action": "redeliver", "_selected_action": [delivery.pk]})
    assert response.status_code == 302
    redelivery = WebhookDelivery.objects.get(redelivery_of=delivery)
    assert (redelivery.status, redelivery.response_code) == ("succeeded", 200)


def test_it_registers_an_endpoint_in_the_admin_and_refuses_a_bad_url(db, staff, client):
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    bad = client.post("/admin/integrations/webhookendpoint/add/", {"url": "ftp://example.com/x", "is_active": "on"})
    assert bad.status_code == 200 and not WebhookEndpoint.objects.exists()
    good = client.post("/admin/integrations/webhookendpoint/add/", {
        "url": "https://hooks.example.com/referrals", "kinds": ["payout.paid", "payout.failed"], "is_active": "on"})
    assert good.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.kinds == ["payout.paid", "payout.failed"] and endpoint.secret.startswith("whsec_")

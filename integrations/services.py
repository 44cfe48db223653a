"""Outbound webhooks: outbox messages become deliveries, which are signed and POSTed.

Signature: `X-Referrals-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the
endpoint's secret>`, with the timestamp (Unix seconds) in `X-Referrals-Timestamp`; a receiver
recomputes it and refuses old timestamps (replays). A failed attempt is retried with
exponential backoff; an endpoint failing too many times in a row is disabled.
"""
import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from referrals.models import Account, AuditLog

from .models import WEBHOOK_KINDS, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=6)
RESPONSE_BODY_KEPT = 2000
USER_AGENT = "referral-portal-webhooks/1"


def sign(*, secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def backoff(attempts: int) -> timedelta:
    """Wait before the next attempt after `attempts` failed ones: base, 2x, 4x, ... capped."""
    base = settings.WEBHOOKS["BACKOFF_BASE_SECONDS"]
    return min(timedelta(seconds=base * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def on_outbox_message(kind: str, *, account_id: int, data: dict) -> list[WebhookDelivery]:
    """The outbox consumer (subscribed in IntegrationsConfig.ready): one delivery per endpoint
    that wants this kind, each queued for sending."""
    if kind not in WEBHOOK_KINDS:
        return []
    endpoints = [e for e in WebhookEndpoint.objects.filter(is_active=True) if e.wants(kind, account_id)]
    if not endpoints:
        return []
    account = Account.objects.filter(pk=account_id).values_list("external_id", flat=True).first()
    message_id = uuid.uuid4()
    payload = {"id": str(message_id), "type": kind, "created_at": timezone.now().isoformat(),
               "account": account, "data": data}
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(endpoint=endpoint, message_id=message_id, kind=kind, payload=payload)
         for endpoint in endpoints])
    for delivery in deliveries:
        queue(delivery.pk)
    return deliveries


def on_outbox_messages(messages: list[tuple[str, int, dict]]) -> list[WebhookDelivery]:
    """The same for a batch of messages (the engine's): the endpoints and the accounts' ids are
    read once for all of them, and the deliveries written with one INSERT."""
    messages = [message for message in messages if message[0] in WEBHOOK_KINDS]
    if not messages:
        return []
    active = list(WebhookEndpoint.objects.filter(is_active=True))
    if not active:
        return []
    wanted = [(message, [e for e in active if e.wants(message[0], message[1])]) for message in messages]
    wanted = [(message, endpoints) for message, endpoints in wanted if endpoints]
    if not wanted:
        return []
    external = dict(Account.objects.filter(pk__in={message[1] for message, _ in wanted})
                    .values_list("pk", "external_id"))
    rows = []
    for (kind, account_id, data), endpoints in wanted:
        message_id = uuid.uuid4()
        payload = {"id": str(message_id), "type": kind, "created_at": timezone.now().isoformat(),
                   "account": external.get(account_id), "data": data}
        rows += [WebhookDelivery(endpoint=endpoint, message_id=message_id, kind=kind, payload=payload)
                 for endpoint in endpoints]
    deliveries = WebhookDelivery.objects.bulk_create(rows)
    for delivery in deliveries:
        queue(delivery.pk)
    return deliveries


def queue(delivery_id: int, *, at: datetime | None = None) -> None:
    from .tasks import deliver_webhook

    transaction.on_commit(lambda: deliver_webhook.apply_async((delivery_id,), eta=at))


def webhook_deliver(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """One attempt at a due delivery; None when it is not due or another worker has it."""
    now = now or timezone.now()
    timeout = settings.WEBHOOKS["TIMEOUT_SECONDS"]
    # Claim it with a conditional update: the lease keeps a second worker (a duplicate task,
    # the sweep) away while this one waits on the receiver.
    claimed = WebhookDelivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now), pk=delivery_id,
        status__in=[WebhookDelivery.Status.PENDING, WebhookDelivery.Status.RETRYING],
    ).update(next_attempt_at=now + timedelta(seconds=timeout + 60), last_attempt_at=now)
    if claimed != 1:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.FAILED, next_attempt_at=None, error="the endpoint is disabled")
        delivery.refresh_from_db()
        return delivery

    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "X-Referrals-Event": delivery.kind, "X-Referrals-Delivery": str(delivery.message_id),
        "X-Referrals-Timestamp": timestamp,
        "X-Referrals-Signature": sign(secret=endpoint.secret, timestamp=timestamp, body=body),
    }
    code, text, error = None, "", ""
    try:
        response = httpx.post(endpoint.url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
        code, text = response.status_code, response.text[:RESPONSE_BODY_KEPT]
        if not 200 <= code < 300:
            error = f"the endpoint answered {code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    return _record_attempt(delivery, code=code, text=text, error=error, now=now)


@transaction.atomic
def _record_attempt(delivery: WebhookDelivery, *, code, text: str, error: str, now: datetime) -> WebhookDelivery:
    delivery.attempts += 1
    delivery.response_code, delivery.response_body, delivery.error = code, text, error
    endpoint_rows = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
    if not error:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = WebhookDelivery.Status.SUCCEEDED, now, None
        endpoint_rows.update(consecutive_failures=0)
    else:
        if delivery.attempts >= settings.WEBHOOKS["MAX_ATTEMPTS"]:
            delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
        else:
            delivery.status = WebhookDelivery.Status.RETRYING
            delivery.next_attempt_at = now + backoff(delivery.attempts)
        endpoint_rows.update(consecutive_failures=F("consecutive_failures") + 1)
        limit = settings.WEBHOOKS["DISABLE_AFTER_FAILURES"]
        reason = f"disabled after {limit} failed deliveries in a row (last: {error})"[:300]
        if endpoint_rows.filter(is_active=True, consecutive_failures__gte=limit).update(
                is_active=False, disabled_at=now, disabled_reason=reason):
            AuditLog.objects.create(actor=None, action="webhook_endpoint.disable", object_type="WebhookEndpoint",
                                    object_id=str(delivery.endpoint_id), reason=reason)
            log.warning("webhook endpoint %s disabled: %s", delivery.endpoint_id, reason)
    delivery.save(update_fields=["attempts", "response_code", "response_body", "error", "status",
                                 "delivered_at", "next_attempt_at"])
    return delivery


def deliver_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """The sweep: attempt every delivery whose time has come (retries, lost tasks)."""
    now = now or timezone.now()
    due = list(WebhookDelivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        status__in=[WebhookDelivery.Status.PENDING, WebhookDelivery.Status.RETRYING], endpoint__is_active=True,
    ).order_by("id").values_list("pk", flat=True)[:limit])
    return sum(webhook_deliver(delivery_id=pk, now=now) is not None for pk in due)


@transaction.atomic
def webhook_redeliver(*, delivery: WebhookDelivery, actor) -> WebhookDelivery:
    """Send a delivery's message again, as a new delivery with the same message id."""
    copy = WebhookDelivery.objects.create(endpoint=delivery.endpoint, message_id=delivery.message_id,
                                          kind=delivery.kind, payload=delivery.payload, redelivery_of=delivery)
    AuditLog.objects.create(actor=actor, action="webhook.redeliver", object_type="WebhookDelivery",
                            object_id=str(delivery.pk), data={"redelivery": copy.pk})
    queue(copy.pk)
    return copy


@transaction.atomic
def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, actor) -> WebhookEndpoint:
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(is_active=True, consecutive_failures=0, disabled_at=None,
                                                          disabled_reason="")
    AuditLog.objects.create(actor=actor, action="webhook_endpoint.enable", object_type="WebhookEndpoint",
                            object_id=str(endpoint.pk))
    endpoint.refresh_from_db()
    return endpoint

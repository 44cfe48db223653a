"""Stripe webhooks: verified, stored raw, then applied once per event id (a delivery that fails
verification is kept as a bounded record only).

Out-of-order delivery is harmless because every handler only moves a payout forward (a paid
payout is never made processing again; a failed one is never revived) and account status uses
the event's own `created` time, so an older `account.updated` never overwrites a newer one.
"""
import hashlib
import json
import logging
from datetime import UTC, datetime

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ledger.money import CENT
from referrals_site.text import json_text_problem, safe_text

from . import services
from .models import MethodType, Payout, PayoutMethod, StripeWebhook
from .providers.base import cents

log = logging.getLogger(__name__)

KEPT_HEADERS = ("Stripe-Signature", "Content-Type", "User-Agent", "Content-Length")
HEADER_KEPT = 500  # characters of each kept header
REJECTED_BODY_KEPT = 1000  # characters of a refused delivery's body kept for review


def receive_stripe(*, body: bytes, headers) -> StripeWebhook:
    """Verify, store and apply one delivery. Returns the stored delivery with its final status.

    Verified first: a delivery that fails verification (a stranger's, a tampered or replayed one,
    text no column can store) is stored as a bounded record only, its first REJECTED_BODY_KEPT
    characters with its size and digest, so unsigned posts cannot fill the table (issue 15.8)."""
    kept_headers = {name: headers.get(name, "")[:HEADER_KEPT] for name in KEPT_HEADERS if headers.get(name)}
    try:
        stripe.Webhook.construct_event(body, headers.get("Stripe-Signature", ""), settings.STRIPE_WEBHOOK_SECRET,
                                       tolerance=settings.STRIPE_WEBHOOK_TOLERANCE)
        event = json.loads(body)
        if not (isinstance(event, dict) and isinstance(event.get("id"), str) and isinstance(event.get("type"), str)):
            raise ValueError("not a Stripe event (no string id and type)")
        if problem := json_text_problem(event):
            raise ValueError("event text at {}: {}".format(*problem))
    except (ValueError, RecursionError, stripe.SignatureVerificationError) as exc:
        # RecursionError: a signed but absurdly nested body (the SDK parses it too).
        reason = str(exc) or type(exc).__name__
        digest = hashlib.sha256(body).hexdigest()
        delivery = StripeWebhook.objects.create(
            body=safe_text(body[:REJECTED_BODY_KEPT].decode("utf-8", errors="replace")),
            headers={name: safe_text(value) for name, value in kept_headers.items()})
        return _finish(delivery, StripeWebhook.Status.REJECTED,
                       error=safe_text(f"{reason[:500]} (body of {len(body)} bytes, sha256 {digest})"))
    delivery = StripeWebhook.objects.create(body=body.decode("utf-8"), headers=kept_headers,
                                            event_id=event["id"][:120], type=event["type"][:80])
    return process(delivery, event)


def process(delivery: StripeWebhook, event: dict) -> StripeWebhook:
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return _finish(delivery, StripeWebhook.Status.IGNORED, error=f"no handler for {event['type']}")
    if StripeWebhook.objects.filter(event_id=delivery.event_id, status=StripeWebhook.Status.PROCESSED).exists():
        return _finish(delivery, StripeWebhook.Status.DUPLICATE)
    try:
        with transaction.atomic():
            note = handler(event) or ""
            # The partial unique index makes a concurrent second delivery of this event fail here
            # and roll its (no-op) effects back.
            StripeWebhook.objects.filter(pk=delivery.pk).update(
                status=StripeWebhook.Status.PROCESSED, processed_at=timezone.now(), error=note)
    except IntegrityError:
        return _finish(delivery, StripeWebhook.Status.DUPLICATE)
    except Exception as exc:
        log.exception("stripe webhook %s (%s) failed", delivery.event_id, delivery.type)
        return _finish(delivery, StripeWebhook.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
    delivery.refresh_from_db()
    return delivery


def _finish(delivery: StripeWebhook, status: str, *, error: str = "") -> StripeWebhook:
    StripeWebhook.objects.filter(pk=delivery.pk).update(status=status, error=error[:2000],
                                                        processed_at=timezone.now())
    delivery.status, delivery.error = status, error
    return delivery


def _payout_of(transfer: dict) -> Payout | None:
    payout_id = (transfer.get("metadata") or {}).get("payout_id", "")
    found = Payout.objects.filter(method_type=MethodType.STRIPE)
    if payout_id.isdigit():
        return found.filter(pk=int(payout_id)).first()
    return found.filter(provider_reference=transfer.get("id", "")).first()


def _on_transfer(event: dict) -> str:
    transfer = event["data"]["object"]
    payout = _payout_of(transfer)
    if payout is None:
        return f"no payout for transfer {transfer.get('id')}"
    attempt = (transfer.get("metadata") or {}).get("attempt")
    if attempt and attempt != str(payout.attempt):
        return f"transfer of attempt {attempt}; payout #{payout.pk} is on attempt {payout.attempt}"
    amount, reversed_cents = transfer.get("amount"), transfer.get("amount_reversed")
    if not _is_cents(reversed_cents):
        # Stripe always sends amount_reversed; without it a transfer.reversed is taken as whole.
        reversed_cents = amount if event["type"] == "transfer.reversed" else 0
    # `reversed` is true only once the whole transfer is reversed; a part leaves it false.
    if transfer.get("reversed") is True or (_is_cents(amount) and amount > 0 and reversed_cents >= amount):
        services.payout_mark_failed(payout=payout, reason="the Stripe transfer was reversed",
                                    source=services.WEBHOOK)
        return "reversed"
    if amount != cents(payout.amount):
        return f"amount {amount} does not match payout #{payout.pk}; left for reconciliation"
    if reversed_cents > 0:
        services.payout_reversed_in_part(payout=payout, reversed_total=reversed_cents * CENT,
                                         reference=transfer.get("id", ""), source=services.WEBHOOK)
        return f"{reversed_cents} of {amount} cents reversed so far"
    services.payout_mark_paid(payout=payout, reference=transfer["id"], source=services.WEBHOOK)
    return "paid"


def _is_cents(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _event_time(event: dict) -> datetime:
    return datetime.fromtimestamp(int(event.get("created") or 0), tz=UTC)


def _on_account_updated(event: dict) -> str:
    from .providers.stripe import is_ready

    account = event["data"]["object"]
    when = _event_time(event)
    methods = PayoutMethod.objects.select_for_update().filter(
        type=MethodType.STRIPE, details__connected_account=account.get("id", ""))
    changed = 0
    for method in methods:
        if method.status_updated_at is not None and method.status_updated_at >= when:
            continue  # an older event than the status we hold
        method.ready, method.status_updated_at = is_ready(account), when
        method.save(update_fields=["ready", "status_updated_at", "updated_at"])
        changed += 1
    return f"{changed} method(s) updated"


def _on_connected_payout(event: dict) -> str:
    """`payout.*` of a connected account: its own bank payout. Our money left with the transfer;
    the latest status is kept on the method so the holder and staff can see a failing bank."""
    bank_payout = event["data"]["object"]
    when = _event_time(event)
    methods = PayoutMethod.objects.select_for_update().filter(
        type=MethodType.STRIPE, details__connected_account=event.get("account", ""))
    for method in methods:
        last = method.details.get("bank_payout") or {}
        if last.get("created", -1) >= int(event.get("created") or 0):
            continue
        method.details = {**method.details, "bank_payout": {
            "status": bank_payout.get("status", event["type"].split(".", 1)[1]),
            "failure_message": bank_payout.get("failure_message") or "", "created": int(event.get("created") or 0),
            "at": when.isoformat()}}
        method.save(update_fields=["details", "updated_at"])
    return "bank payout status kept"


HANDLERS = {
    "transfer.created": _on_transfer,
    "transfer.updated": _on_transfer,
    "transfer.reversed": _on_transfer,
    "account.updated": _on_account_updated,
    "payout.paid": _on_connected_payout,
    "payout.failed": _on_connected_payout,
    "payout.canceled": _on_connected_payout,
    "payout.updated": _on_connected_payout,
}

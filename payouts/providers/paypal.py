"""PayPal Payouts REST: an OAuth2 client-credentials token, one single-item batch per payout.

Idempotency: the batch's `sender_batch_id` and the `PayPal-Request-Id` header are both the
payout's idempotency key, so a repeated call returns the original batch instead of a new one.
"""
import threading
import time
from decimal import Decimal

from django.conf import settings

from . import http
from .base import FAILED, PAID, PROCESSING, ProviderError, ProviderResult, currency, decimal_string

NAME = "PayPal"
ITEM_FAILED = {"FAILED", "RETURNED", "BLOCKED", "REFUNDED", "REVERSED", "DENIED", "CANCELED"}
BATCH_FAILED = {"DENIED", "CANCELED"}

_token_lock = threading.Lock()
_token: dict = {}


def _access_token(*, renew: bool = False) -> str:
    """A cached bearer token, renewed a minute before PayPal says it expires."""
    base = settings.PAYPAL_API_BASE
    with _token_lock:
        cached = _token.get(base)
        if cached and not renew and cached[1] > time.monotonic() + 60:
            return cached[0]
        response = http.request("POST", f"{base}/v1/oauth2/token", provider=NAME,
                                auth=(settings.PAYPAL_CLIENT_ID, settings.PAYPAL_CLIENT_SECRET),
                                data={"grant_type": "client_credentials"},
                                headers={"Accept": "application/json"})
        body = http.check(response, provider=NAME)
        _token[base] = (body["access_token"], time.monotonic() + int(body.get("expires_in", 0)))
        return body["access_token"]


def _call(method: str, path: str, **kwargs) -> dict:
    # A token PayPal no longer accepts is renewed once.
    for renew in (False, True):
        headers = {"Authorization": f"Bearer {_access_token(renew=renew)}", **kwargs.pop("headers", {})}
        response = http.request(method, f"{settings.PAYPAL_API_BASE}{path}", provider=NAME, headers=headers,
                                **kwargs)
        if response.status_code != 401:
            break
        kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
    return http.check(response, provider=NAME)


def _result(batch: dict) -> ProviderResult:
    header = batch.get("batch_header", {})
    batch_id = header.get("payout_batch_id", "")
    amount = header.get("amount", {}).get("value")
    amount_cents = int(Decimal(str(amount)) * 100) if amount else None
    items = batch.get("items") or []
    item_status = items[0].get("transaction_status", "") if items else ""
    if item_status == "SUCCESS":
        return ProviderResult(PAID, batch_id, amount_cents)
    if item_status in ITEM_FAILED or header.get("batch_status") in BATCH_FAILED:
        errors = items[0].get("errors", {}) if items else {}
        reason = errors.get("message") or f"PayPal says {item_status or header.get('batch_status')}"
        return ProviderResult(FAILED, batch_id, amount_cents, reason)
    return ProviderResult(PROCESSING, batch_id, amount_cents)


class PayPalProvider:
    name = "paypal"

    def send(self, payout) -> ProviderResult:
        body = {
            "sender_batch_header": {"sender_batch_id": payout.idempotency_key, "email_subject": "You have a payout"},
            "items": [{
                "recipient_type": "EMAIL", "receiver": payout.method.details["email"],
                "amount": {"value": decimal_string(payout.amount), "currency": currency()},
                "sender_item_id": str(payout.pk), "note": f"Referral payout #{payout.pk}",
            }],
        }
        created = _call("POST", "/v1/payments/payouts", json=body,
                        headers={"PayPal-Request-Id": payout.idempotency_key})
        batch_id = created.get("batch_header", {}).get("payout_batch_id")
        if not batch_id:
            raise ProviderError("PayPal: the answer has no payout_batch_id", retryable=True)
        # Usually PENDING without items (the answer comes with a later read); a batch answered with
        # its items already settled (synchronous mode, the demo's fake) is recorded at once.
        return _result(created) if created.get("items") else ProviderResult(PROCESSING, batch_id)

    def fetch(self, payout) -> ProviderResult | None:
        if not payout.provider_reference:
            return None
        try:
            return _result(_call("GET", f"/v1/payments/payouts/{payout.provider_reference}"))
        except ProviderError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

"""Wise REST with an API token: a quote, a transfer to the recipient, then funding from balance.

Idempotency: the transfer's `customerTransactionId` is a UUID derived from the payout's
idempotency key; Wise answers a repeated one with the transfer it already created.
"""
import json
import uuid
from decimal import Decimal

from django.conf import settings

from . import http
from .base import FAILED, PAID, PROCESSING, ProviderError, ProviderResult, currency, decimal_string

NAME = "Wise"
# https://docs.wise.com/api-docs/guides/send-money/tracking (transfer statuses)
SENT = {"outgoing_payment_sent"}
FAILED_STATUSES = {"cancelled", "funds_refunded", "bounced_back", "charged_back"}
NAMESPACE = uuid.UUID("6f2b3c1e-8a57-4e0f-9d5b-3a0c7e1f2b44")


def customer_transaction_id(payout) -> str:
    return str(uuid.uuid5(NAMESPACE, payout.idempotency_key))


def _call(method: str, path: str, *, headers: dict | None = None, **kwargs) -> dict:
    response = http.request(method, f"{settings.WISE_API_BASE}{path}", provider=NAME,
                            headers={"Authorization": f"Bearer {settings.WISE_API_TOKEN}", **(headers or {})},
                            **kwargs)
    return http.check(response, provider=NAME)


def _result(transfer: dict) -> ProviderResult:
    reference = str(transfer["id"])
    amount = transfer.get("sourceValue")
    amount_cents = int(Decimal(str(amount)) * 100) if amount is not None else None
    status = transfer.get("status", "")
    if status in SENT:
        return ProviderResult(PAID, reference, amount_cents)
    if status in FAILED_STATUSES:
        return ProviderResult(FAILED, reference, amount_cents, f"Wise says {status}")
    return ProviderResult(PROCESSING, reference, amount_cents)


AMOUNT_SLOT = "__exact_amount__"


class WiseProvider:
    name = "wise"

    def send(self, payout) -> ProviderResult:
        profile = settings.WISE_PROFILE_ID
        recipient = payout.method.details["recipient"]
        # Wise wants a JSON number; it is written as the exact decimal text, never via a float.
        quote_body = json.dumps({
            "sourceCurrency": currency(), "targetCurrency": currency(),
            "sourceAmount": AMOUNT_SLOT, "targetAccount": recipient,
        }).replace(json.dumps(AMOUNT_SLOT), decimal_string(payout.amount))
        quote = _call("POST", f"/v3/profiles/{profile}/quotes", content=quote_body,
                      headers={"Content-Type": "application/json"})
        transfer = _call("POST", "/v1/transfers", json={
            "targetAccount": recipient, "quoteUuid": quote["id"],
            "customerTransactionId": customer_transaction_id(payout),
            "details": {"reference": f"payout {payout.pk}"}})
        if not transfer.get("id"):
            raise ProviderError("Wise: the answer has no transfer id", retryable=True)
        if transfer.get("status") == "incoming_payment_waiting":
            funded = _call("POST", f"/v3/profiles/{profile}/transfers/{transfer['id']}/payments",
                           json={"type": "BALANCE"})
            if funded.get("status") not in ("COMPLETED", None):
                raise ProviderError(f"Wise: funding the transfer failed ({funded.get('errorCode')})",
                                    retryable=False)
            # A transfer funded from the balance may be sent at once (the demo's fake always is):
            # read it back so that is recorded now, not at the next retry. Without an answer it stays
            # processing under its reference and the retry asks again.
            try:
                transfer = _call("GET", f"/v1/transfers/{transfer['id']}")
            except ProviderError:
                return ProviderResult(PROCESSING, str(transfer["id"]))
        return _result(transfer)

    def fetch(self, payout) -> ProviderResult | None:
        if not payout.provider_reference:
            return None
        try:
            return _result(_call("GET", f"/v1/transfers/{payout.provider_reference}"))
        except ProviderError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

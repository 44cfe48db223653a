"""Stripe Connect through the official SDK: Express onboarding and transfers to connected accounts.

A transfer moves money from the platform balance to the connected account synchronously, so a
created transfer is a paid payout; a later reversal arrives as a `transfer.reversed` webhook.
"""
import stripe as stripe_sdk
from django.conf import settings

from .base import FAILED, PAID, ProviderError, ProviderResult, cents, currency, timeout


def client() -> stripe_sdk.StripeClient:
    base = settings.STRIPE_CONNECT_API_BASE
    return stripe_sdk.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": base, "connect": base, "files": base},
        # Retries are ours (retry_stuck_payouts), always with the payout's idempotency key.
        max_network_retries=0,
        http_client=stripe_sdk.RequestsClient(timeout=timeout()),
    )


def _error(exc: stripe_sdk.StripeError) -> ProviderError:
    # Connection problems, rate limits, Stripe's 5xx, our own key or an idempotency clash say
    # nothing about whether the transfer exists: keep the payout processing and retry.
    retryable = isinstance(exc, stripe_sdk.APIConnectionError | stripe_sdk.RateLimitError | stripe_sdk.APIError
                           | stripe_sdk.AuthenticationError | stripe_sdk.IdempotencyError)
    if exc.http_status is not None and exc.http_status >= 500:
        retryable = True
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    return ProviderError(f"Stripe: {message}", retryable=retryable)


def _result(transfer) -> ProviderResult:
    if transfer.get("reversed"):
        return ProviderResult(FAILED, transfer["id"], transfer.get("amount"), "the transfer was reversed")
    return ProviderResult(PAID, transfer["id"], transfer.get("amount"))


class StripeProvider:
    name = "stripe"

    def send(self, payout) -> ProviderResult:
        destination = payout.method.stripe_account_id
        try:
            transfer = client().v1.transfers.create(
                params={"amount": cents(payout.amount), "currency": currency().lower(), "destination": destination,
                        "transfer_group": f"payout-{payout.pk}",
                        "metadata": {"payout_id": str(payout.pk), "attempt": str(payout.attempt)}},
                options={"idempotency_key": payout.idempotency_key},
            )
        except stripe_sdk.StripeError as exc:
            raise _error(exc)
        return _result(transfer)

    def fetch(self, payout) -> ProviderResult | None:
        try:
            if payout.provider_reference:
                return _result(client().v1.transfers.retrieve(payout.provider_reference))
            found = client().v1.transfers.list(params={"transfer_group": f"payout-{payout.pk}", "limit": 100})
        except stripe_sdk.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise _error(exc)
        except stripe_sdk.StripeError as exc:
            raise _error(exc)
        mine = [t for t in found.data if t.get("metadata", {}).get("attempt") == str(payout.attempt)]
        return _result(mine[0]) if mine else None

    def transfers_since(self, created_after: int) -> list:
        """Every transfer created after a Unix time (for reconciliation)."""
        try:
            page = client().v1.transfers.list(params={"created": {"gt": created_after}, "limit": 100})
            return list(page.auto_paging_iter())
        except stripe_sdk.StripeError as exc:
            raise _error(exc)


# --------------------------------------------------------------------------- Connect onboarding


def create_express_account(*, account) -> str:
    """A new Express connected account for one of our accounts; returns its id (acct_...)."""
    try:
        created = client().v1.accounts.create(
            params={"type": "express", "email": account.email or None,
                    "capabilities": {"transfers": {"requested": True}},
                    "metadata": {"account": account.external_id}},
            # One Express account per portal account, even if the button is pressed twice.
            options={"idempotency_key": f"express-account-{account.pk}"},
        )
    except stripe_sdk.StripeError as exc:
        raise _error(exc)
    return created["id"]


def onboarding_link(*, connected_account: str, refresh_url: str, return_url: str) -> str:
    try:
        link = client().v1.account_links.create(params={
            "account": connected_account, "refresh_url": refresh_url, "return_url": return_url,
            "type": "account_onboarding"})
    except stripe_sdk.StripeError as exc:
        raise _error(exc)
    return link["url"]


def account_ready(connected_account: str) -> bool:
    """Whether the connected account can receive transfers now."""
    try:
        found = client().v1.accounts.retrieve(connected_account)
    except stripe_sdk.StripeError as exc:
        raise _error(exc)
    return is_ready(found)


def is_ready(account_object) -> bool:
    # Transfers to the account need its `transfers` capability; its own bank payouts are Stripe's affair.
    capabilities = account_object.get("capabilities") or {}
    return capabilities.get("transfers") == "active"

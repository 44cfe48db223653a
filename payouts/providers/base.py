"""The one small interface every payout provider implements, and its error and result types."""
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from ledger.money import CENT

PAID = "paid"
PROCESSING = "processing"
FAILED = "failed"


@dataclass(frozen=True)
class ProviderResult:
    """What the provider says about one payout: paid, still processing, or failed (and why)."""

    status: str  # PAID | PROCESSING | FAILED
    reference: str
    amount_cents: int | None = None
    reason: str = ""


class ProviderError(Exception):
    """A provider call that did not give an answer we can act on.

    `retryable`: a timeout, a dropped connection, a 5xx, a 429 or an auth problem on our side. The
    payout may or may not exist at the provider, so it stays processing and is retried with the
    same idempotency key. Otherwise the provider refused the payout (a 4xx about the payout
    itself): it failed and its money goes back to the balance.
    """

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    name: str

    def send(self, payout) -> ProviderResult:
        """Create the payout at the provider, idempotently (`payout.idempotency_key`)."""

    def fetch(self, payout) -> ProviderResult | None:
        """The provider's current record of the payout; None when it has none."""


def timeout() -> float:
    return float(settings.PAYOUT_PROVIDER_TIMEOUT)


def cents(units: int) -> int:
    return int(units) // CENT


def decimal_string(units: int) -> str:
    whole_cents = cents(units)
    return f"{whole_cents // 100}.{whole_cents % 100:02d}"


def currency() -> str:
    return settings.REFERRAL["CURRENCY"]

"""Reconciliation: our payouts against the providers' records, every difference listed.

Reads only: a difference is for staff to judge (retry, mark paid, chase the provider), never
fixed silently here.
"""
from dataclasses import dataclass
from datetime import datetime

from ledger.money import CENT

from .models import MethodType, Payout
from .providers import PAID, PROCESSING, ProviderError, provider_for
from .providers.stripe import StripeProvider


@dataclass(frozen=True)
class Difference:
    payout_id: int | None
    provider: str
    kind: str
    detail: str

    def __str__(self) -> str:
        who = f"payout #{self.payout_id}" if self.payout_id else "no payout"
        return f"{self.provider}: {who}: {self.kind}: {self.detail}"


# Statuses in which the provider should know the payout.
SENT = (Payout.Status.PROCESSING, Payout.Status.PAID, Payout.Status.FAILED)


def reconcile(*, since: datetime, providers: list[str] | None = None) -> list[Difference]:
    providers = providers or list(MethodType.values)
    payouts = (Payout.objects.filter(requested_at__gte=since, status__in=SENT, method_type__in=providers)
               .select_related("method").order_by("id"))
    differences = []
    for payout in payouts:
        differences += _compare(payout)
    if MethodType.STRIPE in providers:
        differences += _unknown_stripe_transfers(since)
    return differences


def _compare(payout: Payout) -> list[Difference]:
    name = payout.method_type
    try:
        theirs = provider_for(name).fetch(payout)
    except ProviderError as exc:
        return [Difference(payout.pk, name, "unreachable", str(exc))]
    if theirs is None:
        if payout.status == Payout.Status.FAILED and not payout.provider_reference:
            return []  # refused before the provider created anything
        return [Difference(payout.pk, name, "missing at provider",
                           f"ours is {payout.status} (reference {payout.provider_reference or 'none'})")]
    found = []
    ours = payout.status
    if theirs.status != ours and not (theirs.status == PROCESSING and ours == Payout.Status.PROCESSING):
        kind = "paid at provider, failed here" if (theirs.status == PAID and ours == Payout.Status.FAILED) \
            else "status differs"
        found.append(Difference(payout.pk, name, kind, f"ours is {ours}, the provider says {theirs.status}"
                                + (f" ({theirs.reason})" if theirs.reason else "")))
    if theirs.amount_cents is not None and theirs.amount_cents * CENT != payout.amount:
        found.append(Difference(payout.pk, name, "amount differs",
                                f"ours is {payout.amount // CENT} cents, the provider's {theirs.amount_cents}"))
    if payout.provider_reference and theirs.reference and theirs.reference != payout.provider_reference:
        found.append(Difference(payout.pk, name, "reference differs",
                                f"ours is {payout.provider_reference}, the provider's {theirs.reference}"))
    return found


def _unknown_stripe_transfers(since: datetime) -> list[Difference]:
    try:
        transfers = StripeProvider().transfers_since(int(since.timestamp()))
    except ProviderError as exc:
        return [Difference(None, "stripe", "unreachable", str(exc))]
    known = {(str(pk), str(attempt)) for pk, attempt in Payout.objects.filter(method_type=MethodType.STRIPE)
             .values_list("pk", "attempt")}
    references = set(Payout.objects.filter(method_type=MethodType.STRIPE).exclude(provider_reference="")
                     .values_list("provider_reference", flat=True))
    found = []
    for transfer in transfers:
        metadata = transfer.get("metadata") or {}
        key = (metadata.get("payout_id", ""), metadata.get("attempt", ""))
        if transfer["id"] in references:
            continue
        if key[0] and key in known:
            continue
        found.append(Difference(int(key[0]) if key[0].isdigit() else None, "stripe", "unknown transfer",
                                f"{transfer['id']} of {transfer.get('amount')} cents to "
                                f"{transfer.get('destination')} matches no payout attempt here"))
    return found

"""Writes for payouts: methods, the payout lifecycle and the provider round trip.

Lifecycle: requested → approved → processing → paid | failed, or requested/approved →
rejected | cancelled. Each transition is one atomic function that writes the status, an audit
row (`PayoutTransition`: who, when, why) and, when money moves, one internal event whose handler
posts the balanced ledger legs (so `verify_ledger` replays payouts like everything else):

- `payout.reserved`  cash → reserved, at request (and again when a failed payout is retried);
- `payout.settled`   reserved → platform:payouts, when the provider has paid;
- `payout.released`  reserved → cash, when it fails, is rejected or cancelled;
- `payout.reversed`  platform:payouts → cash, when a paid transfer is reversed (what is left of it);
- `payout.partly_reversed`  platform:payouts → cash, the increase of a partial reversal.

Provider calls happen outside any database transaction, after the payout is claimed as
processing; the idempotency key (payout id + attempt) makes a retry after a timeout or a crash
return the provider's first answer instead of paying twice.
"""
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ledger.models import Balance, Book
from ledger.money import AmountError, floor_to_cents, format_cents, parse_amount, to_units
from ledger.services import Leg, post
from referrals.engine import bulk, outbox
from referrals.engine import events as ev
from referrals.engine.services import (
    ActionRefused,
    apply_event,
    flag_account,
    on_account_flag_decided,
    register_handler,
)
from referrals.models import Account, Event, FraudFlag, Program
from referrals.templatetags.figures import money_text

from . import selectors
from .models import MethodType, Payout, PayoutMethod, PayoutTransition, mask, mask_email
from .providers import FAILED, PAID, ProviderError, ProviderResult, provider_for

log = logging.getLogger(__name__)

# Outbox kinds (consumed by the outbound webhook and e-mail engineers).
PAYOUT_PAID = "payout.paid"
PAYOUT_FAILED = "payout.failed"

# Internal event types: the ledger side of payouts.
RESERVED = "payout.reserved"
SETTLED = "payout.settled"
RELEASED = "payout.released"
REVERSED = "payout.reversed"
PARTLY_REVERSED = "payout.partly_reversed"

MAX_PAYOUT = Decimal("1000000")

# Where a transition came from (PayoutTransition.source) and how its event is logged.
USER, API, STAFF, AUTO, PROVIDER, WEBHOOK, JOB = "user", "api", "staff", "auto", "provider", "webhook", "job"
_EVENT_SOURCE = {USER: Event.Source.PORTAL, API: Event.Source.API, STAFF: Event.Source.STAFF,
                 AUTO: Event.Source.STAFF, PROVIDER: Event.Source.JOB, WEBHOOK: Event.Source.JOB,
                 JOB: Event.Source.JOB}

S = Payout.Status


class PayoutInvalid(Exception):
    """Bad input for a payout or a method: `fields` names each bad field and why. Nothing changed."""

    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        super().__init__("; ".join(f"{name}: {text}" for name, text in fields.items()))


class PayoutRefused(ActionRefused):
    """A transition that is not allowed in the payout's current state (answered 409 by the API)."""


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class MethodInput:
    type: str
    details: dict
    masked: str
    ready: bool


def _method_input(method_type: str, *, email: str = "", recipient: str = "", connected_account: str = "",
                  ready: bool = True) -> MethodInput:
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    if method_type == MethodType.PAYPAL:
        email = (email or "").strip()
        try:
            validate_email(email)
        except ValidationError:
            raise PayoutInvalid({"email": "must be the e-mail address of a PayPal account, e.g. name@example.com"})
        return MethodInput(method_type, {"email": email, "destination": destination_key(method_type, email)},
                           mask_email(email), True)
    if method_type == MethodType.WISE:
        recipient = str(recipient or "").strip()
        if not recipient.isascii() or not recipient.isdigit() or len(recipient) > 20:
            raise PayoutInvalid({"recipient": "must be the numeric id of a Wise recipient account, e.g. 40000000"})
        return MethodInput(method_type, {"recipient": recipient,
                                         "destination": destination_key(method_type, recipient)},
                           mask(recipient), True)
    if method_type == MethodType.STRIPE:
        connected_account = (connected_account or "").strip()
        body = connected_account.removeprefix("acct_")
        if not connected_account.startswith("acct_") or not body.isascii() or not body.isalnum() or len(body) > 60:
            raise PayoutInvalid({"connected_account": "must be a Stripe connected account id, e.g. acct_1Nv0FG..."})
        return MethodInput(method_type, {"connected_account": connected_account,
                                         "destination": destination_key(method_type, connected_account)},
                           mask(connected_account), ready)
    raise PayoutInvalid({"type": f"must be one of {', '.join(MethodType.values)}"})


def destination_key(method_type: str, value: str) -> str:
    """Where the money of a method really lands, comparable across accounts: PayPal e-mails
    normalised like sign-up e-mails (case, Gmail dots, +tags), Wise recipient and Stripe
    connected account ids as they are. Stored in `details["destination"]` and looked up there."""
    if method_type == MethodType.PAYPAL:
        return f"paypal:{ev.normalize_email(value)}"
    return f"{method_type}:{value}"


# The field of `details` that holds each type's raw destination (methods stored before
# `details["destination"]` existed are still matched on it).
_RAW_DESTINATION = {MethodType.PAYPAL: "email", MethodType.WISE: "recipient", MethodType.STRIPE: "connected_account"}


@transaction.atomic
def payout_method_set(*, account: Account, type: str, actor=None, source: str = USER, email: str = "",
                      recipient: str = "", connected_account: str = "", ready: bool = True) -> PayoutMethod:
    """Register (or replace) the account's method of one type. Stripe methods registered by an
    integration are trusted as onboarded (`ready`); the portal's onboarding starts them unready."""
    valid = _method_input(type, email=email, recipient=recipient, connected_account=connected_account, ready=ready)
    destination = valid.details["destination"]
    # Two accounts registering one destination at the same moment would not see each other's
    # uncommitted row; one lock per destination makes the second wait and find the first.
    bulk.job_lock(f"payout-destination:{destination}")
    method, created = PayoutMethod.objects.select_for_update().get_or_create(
        account=account, type=valid.type,
        defaults={"details": valid.details, "masked": valid.masked, "ready": valid.ready})
    previous = None if created else method.details.get("destination")
    if not created:
        # Provider-side notes (e.g. Stripe's last bank payout) belong to the old destination.
        method.details, method.masked, method.ready = valid.details, valid.masked, valid.ready
        method.status_updated_at = None
        method.save(update_fields=["details", "masked", "ready", "status_updated_at", "updated_at"])
    _audit_account(actor=actor, action="payout_method.set", account=account,
                   data={"type": valid.type, "masked": valid.masked, "source": source})
    if previous != destination:
        _flag_shared_destination(account=account, method=method)
    return method


def _flag_shared_destination(*, account: Account, method: PayoutMethod) -> None:
    """Fraud rule: one payout destination used by two accounts. Both accounts are flagged for
    review, each flag naming the other account and the masked destination; their payouts are
    held (see `payouts_held`) until staff clear or confirm the flags."""
    raw_field = _RAW_DESTINATION[method.type]
    others = list(
        PayoutMethod.objects
        .filter(Q(details__destination=method.details["destination"])
                | Q(type=method.type, **{f"details__{raw_field}": method.details[raw_field]}))
        .exclude(account_id=account.pk).order_by("account_id").values_list("account_id", flat=True).distinct()[:50])
    if not others:
        return
    # Row locks in id order, like every other multi-account writer, so two of these cannot deadlock.
    accounts = {a.pk: a for a in Account.objects.select_for_update().filter(pk__in=[account.pk, *others])
                .order_by("pk")}
    for other_id in others:
        other = accounts[other_id]
        for flagged, partner in ((account, other), (other, account)):
            flag_account(flagged, [{"signal": "payout_destination", "detail": method.masked, "method": method.type,
                                    "other_account": partner.external_id}])
        log.warning("payout destination %s of account %s is also used by account %s: both held for review",
                    method.masked, account.external_id, other.external_id)


def payouts_held(account_id: int) -> FraudFlag | None:
    """The open account flag that holds this account's payouts, if any."""
    return FraudFlag.objects.open().filter(account_id=account_id).order_by("id").first()


def _follow_account_flag(*, flag: FraudFlag, actor, reason: str) -> None:
    """An account flag was decided: cleared, its approved payouts go out; confirmed, its open
    payouts are rejected (their money back to cash, which the confirmation then voids)."""
    waiting = Payout.objects.filter(account_id=flag.account_id, status__in=(S.REQUESTED, S.APPROVED)).order_by("id")
    if flag.status == FraudFlag.Status.CLEARED:
        for payout in waiting.filter(status=S.APPROVED):
            _queue_processing(payout)
        return
    for payout in waiting:
        payout_reject(payout=payout, actor=actor, source=STAFF,
                      reason=f"fraud confirmed (flag #{flag.pk}): {reason}".rstrip(": "))


on_account_flag_decided(_follow_account_flag)


def stripe_onboarding_start(*, account: Account, refresh_url: str, return_url: str, actor=None) -> str:
    """Create (once) the account's Express connected account and return Stripe's onboarding URL."""
    from .providers import stripe as stripe_provider

    method = PayoutMethod.objects.filter(account=account, type=MethodType.STRIPE).first()
    if method is None:
        connected = stripe_provider.create_express_account(account=account)
        method = payout_method_set(account=account, type=MethodType.STRIPE, connected_account=connected,
                                   ready=False, actor=actor)
    return stripe_provider.onboarding_link(connected_account=method.stripe_account_id,
                                           refresh_url=refresh_url, return_url=return_url)


def stripe_status_refresh(*, method: PayoutMethod) -> PayoutMethod:
    """Ask Stripe whether the connected account can receive transfers now."""
    from .providers import stripe as stripe_provider

    ready = stripe_provider.account_ready(method.stripe_account_id)
    PayoutMethod.objects.filter(pk=method.pk).update(ready=ready, updated_at=timezone.now())
    method.ready = ready
    return method


def _audit_account(*, actor, action: str, account: Account, data: dict) -> None:
    from referrals.models import AuditLog

    AuditLog.objects.create(actor=actor, action=action, object_type="Account", object_id=str(account.pk), data=data)


# --------------------------------------------------------------------------- the ledger side


def _event(kind: str, payout: Payout, *, source: str, actor, at: datetime, legs_from: list, suffix: str = "") -> Event:
    """Log an internal event for one money movement of a payout and apply it (posts the legs).

    Its external id is unique per payout, movement and attempt (plus `suffix` for movements that
    may happen several times per attempt), so the database itself refuses to reserve, settle or
    release the same attempt twice."""
    payload = {"payout": payout.pk, "attempt": payout.attempt, "allocation": legs_from}
    event = Event.objects.create(
        external_id=f"payout:{payout.pk}:{kind.removeprefix('payout.')}:{payout.attempt}{suffix}", type=kind,
        source=_EVENT_SOURCE[source], account_id=payout.account_id, occurred_at=at, payload=payload,
        content_hash=ev.content_hash(payload), actor=actor if getattr(actor, "pk", None) else None)
    apply_event(event)
    return event


_MOVES = {
    RESERVED: (Book.CASH, Book.RESERVED),
    SETTLED: (Book.RESERVED, Book.PAYOUTS),
    RELEASED: (Book.RESERVED, Book.CASH),
    REVERSED: (Book.PAYOUTS, Book.CASH),
    PARTLY_REVERSED: (Book.PAYOUTS, Book.CASH),
}


def _slice(allocation: list, start: int, stop: int) -> list[list[int]]:
    """The units [start, stop) of an allocation laid end to end in its order, per programme: a
    partial reversal gives back the first programmes' part first, and what is left later is
    exactly the rest, so the programmes' books add up whatever the steps."""
    part, offset = [], 0
    for program_id, units in allocation:
        low, high = max(start, offset), min(stop, offset + units)
        if high > low:
            part.append([program_id, high - low])
        offset += units
    return part


def _apply_payout_event(event: Event, replay: bool) -> int:
    source, destination = _MOVES[event.type]
    legs = []
    for program_id, units in event.payload["allocation"]:
        legs += [Leg(source, -units, None if source.startswith("platform:") else event.account_id, program_id),
                 Leg(destination, units, None if destination.startswith("platform:") else event.account_id,
                     program_id)]
    post(kind=event.type, rule="payout", event=event, legs=legs, memo=f"payout #{event.payload['payout']}")
    return 1


for _kind in _MOVES:
    register_handler(_kind, _apply_payout_event)


def _transition(payout: Payout, to_status: str, *, actor, source: str, reason: str = "", data=None) -> None:
    PayoutTransition.objects.create(payout=payout, from_status=payout.status, to_status=to_status,
                                    actor=actor if getattr(actor, "pk", None) else None, source=source,
                                    reason=reason, data=data or {})
    payout.status = to_status


def _locked(payout: Payout | int) -> Payout:
    pk = payout if isinstance(payout, int) else payout.pk
    return Payout.objects.select_for_update().select_related("method").get(pk=pk)


def _locked_cash(account_id: int) -> int:
    """The account's whole cash book, its balance row locked until the transaction ends.

    Every posting to the book (a refund's clawback included, whoever's event it is) updates this
    row, so a coverage check made under this lock and the clawback are serialised: either the
    check sees the clawback, or the clawback waits until the payout has been claimed."""
    row = Balance.objects.select_for_update().filter(account_id=account_id, book=Book.CASH).first()
    return row.amount if row is not None else 0


def _uncovered(payout: Payout, cash: int) -> str:
    """Why a payout that has not left yet may no longer go out, or "" when it may.

    A payout's amount was moved from cash to reserved at its request. When the account's cash is
    negative afterwards (a refund clawed back commission the payout had already reserved), part
    of that reservation is money the account no longer has: the payout is not covered."""
    if cash >= 0:
        return ""
    return (f"held: the account's cash is {format_cents(cash)} after a clawback (a refund of a payment "
            f"that earned this commission), so the {format_cents(payout.amount)} reserved for this payout is "
            f"no longer covered. Reject it (its reservation goes back to cash and covers the clawback) or "
            f"approve it again once new earnings bring the cash back to 0.00 or more.")


# --------------------------------------------------------------------------- request


def allocate(cash_by_program: dict[int, int], amount: int) -> list[list[int]]:
    """Which programmes' cash a payout takes: programmes in id order (the oldest programme
    first), each drained before the next. Returns [[program_id, units], ...]."""
    left, allocation = amount, []
    for program_id in sorted(cash_by_program):
        if left <= 0:
            break
        take = min(cash_by_program[program_id], left)
        if take > 0:
            allocation.append([program_id, take])
            left -= take
    if left > 0:
        raise ValueError("the allocation does not cover the amount")
    return allocation


def _parse_payout_amount(amount) -> int:
    if not isinstance(amount, str):
        # Amounts travel as decimal strings (SPEC "Money"); a JSON number may already be inexact.
        raise PayoutInvalid({"amount": 'must be a decimal string, e.g. "25.00"'})
    try:
        return parse_amount(amount, places=2, maximum=MAX_PAYOUT)
    except AmountError as exc:
        raise PayoutInvalid({"amount": str(exc)})


@transaction.atomic
def payout_request(*, account: Account, amount, method: str, actor=None, source: str = USER,
                   at: datetime | None = None) -> Payout:
    """Reserve `amount` of the account's cash for a payout to its `method` (stripe/paypal/wise).

    The account row is locked first, so concurrent requests of one account are serialised and
    each sees the cash the previous one left: none can overdraw."""
    at = at or timezone.now()
    fields = {}
    try:
        units = _parse_payout_amount(amount)
    except PayoutInvalid as exc:
        fields.update(exc.fields)
    if method not in MethodType.values:
        fields["method"] = f"must be one of {', '.join(MethodType.values)}"
    if fields:
        raise PayoutInvalid(fields)

    account = Account.objects.select_for_update().get(pk=account.pk)
    payout_method = PayoutMethod.objects.filter(account=account, type=method).first()
    if payout_method is None:
        raise PayoutInvalid({"method": f"no {MethodType(method).label} payout method is set up for this account; "
                                       "set one up first"})
    if not payout_method.ready:
        raise PayoutInvalid({"method": "the Stripe account has not finished onboarding; complete it on Stripe first"})

    cash = selectors.withdrawable_cash_by_program(account)
    programs = Program.objects.in_bulk(list(cash))
    allowed = {pid: units_ for pid, units_ in cash.items() if method in (programs[pid].payout_methods or [])}
    if cash and not allowed:
        names = sorted({m for p in programs.values() for m in (p.payout_methods or [])})
        raise PayoutInvalid({"method": f"{method} is not allowed by the programmes your cash was earned in"
                                       + (f" (allowed: {', '.join(names)})" if names else " (none allow payouts)")})
    available = floor_to_cents(min(sum(allowed.values()), selectors.cash_available(account)))
    if units > available:
        raise PayoutInvalid({"amount": f"is more than the cash available for a {method} payout "
                                       f"({format_cents(available)})"})
    allocation = allocate(allowed, units)
    minimum = max((to_units(programs[pid].min_payout) for pid, _ in allocation), default=0)
    if units < minimum:
        raise PayoutInvalid({"amount": f"is below the minimum payout of {money_text(minimum)}"})

    payout = Payout.objects.create(account=account, method=payout_method, method_type=method, amount=units,
                                   allocation=allocation, requested_at=at,
                                   requested_by=actor if getattr(actor, "pk", None) else None)
    PayoutTransition.objects.create(payout=payout, to_status=S.REQUESTED, source=source,
                                    actor=actor if getattr(actor, "pk", None) else None,
                                    data={"amount": format_cents(units), "method": method})
    _event(RESERVED, payout, source=source, actor=actor, at=at, legs_from=allocation)

    threshold = _auto_approve_below()
    # A payout that needs two staff approvals, or whose account has an open fraud flag, is never
    # auto-approved, whatever the settings say.
    if threshold and units < threshold and not needs_second_approval(units) and payouts_held(account.pk) is None:
        payout = payout_approve(payout=payout, actor=None, source=AUTO, at=at,
                                reason=f"auto-approved: below {format_cents(threshold)}")
    return payout


def _setting_amount(name: str) -> int:
    try:
        return parse_amount(str(getattr(settings, name, "0")), places=2, maximum=MAX_PAYOUT)
    except AmountError:
        return 0  # "0" (off) or unset


def _auto_approve_below() -> int:
    return _setting_amount("PAYOUT_AUTO_APPROVE_BELOW")


def second_approval_above() -> int:
    """Ledger units above which a payout needs two approvals by two different approvers; 0 = never."""
    return _setting_amount("PAYOUT_SECOND_APPROVAL_ABOVE")


def needs_second_approval(amount: int) -> bool:
    limit = second_approval_above()
    return bool(limit) and amount > limit


# --------------------------------------------------------------------------- staff and user decisions


@transaction.atomic
def payout_approve(*, payout: Payout, actor, reason: str = "", source: str = STAFF, at: datetime | None = None,
                   api_key=None) -> Payout:
    """Approve a requested payout, which sends it to its provider.

    Maker-checker: a payout above `PAYOUT_SECOND_APPROVAL_ABOVE` needs two approvals by two
    different approvers (staff members, or API keys with the staff scope). The first approval is
    recorded and the payout stays requested, awaiting the second; the same approver approving
    again is refused and changes nothing."""
    payout = _locked(payout)
    if payout.status != S.REQUESTED:
        raise PayoutRefused(f"only requested payouts can be approved (payout #{payout.pk} is {payout.status})")
    if flag := payouts_held(payout.account_id):
        raise PayoutRefused(f"payout #{payout.pk} is held: its account has an open fraud flag (#{flag.pk}); "
                            "clear or confirm the flag first")
    if reason_held := _uncovered(payout, _locked_cash(payout.account_id)):
        raise PayoutRefused(f"payout #{payout.pk} cannot be approved: {reason_held.removeprefix('held: ')}")
    user = actor if getattr(actor, "pk", None) else None
    if user is not None and not user.is_staff:
        raise PayoutRefused("only staff members can approve payouts")
    at = at or timezone.now()
    data = {}
    if needs_second_approval(payout.amount):
        limit = format_cents(second_approval_above())
        if user is None and api_key is None:
            raise PayoutRefused(f"payout #{payout.pk} ({format_cents(payout.amount)}) is above {limit}: it needs "
                                "two approvals by two different staff members")
        if payout.first_approved_at is None:
            return _first_approval(payout, user=user, api_key=api_key, reason=reason, source=source, at=at,
                                   limit=limit)
        if _same_approver(payout, user=user, api_key=api_key):
            raise PayoutRefused(f"the second approval must come from a different staff member: "
                                f"{_approver_name(user, api_key)} already gave the first one")
        data = {"approval": "2 of 2", "first_approved_by": _first_approver_name(payout)}
    payout.approved_at, payout.approved_by, payout.held_reason = at, user, ""
    _transition(payout, S.APPROVED, actor=user, source=source, reason=reason, data=data)
    payout.save(update_fields=["status", "approved_at", "approved_by", "held_reason"])
    if source == STAFF:
        _audit_payout(actor=user, action="payout.approve", payout=payout, reason=reason, data=data)
    _queue_processing(payout)
    return payout


def _first_approval(payout: Payout, *, user, api_key, reason: str, source: str, at: datetime, limit: str) -> Payout:
    payout.first_approved_by, payout.first_approved_by_key, payout.first_approved_at = user, api_key, at
    data = {"approval": "1 of 2", "second_approval_above": limit}
    # A requested -> requested row: the payout's trail shows who gave the first approval and when.
    _transition(payout, S.REQUESTED, actor=user, source=source, reason=reason, data=data)
    payout.save(update_fields=["first_approved_by", "first_approved_by_key", "first_approved_at"])
    if source == STAFF:
        _audit_payout(actor=user, action="payout.first_approval", payout=payout, reason=reason, data=data)
    return payout


def _same_approver(payout: Payout, *, user, api_key) -> bool:
    if user is not None:
        return payout.first_approved_by_id == user.pk
    return payout.first_approved_by_key_id == api_key.pk


def _approver_name(user, api_key) -> str:
    return user.get_username() if user is not None else f"API key {api_key.prefix}"


def _first_approver_name(payout: Payout) -> str:
    if payout.first_approved_by_id:
        return payout.first_approved_by.get_username()
    if payout.first_approved_by_key_id:
        return f"API key {payout.first_approved_by_key.prefix}"
    return ""


def _audit_payout(*, actor, action: str, payout: Payout, reason: str = "", data=None) -> None:
    from referrals.models import AuditLog

    AuditLog.objects.create(actor=actor, action=action, object_type="Payout", object_id=str(payout.pk),
                            reason=reason, data={"amount": format_cents(payout.amount), **(data or {})})


def _queue_processing(payout: Payout) -> None:
    """Send the payout to its provider once the approval commits (a Celery task; run inline when
    no broker is configured). If the queue is down the payout stays approved and
    retry_stuck_payouts sends it later."""
    if settings.PAYOUT_PROCESS_ON_APPROVE:
        from referrals.tasks import enqueue_on_commit

        from .tasks import process_payout

        enqueue_on_commit(process_payout, payout.pk)


def _release(payout: Payout, to_status: str, *, actor, source: str, reason: str, at: datetime) -> Payout:
    _event(RELEASED, payout, source=source, actor=actor, at=at, legs_from=payout.allocation)
    payout.finished_at = at
    if to_status == S.FAILED:
        payout.failure_reason = reason
    _transition(payout, to_status, actor=actor, source=source, reason=reason)
    payout.save(update_fields=["status", "finished_at", "failure_reason"])
    return payout


@transaction.atomic
def payout_reject(*, payout: Payout, actor, reason: str, source: str = STAFF, at: datetime | None = None) -> Payout:
    if not reason or not reason.strip():
        raise PayoutInvalid({"reason": "is required to reject a payout"})
    payout = _locked(payout)
    if payout.status not in (S.REQUESTED, S.APPROVED):
        raise PayoutRefused(f"only requested or approved payouts can be rejected (payout #{payout.pk} is "
                            f"{payout.status})")
    return _release(payout, S.REJECTED, actor=actor, source=source, reason=reason.strip(),
                    at=at or timezone.now())


@transaction.atomic
def payout_cancel(*, payout: Payout, actor, reason: str = "cancelled by the account holder", source: str = USER,
                  at: datetime | None = None) -> Payout:
    payout = _locked(payout)
    if payout.status != S.REQUESTED:
        raise PayoutRefused("a payout can only be cancelled before it is approved")
    return _release(payout, S.CANCELLED, actor=actor, source=source, reason=reason, at=at or timezone.now())


@transaction.atomic
def payout_mark_failed(*, payout: Payout, reason: str, actor=None, source: str = PROVIDER,
                       at: datetime | None = None) -> Payout:
    """The provider refused or reversed it: the money goes back to the balance. A paid payout
    whose transfer was reversed fails too (its money comes back from platform:payouts)."""
    payout = _locked(payout)
    at = at or timezone.now()
    if payout.status in (S.APPROVED, S.PROCESSING):
        payout = _release(payout, S.FAILED, actor=actor, source=source, reason=reason, at=at)
    elif payout.status == S.PAID:
        # What a partial reversal already gave back is not given back twice.
        rest = _slice(payout.allocation, payout.reversed_amount, payout.amount)
        _event(REVERSED, payout, source=source, actor=actor, at=at, legs_from=rest)
        payout.finished_at, payout.failure_reason, payout.reversed_amount = at, reason, payout.amount
        _transition(payout, S.FAILED, actor=actor, source=source, reason=reason)
        payout.save(update_fields=["status", "finished_at", "failure_reason", "reversed_amount"])
    else:
        return payout  # already failed, rejected or cancelled: nothing left to undo
    outbox.publish(PAYOUT_FAILED, account_id=payout.account_id, data=_message(payout))
    return payout


@transaction.atomic
def payout_mark_paid(*, payout: Payout, reference: str = "", actor=None, source: str = PROVIDER, reason: str = "",
                     at: datetime | None = None) -> Payout:
    """The provider paid it. Idempotent: a paid payout stays paid; a failed one is not revived
    (out-of-order provider news never moves a payout backwards)."""
    payout = _locked(payout)
    if payout.status not in (S.APPROVED, S.PROCESSING):
        if payout.status != S.PAID and source == STAFF:
            raise PayoutRefused(f"only approved or processing payouts can be marked paid (payout #{payout.pk} is "
                                f"{payout.status})")
        return payout
    at = at or timezone.now()
    _event(SETTLED, payout, source=source, actor=actor, at=at, legs_from=payout.allocation)
    payout.finished_at = at
    payout.provider_reference = reference or payout.provider_reference
    payout.last_error = ""
    _transition(payout, S.PAID, actor=actor, source=source, reason=reason, data={"reference": reference})
    payout.save(update_fields=["status", "finished_at", "provider_reference", "last_error"])
    if source == STAFF:
        _audit_payout(actor=actor if getattr(actor, "pk", None) else None, action="payout.mark_paid", payout=payout,
                      reason=reason, data={"reference": payout.provider_reference})
    outbox.publish(PAYOUT_PAID, account_id=payout.account_id, data=_message(payout))
    return payout


@transaction.atomic
def payout_reversed_in_part(*, payout: Payout, reversed_total: int, reference: str = "", actor=None,
                            source: str = WEBHOOK, at: datetime | None = None) -> Payout:
    """The provider reversed part of the transfer: `reversed_total` units of it so far (Stripe's
    `amount_reversed` is cumulative). Only the increase since the last news moves
    (platform:payouts → cash) and the payout stays paid; the same figure again moves nothing.
    News of a reversal before the transfer's own news means the transfer happened: the payout is
    settled first. A failed, rejected or cancelled payout has nothing left to give back."""
    payout = _locked(payout)
    at = at or timezone.now()
    if payout.status in (S.APPROVED, S.PROCESSING):
        payout = payout_mark_paid(payout=payout, reference=reference, actor=actor, source=source, at=at)
    if payout.status != S.PAID:
        return payout
    total = min(max(int(reversed_total), 0), payout.amount)
    increase = total - payout.reversed_amount
    if increase <= 0:
        return payout
    _event(PARTLY_REVERSED, payout, source=source, actor=actor, at=at,
           legs_from=_slice(payout.allocation, payout.reversed_amount, total), suffix=f":{total}")
    payout.reversed_amount = total
    _transition(payout, S.PAID, actor=actor, source=source,
                reason=f"the provider reversed {format_cents(increase)} of the transfer "
                       f"({format_cents(total)} of {format_cents(payout.amount)} in all)",
                data={"reversed": format_cents(total)})
    payout.save(update_fields=["reversed_amount"])
    return payout


@transaction.atomic
def payout_retry(*, payout: Payout, actor, reason: str = "", source: str = STAFF, at: datetime | None = None) -> Payout:
    """Send a failed payout again: a new attempt (so a new idempotency key), its amount reserved
    again from the cash available now."""
    at = at or timezone.now()
    payout = _locked(payout)
    if payout.status != S.FAILED:
        raise PayoutRefused(f"only failed payouts can be retried (payout #{payout.pk} is {payout.status})")
    account = Account.objects.select_for_update().get(pk=payout.account_id)
    cash = selectors.withdrawable_cash_by_program(account)
    programs = Program.objects.in_bulk(list(cash))
    allowed = {pid: u for pid, u in cash.items() if payout.method_type in (programs[pid].payout_methods or [])}
    available = floor_to_cents(min(sum(allowed.values()), selectors.cash_available(account)))
    if payout.amount > available:
        raise PayoutRefused(f"the account no longer has {format_cents(payout.amount)} of cash for this payout "
                            f"(available: {format_cents(available)})")
    payout.attempt += 1
    payout.allocation = allocate(allowed, payout.amount)
    payout.provider_reference, payout.failure_reason, payout.last_error = "", "", ""
    payout.reversed_amount, payout.held_reason = 0, ""
    payout.approved_at, payout.finished_at, payout.processing_at = at, None, None
    _event(RESERVED, payout, source=source, actor=actor, at=at, legs_from=payout.allocation)
    _transition(payout, S.APPROVED, actor=actor, source=source, reason=reason or "retry",
                data={"attempt": payout.attempt})
    payout.save()
    _queue_processing(payout)
    return payout


def _message(payout: Payout) -> dict:
    return {"payout": payout.pk, "amount": format_cents(payout.amount), "method": payout.method_type,
            "status": payout.status, "reference": payout.provider_reference, "reason": payout.failure_reason}


# --------------------------------------------------------------------------- the provider round trip


def _claim(payout_id: int, at: datetime) -> Payout | None:
    """Mark the payout processing (or re-claim a stuck one) in its own committed transaction,
    before any provider call; None when it is not ours to send now."""
    stuck_before = at - timedelta(minutes=settings.PAYOUT_STUCK_AFTER_MINUTES)
    with transaction.atomic():
        payout = _locked(payout_id)
        if payouts_held(payout.account_id):
            return None  # an open account flag holds it; clearing the flag queues it again
        if payout.status == S.APPROVED:
            cash = _locked_cash(payout.account_id)
            if reason := _uncovered(payout, cash):
                _hold(payout, reason)
                return None
            payout.processing_at = at
            _transition(payout, S.PROCESSING, actor=None, source=JOB, data={"attempt": payout.attempt, "cash": cash})
            payout.save(update_fields=["status", "processing_at"])
            return payout
        if payout.status == S.PROCESSING and (payout.processing_at is None or payout.processing_at <= stuck_before):
            Payout.objects.filter(pk=payout.pk).update(processing_at=at)
            PayoutTransition.objects.create(payout=payout, from_status=S.PROCESSING, to_status=S.PROCESSING,
                                            source=JOB, reason="retry: no final answer from the provider yet",
                                            data={"attempt": payout.attempt, "last_error": payout.last_error})
            payout.processing_at = at
            return payout
    return None


def _hold(payout: Payout, reason: str) -> None:
    """Stop an approved payout before it goes out: back to requested, its approvals withdrawn
    (they were given for a covered payout), the reason kept for staff. Its money stays reserved."""
    log.warning("payout #%s held before sending: %s", payout.pk, reason)
    _transition(payout, S.REQUESTED, actor=None, source=JOB, reason=reason)
    payout.held_reason = reason
    payout.approved_at = payout.approved_by = None
    payout.first_approved_at = payout.first_approved_by = payout.first_approved_by_key = None
    payout.save(update_fields=["status", "held_reason", "approved_at", "approved_by", "first_approved_at",
                               "first_approved_by", "first_approved_by_key"])
    _audit_payout(actor=None, action="payout.held", payout=payout, reason=reason)


def payout_process(*, payout_id: int, at: datetime | None = None) -> Payout:
    """Send one approved (or stuck processing) payout to its provider and record the answer.

    Safe to call twice or concurrently: the claim lets one caller through, and the provider
    sees the same idempotency key on every call of an attempt."""
    at = at or timezone.now()
    payout = _claim(payout_id, at)
    if payout is None:
        return Payout.objects.get(pk=payout_id)
    provider = provider_for(payout.method_type)
    try:
        result = provider.fetch(payout) if payout.provider_reference else None
        if result is None:
            result = provider.send(payout)
    except ProviderError as exc:
        if exc.retryable:
            log.warning("payout #%s: %s; it stays processing and will be retried", payout.pk, exc)
            Payout.objects.filter(pk=payout.pk).update(last_error=str(exc)[:2000])
            return Payout.objects.get(pk=payout.pk)
        return payout_mark_failed(payout=payout, reason=str(exc), source=PROVIDER)
    return record_result(payout=payout, result=result, source=PROVIDER)


def record_result(*, payout: Payout, result: ProviderResult, source: str) -> Payout:
    if result.status == PAID:
        return payout_mark_paid(payout=payout, reference=result.reference, source=source)
    if result.status == FAILED:
        if result.reference and not payout.provider_reference:
            Payout.objects.filter(pk=payout.pk).update(provider_reference=result.reference)
        return payout_mark_failed(payout=payout, reason=result.reason or "the provider refused the payout",
                                  source=source)
    Payout.objects.filter(pk=payout.pk, status=S.PROCESSING).update(provider_reference=result.reference,
                                                                    last_error="")
    return Payout.objects.get(pk=payout.pk)


def retry_stuck_payouts(*, at: datetime) -> dict:
    """The periodic job: send approved payouts nobody sent, and ask the provider again about
    processing ones without a final answer (same idempotency key, so never a second payment).

    One query finds the batch; each payout then costs one provider round trip, which no SQL can
    batch. Safe to run concurrently: each payout is claimed with a row lock and a time check."""
    stuck_before = at - timedelta(minutes=settings.PAYOUT_STUCK_AFTER_MINUTES)
    ids = list(selectors.stuck_payouts(approved_before=stuck_before, processing_before=stuck_before)
               .exclude(account__fraud_flags__status=FraudFlag.Status.OPEN)
               .values_list("id", flat=True)[:500])
    counts = {"retried": 0, "paid": 0, "failed": 0, "processing": 0}
    for payout_id in ids:
        try:
            payout = payout_process(payout_id=payout_id, at=at)
        except IntegrityError:
            log.exception("payout #%s: recording the provider's answer failed", payout_id)
            continue
        counts["retried"] += 1
        counts[payout.status if payout.status in ("paid", "failed") else "processing"] += 1
    return counts

"""Writes: ingesting events, applying them to accounts and the ledger, staff decisions.

Every state change is one atomic function. An event is applied by `apply_event`, the same
code whether it arrives from the API, the portal, a staff action or a periodic job, and
whether it is applied live or replayed by `verify_ledger`.
"""
import ipaddress
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from disposable_email_domains import blocklist as disposable_domains
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from ledger.models import Balance, Book, Entry
from ledger.money import format_exact, net_sum, share_of
from ledger.services import Leg, open_books, post

from . import bulk, clicks, engine, outbox, rules
from . import events as ev
from .engine import (
    EventRejected,
    accrual_legs,
    accrual_of,
    publish_commission,
    publish_conversion,
    template_gate_seconds,
)
from .models import (
    Account,
    Accrual,
    Application,
    AuditLog,
    Click,
    CreditGrant,
    Event,
    FraudFlag,
    MilestoneAward,
    PaymentFingerprint,
    Program,
    Referral,
    Template,
    Track,
    TrackChange,
)

log = logging.getLogger(__name__)

# Internal event types: value-moving actions that are not external events.
APPLICATION_APPROVED = "application.approved"
APPLICATION_REJECTED = "application.rejected"
APPLICATION_REOPENED = "application.reopened"
TRACK_CHANGED = "track.changed"
REFERRAL_CLEARED = "referral.cleared"
REFERRAL_FRAUD_CONFIRMED = "referral.fraud_confirmed"
ACCOUNT_FRAUD_CONFIRMED = "account.fraud_confirmed"
CREDITS_EXPIRED = "credits.expired"
EARNINGS_RELEASED = "earnings.released"
TEMPLATES_QUALIFIED = "templates.qualified"
MILESTONES_CAUGHT_UP = "milestones.caught_up"


class ActionRefused(Exception):
    """A staff or user action that is not allowed in the current state."""


@dataclass
class IngestResult:
    id: str
    status: str  # accepted | duplicate | rejected
    code: str = ""
    message: str = ""
    fields: dict | None = None

    def as_dict(self) -> dict:
        out = {"id": self.id, "status": self.status}
        if self.status == "rejected":
            out["error"] = {"code": self.code, "message": self.message, "fields": self.fields or {}}
        return out


# --------------------------------------------------------------------------- ingestion


def ingest_event(raw, *, source: str = Event.Source.API, now: datetime | None = None) -> IngestResult:
    """Validate, deduplicate and apply one external event atomically."""
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    result_id = raw_id if isinstance(raw_id, str) else ""
    try:
        valid = ev.validate_event(raw, now=now)
    except ev.EventInvalid as exc:
        return IngestResult(result_id, "rejected", exc.code, str(exc), exc.fields)
    return ingest_valid_event(valid, source=source)


def ingest_valid_event(valid: ev.ValidEvent, *, source: str = Event.Source.API) -> IngestResult:
    """Deduplicate and apply one validated event atomically (the synchronous path)."""
    from .ingestion import apply_pending  # ingestion builds on this module

    known = _known_outcome(valid)
    if known:
        return known
    # Events of this account that a batch stored and a task has not applied yet come first,
    # so this one is checked against their effects (and applied in id order, as in a replay).
    account_id = Account.objects.filter(external_id=valid.account).values_list("pk", flat=True).first()
    if account_id is not None:
        apply_pending(account_id=account_id)
    try:
        with transaction.atomic():
            if account_id is not None:
                # The account's lock before the event's id: per account, ids then follow the order
                # events are applied in, which is the order a replay (and a milestone's "spend up to
                # this charge") uses. Without it, two racing charges could each count only itself.
                list(Account.objects.select_for_update().filter(pk=account_id).values_list("pk", flat=True))
            event = Event.objects.create(
                external_id=valid.external_id, type=valid.type, source=source, occurred_at=valid.occurred_at,
                account_id=account_id,
                payload=valid.raw, content_hash=valid.content_hash, amount=valid.amount,
                product=valid.product, runtime_seconds=valid.runtime_seconds,
            )
            apply_event(event)
    except EventRejected as exc:
        return IngestResult(valid.external_id, "rejected", exc.code, str(exc), exc.fields)
    except IntegrityError:
        # Two senders raced on the same id: the loser answers like a plain duplicate.
        known = _known_outcome(valid)
        if known:
            return known
        raise
    return IngestResult(valid.external_id, "accepted")


def _known_outcome(valid: ev.ValidEvent) -> IngestResult | None:
    stored_hash = Event.objects.filter(external_id=valid.external_id).values_list("content_hash", flat=True).first()
    if stored_hash is None:
        return None
    if stored_hash == valid.content_hash:
        return IngestResult(valid.external_id, "duplicate")
    reason = "already used by an event with different content"
    return IngestResult(valid.external_id, "rejected", "id_conflict", f"id: {reason}", {"id": reason})


def _record(event_type: str, *, payload: dict, source: str, account: Account | None = None, actor=None,
            occurred_at: datetime | None = None, only_if_effective: bool = False) -> tuple[Event | None, int]:
    """Write an internal event and apply it. With `only_if_effective`, an event that changes
    nothing is not kept (periodic jobs run often and mostly find nothing to do)."""
    occurred_at = occurred_at or timezone.now()
    try:
        with transaction.atomic():
            event = Event.objects.create(
                external_id=f"{source}:{event_type}:{uuid.uuid4().hex}", type=event_type, source=source,
                account=account, occurred_at=occurred_at, payload=payload,
                content_hash=ev.content_hash(payload), actor=actor,
            )
            effect = apply_event(event) or 0
            if only_if_effective and not effect:
                raise _NoEffect
    except _NoEffect:
        return None, 0
    return event, effect


class _NoEffect(Exception):
    pass


def apply_event(event: Event, *, replay: bool = False) -> int:
    """Apply one logged event (the engine's batch of one); returns how many things it changed
    (for jobs' counts). A reason to reject it propagates as `EventRejected`."""
    return engine.apply_events([event], replay=replay, on_error=None)


# --------------------------------------------------------------------------- helpers


def _account_for(event: Event) -> Account:
    external_id = event.payload.get("account")
    account = Account.objects.select_for_update().filter(external_id=external_id).first()
    if account is None:
        raise EventRejected({"account": f"unknown account {external_id!r}"}, "unknown_account")
    if event.account_id != account.pk:
        event.account = account
        event.save(update_fields=["account"])
    return account


def _referral_for(account: Account) -> Referral | None:
    return Referral.objects.select_for_update().filter(referred=account).first()


def _is_approved(program: Program, account_id: int) -> bool:
    return Application.objects.filter(
        program=program, account_id=account_id, status=Application.Status.APPROVED
    ).exists()


def track_at(account_id: int, at: datetime) -> str:
    change = (TrackChange.objects.filter(account_id=account_id, effective_at__lte=at)
              .order_by("-effective_at", "-id").first())
    return change.track if change else Track.BASIC


def _enabled_programs(*kinds) -> list[Program]:
    return list(Program.objects.filter(enabled=True, kind__in=kinds))


def _persist(earnings: list[rules.Earning], event: Event) -> None:
    for earning in earnings:
        accrual = accrual_of(earning, event)
        accrual.save(force_insert=True)
        post(kind="accrual", rule=earning.rule, event=event, legs=accrual_legs(earning))
        if not earning.held and earning.expires_days:
            _grant_credits([accrual])
        publish_commission(accrual, earning, event)


def _grant_credits(accruals=(), *, batch: str = "") -> None:
    """Open the expiring credit grants of released accruals: from a list of Accrual objects, or
    set-based from a temporary table of accrual rows (see `release_ready`)."""
    if batch:
        if bulk.is_postgres():
            expires = "created_at + expires_days * INTERVAL '1 day'"
        else:  # SQLite keeps datetimes as text; datetime() drops the microseconds, so add them back
            expires = "datetime(created_at, '+' || expires_days || ' days') || substr(created_at, 20)"
        bulk.execute(
            "INSERT INTO {grant} (account_id, accrual_id, amount, remaining, expires_at) "
            "SELECT beneficiary_id, id, amount - reversed, amount - reversed, {expires} FROM {batch} "
            "WHERE expires_days > 0 AND amount > reversed",
            grant=bulk.table(CreditGrant), expires=expires, batch=batch)
        return
    CreditGrant.objects.bulk_create([
        CreditGrant(account_id=a.beneficiary_id, accrual_id=a.pk, amount=a.amount - a.reversed,
                    remaining=a.amount - a.reversed, expires_at=a.created_at + timedelta(days=a.expires_days))
        for a in accruals if a.expires_days and a.amount > a.reversed
    ])


HOLD_FLAGS = ("held_for_gate", "held_for_template", "held_for_fraud")


def release_ready(accruals, *, event: Event, rule: str, at: datetime, clearing: str = "") -> int:
    """Move held accruals with no hold left from pending to their destination book.

    Set-based whatever the row count: the ready rows are snapshotted (and row-locked on
    PostgreSQL) into a temporary table, then posted, marked released and granted their
    expiring credits by a few INSERT ... SELECT / UPDATE statements. `clearing` names a hold
    flag being lifted by the caller: it is ignored when picking the ready rows and cleared on
    the released ones in the same UPDATE (the caller clears it on the rows still held).
    """
    if clearing and clearing not in HOLD_FLAGS:
        raise ValueError(f"clearing: must be one of {', '.join(HOLD_FLAGS)}, not {clearing!r}")
    ready = (
        accruals.filter(state=Accrual.State.HELD, **{flag: False for flag in HOLD_FLAGS if flag != clearing})
        .filter(Q(held_until__isnull=True) | Q(held_until__lte=at))
        .order_by()
        .values("id", "beneficiary_id", "program_id", "destination", "amount", "reversed", "expires_days",
                "created_at")
    )
    if bulk.is_postgres():
        ready = ready.select_for_update(of=("self",))
    sql, params = bulk.queryset_sql(ready)
    with bulk.Batch("ready", sql, params) as batch:
        if not batch.count:
            return 0
        groups = bulk.sql(
            "SELECT beneficiary_id AS account_id, program_id, destination, SUM(amount - reversed) AS amount "
            "FROM {batch} GROUP BY beneficiary_id, program_id, destination", batch=batch)
        bulk.post_moves(kind="release", rule=rule, event=event, params=[Book.PENDING], moves_sql=bulk.sql(
            "SELECT g.account_id, g.program_id, %s AS from_book, g.destination AS to_book, g.amount FROM ({groups}) g",
            groups=groups))
        bulk.execute("UPDATE {accrual} SET state = %s, released_at = %s{clear} WHERE id IN (SELECT id FROM {batch})",
                     [Accrual.State.RELEASED, bulk.db_datetime(at)], accrual=bulk.table(Accrual), batch=batch,
                     clear=f", {clearing} = false" if clearing else "")
        _grant_credits(batch=batch.name)
        ready_groups = bulk.rows(groups + " HAVING SUM(amount - reversed) <> 0")
        for beneficiary_id, program_id, destination, amount in ready_groups:
            outbox.publish(outbox.COMMISSION_RELEASED, account_id=beneficiary_id, data={
                "program_id": program_id, "amount": format_exact(amount), "book": destination, "rule": rule})
        return batch.count


# --------------------------------------------------------------------------- external events


def _on_account_created(event: Event, replay: bool) -> int:
    payload = event.payload
    external_id = payload["account"]
    email = payload.get("email", "").strip()
    signup_ip = str(ipaddress.ip_address(payload["ip"].strip())) if payload.get("ip") else None
    if replay:
        account = Account.objects.get(external_id=external_id)
    else:
        if Account.objects.filter(external_id=external_id).exists():
            raise EventRejected({"account": "account already exists; only new accounts can be referred"},
                                "account_exists")
        account = Account.objects.create(
            external_id=external_id, email=email, email_normalized=ev.normalize_email(email),
            signup_ip=signup_ip, device_id=payload.get("device_id", ""),
            signed_up_at=event.occurred_at,
        )
        open_books([account.pk])
    event.account = account
    event.save(update_fields=["account"])

    referrer, click, template = _attribution(payload, event.occurred_at)
    if referrer is None:
        return 1
    signals = self_referral_signals(referrer, account, click)
    referral = Referral.objects.create(
        referrer=referrer, referred=account, click=click, template=template, created_at=event.occurred_at,
        status=Referral.Status.INELIGIBLE if signals else Referral.Status.PENDING,
        ineligible_reason=_reason(signals),
    )
    if signals:
        FraudFlag.objects.create(referral=referral, signals=signals)
    outbox.publish(outbox.REFERRAL_CREATED, account_id=referrer.pk, data={
        "referral": referral.pk, "referred": account.external_id, "status": referral.status,
        "occurred_at": event.occurred_at.isoformat()})
    ctx = rules.Context(event_type=event.type, occurred_at=event.occurred_at, amount=0, account_id=account.pk,
                        referrer_id=referrer.pk, referral_id=referral.pk, referral_ineligible=bool(signals))
    earnings = []
    for program in _enabled_programs(Program.Kind.SIGNUP_CREDIT):
        earnings += rules.signup_credit(program, ctx)
    _persist(earnings, event)
    return 1


def _attribution(payload: dict, occurred_at: datetime) -> tuple[Account | None, Click | None, Template | None]:
    referrer = click = template = None
    if code := payload.get("referral_code"):
        referrer = Account.objects.filter(referral_code=code.lower()).first()
        if referrer is None:
            raise EventRejected({"referral_code": f"unknown referral code {code!r}"}, "unknown_code")
        if not referrer.code_enabled:
            raise EventRejected({"referral_code": "this referral code is disabled"}, "disabled_code")
    if click_id := payload.get("click_id"):
        click = clicks.find_click(click_id)  # its row id, or its public id (also while still buffered)
        if click is None:
            raise EventRejected({"click_id": f"unknown click {click_id!r}"}, "unknown_click")
        if referrer is not None and click.referrer_id != referrer.pk:
            raise EventRejected({"click_id": "belongs to a different referral code"}, "click_mismatch")
        window = timedelta(days=settings.REFERRAL["ATTRIBUTION_WINDOW_DAYS"])
        if click.created_at < occurred_at - window:
            raise EventRejected({"click_id": "is older than the attribution window"}, "click_expired")
        referrer = referrer or click.referrer
        if not referrer.code_enabled:
            raise EventRejected({"click_id": "the click's referral code is disabled"}, "disabled_code")
    if template_id := payload.get("template"):
        template = Template.objects.filter(external_id=template_id).select_related("creator").first()
        if template is None:
            raise EventRejected({"template": f"unknown template {template_id!r}"}, "unknown_template")
        # A template link refers the visitor to the template's creator.
        referrer = referrer or template.creator
    return referrer, click, template


def self_referral_signals(referrer: Account, referred: Account, click: Click | None = None) -> list[dict]:
    """Why a referral looks like self-referral or abuse; empty when it does not."""
    signals = []
    if referrer.email_normalized and referrer.email_normalized == referred.email_normalized:
        signals.append({"signal": "same_email", "detail": referred.email_normalized})
    window = timedelta(days=settings.REFERRAL["SELF_REFERRAL_WINDOW_DAYS"])
    if abs(referred.signed_up_at - referrer.signed_up_at) <= window:
        if referrer.signup_ip and referrer.signup_ip == referred.signup_ip:
            signals.append({"signal": "same_ip", "detail": referred.signup_ip})
        if referrer.device_id and referrer.device_id == referred.device_id:
            signals.append({"signal": "same_device", "detail": referred.device_id})
    domain = referred.email_normalized.rpartition("@")[2]
    if _is_disposable(domain):
        signals.append({"signal": "disposable_email", "detail": domain})
    if click is not None and Referral.objects.filter(click=click).exists():
        signals.append({"signal": "shared_click", "detail": f"click {click.pk} already brought another sign-up"})
    burst_minutes = settings.REFERRAL["CLICK_BURST_MINUTES"]
    recent_clicks = Click.objects.filter(
        referrer=referrer, created_at__lte=referred.signed_up_at,
        created_at__gte=referred.signed_up_at - timedelta(minutes=burst_minutes)).count()
    if recent_clicks > settings.REFERRAL["CLICK_BURST_COUNT"]:
        signals.append({"signal": "click_burst",
                        "detail": f"{recent_clicks} clicks on the link in the {burst_minutes} minutes before sign-up"})
    return signals


def _is_disposable(domain: str) -> bool:
    """The maintained list of throwaway-mail domains (PyPI disposable-email-domains), parents included."""
    parts = domain.split(".")
    return any(".".join(parts[i:]) in disposable_domains for i in range(len(parts) - 1))


def _reason(signals: list[dict]) -> str:
    names = {"same_email": "same e-mail as the referrer", "same_ip": "same sign-up IP as the referrer",
             "same_device": "same device as the referrer", "same_payment": "same payment method as the referrer",
             "disposable_email": "disposable e-mail domain", "shared_click": "click shared by several sign-ups",
             "click_burst": "burst of clicks on the link",
             "payout_destination": "payout destination shared with another account"}
    return "; ".join(names.get(s["signal"], s["signal"]) for s in signals)


def _on_money_event(event: Event, replay: bool) -> int:
    """Purchases and usage charges: conversions, spend, and every rate-based programme."""
    account = _account_for(event)
    referral = _referral_for(account)
    template = None
    if template_id := event.payload.get("template"):
        template = Template.objects.select_for_update().filter(external_id=template_id).first()
        if template is None:
            raise EventRejected({"template": f"unknown template {template_id!r}"}, "unknown_template")
        event.template = template
        event.save(update_fields=["template"])

    if event.type == ev.CREDITS_PURCHASED:
        Account.objects.filter(pk=account.pk).update(purchased_credits=F("purchased_credits") + event.amount)
        if fingerprint := event.payload.get("payment_fingerprint"):
            _check_payment_fingerprint(account, referral, fingerprint, event)
    elif event.type == ev.USAGE_CHARGED:
        # Usage is paid from the account's own purchased credits first.
        Account.objects.filter(pk=account.pk).update(
            purchased_credits=Greatest(F("purchased_credits") - event.amount, Value(0)))

    if referral is not None:
        referral.refresh_from_db()
        if event.type == ev.USAGE_CHARGED:
            referral.spend += event.amount
        else:
            referral.purchases += event.amount
        if referral.converted_at is None:
            referral.converted_at = event.occurred_at
            if referral.status == Referral.Status.PENDING:
                referral.status = Referral.Status.CONVERTED
                publish_conversion(referral, account, event)
        referral.save(update_fields=["spend", "purchases", "converted_at", "status"])

    if template is not None and event.runtime_seconds:
        Template.objects.filter(pk=template.pk).update(runtime_seconds=F("runtime_seconds") + event.runtime_seconds)
        template.refresh_from_db()

    ctx = rules.Context(
        event_type=event.type, occurred_at=event.occurred_at, amount=event.amount, product=event.product,
        account_id=account.pk,
        referrer_id=referral.referrer_id if referral else None, referral_id=referral.pk if referral else None,
        referral_ineligible=bool(referral and referral.status == Referral.Status.INELIGIBLE),
        referrer_track=track_at(referral.referrer_id, event.occurred_at) if referral else Track.BASIC,
        template_id=template.pk if template else None,
        template_creator_id=template.creator_id if template else None,
        template_qualified=bool(template and template.qualified_at),
    )
    earnings = []
    for program in _enabled_programs(*rules.RATE_KINDS, Program.Kind.MILESTONE):
        if program.kind == Program.Kind.TEMPLATE_SHARE:
            if template is not None and not ctx.template_qualified and _template_meets_gate(program, template):
                _qualify_template(template, program, event=event, at=event.occurred_at)
                ctx = rules.Context(**{**ctx.__dict__, "template_qualified": True})
            earnings += rules.template_share(program, ctx)
        elif program.kind == Program.Kind.MILESTONE:
            if referral is not None:
                earnings += _milestone(program, referral, event)
        else:
            approved = not program.requires_approval or (
                referral is not None and _is_approved(program, referral.referrer_id))
            earnings += rules.commission(program, ctx, approved=approved)
    _persist(earnings, event)
    return 1


def _milestone(program: Program, referral: Referral, event: Event) -> list[rules.Earning]:
    if event.type not in program.event_types or (program.product and program.product != event.product):
        return []
    after = _net_product_spend(referral.referred_id, program.product, up_to=event.pk)
    if not rules.milestone_crossed(program, after - event.amount, after):
        return []
    return _award_milestone(program, referral, event)


def _award_milestone(program: Program, referral: Referral, event: Event) -> list[rules.Earning]:
    try:
        with transaction.atomic():
            MilestoneAward.objects.create(program=program, referral=referral, event=event)
    except IntegrityError:
        return []  # already paid for this referred account
    return rules.milestone_bonuses(
        program, referrer_id=referral.referrer_id, referred_id=referral.referred_id, referral_id=referral.pk,
        ineligible=referral.status == Referral.Status.INELIGIBLE, occurred_at=event.occurred_at,
    )


def _net_product_spend(account_id: int, product: str, *, up_to: int) -> int:
    """Net spend of the charges applied up to event `up_to` included. A batch stores its charges
    before applying them, and a replay finds the whole log stored: later charges must not count."""
    charges = Event.objects.filter(account_id=account_id, type=ev.USAGE_CHARGED, pk__lte=up_to,
                                   applied_at__isnull=False)
    if product:
        charges = charges.filter(product=product)
    total = charges.aggregate(net=net_sum("amount", "refunded"))["net"]
    return int(total or 0)


def _template_meets_gate(program: Program, template: Template) -> bool:
    return template.runtime_seconds >= template_gate_seconds(program)


def _qualify_template(template: Template, program: Program, *, event: Event, at: datetime) -> int:
    Template.objects.filter(pk=template.pk, qualified_at__isnull=True).update(qualified_at=at)
    template.qualified_at = at
    held = Accrual.objects.filter(template=template, held_for_template=True)
    held.update(held_for_template=False)
    return release_ready(Accrual.objects.filter(template=template), event=event,
                         rule=f"{program.key}:template-qualified", at=at)


def _check_payment_fingerprint(account: Account, referral: Referral | None, fingerprint: str, event: Event) -> None:
    PaymentFingerprint.objects.get_or_create(account=account, fingerprint=fingerprint)
    suspects = Referral.objects.filter(
        Q(referred=account, referrer__fingerprints__fingerprint=fingerprint)
        | Q(referrer=account, referred__fingerprints__fingerprint=fingerprint)
    ).distinct()
    for suspect in suspects:
        flag_referral(suspect, [{"signal": "same_payment", "detail": fingerprint[-4:].rjust(len(fingerprint), "*")}],
                      event=event)


def flag_referral(referral: Referral, signals: list[dict], *, event: Event) -> None:
    """Mark a referral ineligible and hold everything its referrer earned through it."""
    referral = Referral.objects.select_for_update().get(pk=referral.pk)
    flag = referral.fraud_flags.filter(status=FraudFlag.Status.OPEN).first()
    if flag is None:
        flag = FraudFlag.objects.create(referral=referral, signals=signals)
    else:
        flag.signals = flag.signals + [s for s in signals if s not in flag.signals]
        flag.save(update_fields=["signals"])
    referral.status = Referral.Status.INELIGIBLE
    referral.ineligible_reason = _reason(flag.signals)
    referral.save(update_fields=["status", "ineligible_reason"])

    earned = (Accrual.objects.filter(referral=referral, beneficiary_id=referral.referrer_id)
              .exclude(state=Accrual.State.VOID))
    released = list(earned.filter(state=Accrual.State.RELEASED).select_for_update())
    legs = []
    for accrual in released:
        legs += [Leg(accrual.destination, -accrual.net, accrual.beneficiary_id, accrual.program_id),
                 Leg(Book.PENDING, accrual.net, accrual.beneficiary_id, accrual.program_id)]
    post(kind="fraud-hold", rule="self-referral", event=event, legs=legs)
    earned.update(state=Accrual.State.HELD, held_for_fraud=True, released_at=None)


def flag_account(account: Account, signals: list[dict]) -> FraudFlag:
    """Hold a whole account for staff review (its payouts wait while the flag is open); new
    signals join the account's open flag if it has one. The caller holds the account's row lock."""
    flag = FraudFlag.objects.open().select_for_update().filter(account=account).first()
    if flag is None:
        return FraudFlag.objects.create(account=account, signals=signals)
    added = [s for s in signals if s not in flag.signals]
    if added:
        flag.signals = flag.signals + added
        flag.save(update_fields=["signals"])
    return flag


# Apps whose rows an account flag holds (payouts) follow its decision: each listener is called
# as listener(flag=, actor=, reason=) inside the decision's transaction, before a confirmation
# voids the account's cash. payouts registers one, so referrals never imports payouts.
_account_flag_listeners: list = []


def on_account_flag_decided(listener) -> None:
    if listener not in _account_flag_listeners:
        _account_flag_listeners.append(listener)


def _decide_account_flag(flag: FraudFlag, status: str, *, actor, reason: str) -> None:
    account = Account.objects.select_for_update().get(pk=flag.account_id)
    flag.status, flag.decided_at, flag.decided_by, flag.reason = status, timezone.now(), actor, reason
    flag.save(update_fields=["status", "decided_at", "decided_by", "reason"])
    for listener in _account_flag_listeners:
        listener(flag=flag, actor=actor, reason=reason)
    if status != FraudFlag.Status.CONFIRMED:
        return
    # What the flag held back is the account's cash (open payouts were just released into it):
    # confirmed fraud voids it, as a confirmed referral flag voids the earnings it held. The
    # amounts travel in the event, so the replay posts exactly these legs.
    cash = (Entry.objects.filter(account=account, book=Book.CASH).values_list("program_id")
            .annotate(total=Sum("amount")).values_list("program_id", "total"))
    void = [[program_id, int(total)] for program_id, total in sorted(cash, key=lambda row: row[0] or 0)
            if total and total > 0]
    if void:
        _record(ACCOUNT_FRAUD_CONFIRMED, payload={"flag": flag.pk, "account": account.external_id,
                                                  "reason": reason, "void": void},
                source=Event.Source.STAFF, account=account, actor=actor)


def _on_account_fraud_confirmed(event: Event, replay: bool) -> int:
    legs = []
    for program_id, units in event.payload["void"]:
        legs += [Leg(Book.CASH, -units, event.account_id, program_id),
                 Leg(Book.EARNINGS_EXPENSE, units, None, program_id)]
    post(kind="fraud-void", rule="account-fraud-confirmed", event=event, legs=legs,
         memo="staff confirmed fraud on this account (a payout destination shared with another account)")
    return 1


def _on_refund(event: Event, replay: bool) -> int:
    account = _account_for(event)
    target_id = event.payload["refunds"]
    target = Event.objects.select_for_update().filter(external_id=target_id).first()
    if target is None:
        raise EventRejected({"refunds": f"unknown event {target_id!r}"}, "unknown_event")
    if target.account_id != account.pk:
        raise EventRejected({"refunds": "belongs to a different account"}, "wrong_account")
    if target.type not in ev.REFUNDABLE_TYPES:
        raise EventRejected({"refunds": f"a {target.type} event cannot be refunded"}, "not_refundable")
    refundable = target.amount - target.refunded
    if event.amount > refundable:
        raise EventRejected({"amount": f"is larger than what is left to refund ({format_exact(refundable)})"},
                            "refund_too_large")
    event.refunds = target
    event.save(update_fields=["refunds"])
    target.refunded += event.amount
    target.save(update_fields=["refunded"])

    referral = _referral_for(account)
    if referral is not None:
        field = "spend" if target.type == ev.USAGE_CHARGED else "purchases"
        Referral.objects.filter(pk=referral.pk).update(**{field: F(field) - event.amount})
    if target.type == ev.CREDITS_PURCHASED:
        Account.objects.filter(pk=account.pk).update(
            purchased_credits=Greatest(F("purchased_credits") - event.amount, Value(0)))

    # Claw back in proportion to what has been refunded so far, from whichever book the
    # commission sits in now. Cumulative shares make a full refund reverse exactly all of it.
    legs = []
    for accrual in target.accruals.filter(program__kind__in=rules.RATE_KINDS).exclude(
            state=Accrual.State.VOID).select_for_update():
        should_be_reversed = share_of(accrual.amount, target.refunded, target.amount)
        delta = should_be_reversed - accrual.reversed
        if delta <= 0:
            continue
        book = Book.PENDING if accrual.state == Accrual.State.HELD else accrual.destination
        legs += [Leg(book, -delta, accrual.beneficiary_id, accrual.program_id),
                 Leg(Book.EARNINGS_EXPENSE, delta, None, accrual.program_id)]
        Accrual.objects.filter(pk=accrual.pk).update(reversed=should_be_reversed)
    post(kind="reversal", rule="refund", event=event, legs=legs)
    return 1


def _on_redeem(event: Event, replay: bool) -> int:
    account = _account_for(event)
    at = event.occurred_at
    credits = Balance.objects.get(account=account, book=Book.CREDITS).amount
    grants = CreditGrant.objects.select_for_update().filter(account=account, expired_at__isnull=True, remaining__gt=0)
    lapsed = grants.filter(expires_at__lte=at).aggregate(total=Sum("remaining"))["total"] or 0
    spendable = credits - lapsed
    if event.amount > spendable:
        available = format_exact(max(spendable, 0))
        raise EventRejected({"amount": f"is more than the account's spendable credits ({available})"},
                            "insufficient_credits")
    left = event.amount
    # Credits that expire soonest are used first.
    for grant in grants.filter(expires_at__gt=at).order_by("expires_at", "id"):
        if not left:
            break
        take = min(grant.remaining, left)
        CreditGrant.objects.filter(pk=grant.pk).update(remaining=F("remaining") - take)
        left -= take
    post(kind="redemption", rule="credits.redeemed", event=event, legs=[
        Leg(Book.CREDITS, -event.amount, account.pk), Leg(Book.REDEEMED, event.amount, None)])
    return 1


def _on_template_published(event: Event, replay: bool) -> int:
    account = _account_for(event)
    template_id = event.payload["template"]
    template = Template.objects.filter(external_id=template_id).first()
    if template is not None and template.creator_id != account.pk:
        raise EventRejected({"template": "already published by another account"}, "template_taken")
    name = event.payload.get("name", "")
    if template is None:
        Template.objects.create(external_id=template_id, creator=account, name=name)
    elif name:
        Template.objects.filter(pk=template.pk).update(name=name)
    return 1


# --------------------------------------------------------------------------- internal events


def _on_application_decided(event: Event, replay: bool) -> int:
    application = Application.objects.select_for_update().get(pk=event.payload["application"])
    status = {APPLICATION_APPROVED: Application.Status.APPROVED, APPLICATION_REJECTED: Application.Status.REJECTED,
              APPLICATION_REOPENED: Application.Status.OPEN}[event.type]
    application.status = status
    application.reason = event.payload.get("reason", "")
    application.decided_at = None if status == Application.Status.OPEN else event.occurred_at
    application.decided_by = event.actor
    application.save(update_fields=["status", "reason", "decided_at", "decided_by"])
    if status != Application.Status.OPEN:
        outbox.publish(outbox.APPLICATION_DECIDED, account_id=application.account_id, data={
            "application": application.pk, "program": application.program.key, "status": status,
            "reason": application.reason})
    if status != Application.Status.APPROVED:
        return 1
    earned = Accrual.objects.filter(program=application.program, beneficiary=application.account)
    earned.filter(held_for_gate=True).update(held_for_gate=False)
    release_ready(earned, event=event, rule=f"{application.program.key}:approved", at=event.occurred_at)
    return 1


def _on_track_changed(event: Event, replay: bool) -> int:
    track = event.payload["track"]
    TrackChange.objects.create(account=event.account, track=track, effective_at=event.occurred_at, event=event)
    Account.objects.filter(pk=event.account_id).update(track=track)
    return 1


def _on_referral_decided(event: Event, replay: bool) -> int:
    referral = Referral.objects.select_for_update().get(pk=event.payload["referral"])
    flag = referral.fraud_flags.filter(status=FraudFlag.Status.OPEN).first()
    reason = event.payload.get("reason", "")
    earned = Accrual.objects.filter(referral=referral)
    if event.type == REFERRAL_CLEARED:
        if flag:
            flag.status, flag.decided_at, flag.decided_by, flag.reason = (
                FraudFlag.Status.CLEARED, event.occurred_at, event.actor, reason)
            flag.save()
        referral.status = Referral.Status.CONVERTED if referral.converted_at else Referral.Status.PENDING
        referral.ineligible_reason = ""
        referral.save(update_fields=["status", "ineligible_reason"])
        earned.update(held_for_fraud=False)
        # Earnings still behind a programme gate or template gate stay held for it.
        release_ready(earned, event=event, rule="fraud-cleared", at=event.occurred_at)
        return 1
    if flag:
        flag.status, flag.decided_at, flag.decided_by, flag.reason = (
            FraudFlag.Status.CONFIRMED, event.occurred_at, event.actor, reason)
        flag.save()
    held = list(earned.filter(state=Accrual.State.HELD).select_for_update())
    legs = []
    for accrual in held:
        if accrual.net:
            legs += [Leg(Book.PENDING, -accrual.net, accrual.beneficiary_id, accrual.program_id),
                     Leg(Book.EARNINGS_EXPENSE, accrual.net, None, accrual.program_id)]
    post(kind="void", rule="fraud-confirmed", event=event, legs=legs)
    Accrual.objects.filter(pk__in=[a.pk for a in held]).update(state=Accrual.State.VOID)
    return 1


_HANDLERS = {
    ev.ACCOUNT_CREATED: _on_account_created,
    ev.CREDITS_PURCHASED: _on_money_event,
    ev.PLAN_PURCHASED: _on_money_event,
    ev.USAGE_CHARGED: _on_money_event,
    ev.PAYMENT_REFUNDED: _on_refund,
    ev.CREDITS_REDEEMED: _on_redeem,
    ev.TEMPLATE_PUBLISHED: _on_template_published,
    APPLICATION_APPROVED: _on_application_decided,
    APPLICATION_REJECTED: _on_application_decided,
    APPLICATION_REOPENED: _on_application_decided,
    TRACK_CHANGED: _on_track_changed,
    REFERRAL_CLEARED: _on_referral_decided,
    REFERRAL_FRAUD_CONFIRMED: _on_referral_decided,
    ACCOUNT_FRAUD_CONFIRMED: _on_account_fraud_confirmed,
}


def register_handler(event_type: str, handler) -> None:
    """Jobs register the handlers of the internal events they write (see referrals.jobs)."""
    _HANDLERS[event_type] = handler


# --------------------------------------------------------------------------- staff and user actions


ATTRIBUTION_FIELDS = ("referral_code", "click_id", "template")


class SignupFailed(Exception):
    """The portal sign-up could not create the account; the message is for the visitor."""


def portal_sign_up(*, email: str, password: str, ip: str = "", device_id: str = "",
                   attribution: dict | None = None):
    """Create a portal login and its account (an `account.created` event) in one transaction.

    A stale cookie (its code disabled or its click gone since) must not cost the visitor the
    sign-up: the event is retried once without attribution.
    """
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(username=email, email=email, password=password)
            raw = {"id": f"portal-signup-{uuid.uuid4().hex}", "type": ev.ACCOUNT_CREATED,
                   "account": f"portal-{user.pk}", "occurred_at": timezone.now().isoformat(), "email": email}
            if ip:
                raw["ip"] = ip
            if device_id:
                raw["device_id"] = device_id
            referred = _attribution_fields(attribution)
            result = ingest_event({**raw, **referred}, source=Event.Source.PORTAL)
            if result.status == "rejected" and referred and set(result.fields or {}) & set(ATTRIBUTION_FIELDS):
                log.info("sign-up %s: referral cookie refused (%s), signing up unattributed", raw["id"], result.message)
                result = ingest_event(raw, source=Event.Source.PORTAL)
            if result.status != "accepted":
                log.warning("sign-up %s refused: %s", raw["id"], result.message)
                raise SignupFailed(f"We could not create your account: {result.message}")
            Account.objects.filter(external_id=raw["account"]).update(user=user)
    except IntegrityError:
        # Two sign-ups raced for the same e-mail; the form's check let both through.
        raise SignupFailed("An account with this e-mail already exists. Log in instead.")
    return user


def _attribution_fields(attribution: dict | None) -> dict:
    if not attribution:
        return {}
    fields = {"referral_code": attribution["code"]}
    if attribution.get("click"):
        fields["click_id"] = str(attribution["click"])
    if attribution.get("template"):
        fields["template"] = str(attribution["template"])
    return fields



def _audit(*, actor, action: str, obj, reason: str = "", data: dict | None = None) -> None:
    AuditLog.objects.create(actor=actor, action=action, object_type=type(obj).__name__, object_id=str(obj.pk),
                            reason=reason, data=data or {})


@transaction.atomic
def application_approve(*, application: Application, actor, reason: str = "") -> Application:
    application = Application.objects.select_for_update().get(pk=application.pk)
    if application.status != Application.Status.OPEN:
        raise ActionRefused(f"only open applications can be approved (this one is {application.status})")
    _record(APPLICATION_APPROVED, payload={"application": application.pk, "reason": reason},
            source=Event.Source.STAFF, account=application.account, actor=actor)
    _audit(actor=actor, action="application.approve", obj=application, reason=reason)
    application.refresh_from_db()
    return application


@transaction.atomic
def application_reject(*, application: Application, actor, reason: str) -> Application:
    if not reason or not reason.strip():
        raise ActionRefused("a reason is required to reject an application")
    application = Application.objects.select_for_update().get(pk=application.pk)
    if application.status != Application.Status.OPEN:
        raise ActionRefused(f"only open applications can be rejected (this one is {application.status})")
    _record(APPLICATION_REJECTED, payload={"application": application.pk, "reason": reason.strip()},
            source=Event.Source.STAFF, account=application.account, actor=actor)
    _audit(actor=actor, action="application.reject", obj=application, reason=reason)
    application.refresh_from_db()
    return application


@transaction.atomic
def application_reopen(*, application: Application, actor, reason: str = "") -> Application:
    application = Application.objects.select_for_update().get(pk=application.pk)
    if application.status != Application.Status.REJECTED:
        raise ActionRefused("only rejected applications can be reopened")
    _record(APPLICATION_REOPENED, payload={"application": application.pk, "reason": reason},
            source=Event.Source.STAFF, account=application.account, actor=actor)
    _audit(actor=actor, action="application.reopen", obj=application, reason=reason)
    application.refresh_from_db()
    return application


@transaction.atomic
def account_change_track(*, account: Account, track: str, actor=None, source: str = Event.Source.STAFF) -> Account:
    if track not in Track.values:
        raise ActionRefused(f"track must be one of {', '.join(Track.values)}")
    account = Account.objects.select_for_update().get(pk=account.pk)
    if account.track == track:
        return account
    _record(TRACK_CHANGED, payload={"account": account.external_id, "track": track}, source=source,
            account=account, actor=actor)
    _audit(actor=actor, action="account.track", obj=account, data={"track": track})
    account.refresh_from_db()
    return account


@transaction.atomic
def fraud_flag_clear(*, flag: FraudFlag, actor, reason: str = "") -> None:
    flag = FraudFlag.objects.select_for_update().get(pk=flag.pk)
    if flag.status != FraudFlag.Status.OPEN:
        raise ActionRefused("this flag has already been decided")
    if flag.account_id:
        _decide_account_flag(flag, FraudFlag.Status.CLEARED, actor=actor, reason=reason)
        _audit(actor=actor, action="fraud.clear", obj=flag, reason=reason)
        return
    _record(REFERRAL_CLEARED, payload={"referral": flag.referral_id, "reason": reason},
            source=Event.Source.STAFF, account=flag.referral.referrer, actor=actor)
    _audit(actor=actor, action="fraud.clear", obj=flag, reason=reason)


@transaction.atomic
def fraud_flag_confirm(*, flag: FraudFlag, actor, reason: str) -> None:
    if not reason or not reason.strip():
        raise ActionRefused("a reason is required to confirm fraud")
    flag = FraudFlag.objects.select_for_update().get(pk=flag.pk)
    if flag.status != FraudFlag.Status.OPEN:
        raise ActionRefused("this flag has already been decided")
    if flag.account_id:
        _decide_account_flag(flag, FraudFlag.Status.CONFIRMED, actor=actor, reason=reason.strip())
        _audit(actor=actor, action="fraud.confirm", obj=flag, reason=reason)
        return
    _record(REFERRAL_FRAUD_CONFIRMED, payload={"referral": flag.referral_id, "reason": reason},
            source=Event.Source.STAFF, account=flag.referral.referrer, actor=actor)
    _audit(actor=actor, action="fraud.confirm", obj=flag, reason=reason)


def record_job_event(event_type: str, *, at: datetime, payload: dict) -> tuple[Event | None, int]:
    """A periodic job's value-moving pass, logged as an event only when it changed something."""
    return _record(event_type, payload={**payload, "at": at.isoformat()}, source=Event.Source.JOB,
                   occurred_at=at, only_if_effective=True)


def record_staff_event(event_type: str, *, account: Account, payload: dict, actor) -> Event:
    """A staff action that moves value, logged as an internal event so the ledger replays it."""
    event, _ = _record(event_type, payload=payload, source=Event.Source.STAFF, account=account, actor=actor)
    return event

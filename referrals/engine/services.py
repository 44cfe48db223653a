"""Writes that are not the engine: staff and user actions, internal events of jobs and staff.

Every state change is one atomic function that logs an event and has the engine apply it
(`referrals.engine.apply.apply_events`, here as `apply_event`, a batch of one): the same code whether
an event arrives from the API, the portal, a staff action or a periodic job, and whether it is
applied live or replayed by `verify_ledger`. Ingesting external events is `referrals.engine.ingestion`.
"""
import logging
import uuid
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from ledger.models import Book, Entry

from ..models import Account, Application, AuditLog, Event, FraudFlag, Track
from . import apply as engine
from . import events as ev
from .apply import EventRejected, register_step
from .ingestion import IngestResult, ingest_event, ingest_valid_event
from .steps import (  # the internal event types, and what jobs and other apps use of the steps
    ACCOUNT_FRAUD_CONFIRMED,
    APPLICATION_APPROVED,
    APPLICATION_REJECTED,
    APPLICATION_REOPENED,
    CREDITS_EXPIRED,
    EARNINGS_RELEASED,
    MILESTONES_CAUGHT_UP,
    REFERRAL_CLEARED,
    REFERRAL_FRAUD_CONFIRMED,
    TEMPLATES_QUALIFIED,
    TRACK_CHANGED,
    flag_referral,
    release_ready,
    self_referral_signals,
    track_at,
)

log = logging.getLogger(__name__)

class ActionRefused(Exception):
    """A staff or user action that is not allowed in the current state."""


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


def register_handler(event_type: str, handler) -> None:
    """Apps register the step of the internal events they write (payouts, adjustments, jobs)."""
    register_step(event_type, handler)


def apply_event(event: Event, *, replay: bool = False) -> int:
    """Apply one logged event (the engine's batch of one); returns how many things it changed
    (for jobs' counts). A reason to reject it propagates as `EventRejected`."""
    return engine.apply_events([event], replay=replay, on_error=None)


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


__all__ = ["ACCOUNT_FRAUD_CONFIRMED", "APPLICATION_APPROVED", "APPLICATION_REJECTED", "APPLICATION_REOPENED",
           "CREDITS_EXPIRED", "EARNINGS_RELEASED", "MILESTONES_CAUGHT_UP", "REFERRAL_CLEARED",
           "REFERRAL_FRAUD_CONFIRMED", "TEMPLATES_QUALIFIED", "TRACK_CHANGED", "ActionRefused", "EventRejected",
           "IngestResult", "SignupFailed", "account_change_track", "application_approve", "application_reject",
           "application_reopen", "apply_event", "flag_account", "flag_referral", "fraud_flag_clear",
           "fraud_flag_confirm", "ingest_event", "ingest_valid_event", "on_account_flag_decided", "portal_sign_up",
           "record_job_event", "record_staff_event", "register_handler", "release_ready", "self_referral_signals",
           "track_at"]

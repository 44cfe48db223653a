"""The engine's single-event steps: every event type but the money events (which the engine
applies set-based, `referrals.engine.apply`), each applied by one function `step(event, replay)`,
and the pieces of applying shared with the engine (accrual rows and legs, messages, release of
held earnings, fraud holds, template qualification).

`STEPS` maps event types to their step; `referrals.engine.apply` owns the registry (other apps add
theirs with `engine.register_step`).
"""
import ipaddress
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from disposable_email_domains import blocklist as disposable_domains
from django.conf import settings
from django.db.models import F, Q

from ledger.models import Balance, Book
from ledger.money import format_exact, share_of
from ledger.services import Leg, open_books, post

from ..attribution import clicks
from ..models import (
    Account,
    Accrual,
    Application,
    Click,
    CreditGrant,
    Event,
    FraudFlag,
    PaymentFingerprint,
    Program,
    Referral,
    Template,
    Track,
    TrackChange,
)
from . import bulk, outbox, rules
from . import events as ev
from .configuration import Programs, load_programs

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


class EventRejected(Exception):
    """An event that is well-formed but cannot be applied; nothing it touched is kept."""

    def __init__(self, fields: dict[str, str], code: str = "rejected"):
        self.fields = fields
        self.code = code
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))


def accrual_values(earning: rules.Earning, event: Event) -> dict:
    """The accrual row of an earning, by column."""
    return {
        # `earning.program` is the version in force at the event's time (referrals.engine.configuration).
        "program_id": earning.program.pk, "program_version": earning.program.version, "rule": earning.rule,
        "beneficiary_id": earning.beneficiary_id, "event_id": event.pk,
        "referral_id": earning.referral_id, "template_id": earning.template_id, "amount": earning.amount,
        "reversed": 0, "destination": earning.destination, "track": earning.track,
        "state": Accrual.State.HELD if earning.held else Accrual.State.RELEASED,
        "held_for_gate": earning.held_for_gate, "held_for_template": earning.held_for_template,
        "held_for_fraud": earning.held_for_fraud, "held_until": earning.held_until,
        "expires_days": earning.expires_days, "created_at": event.occurred_at,
        "released_at": None if earning.held else event.occurred_at,
    }


def accrual_of(earning: rules.Earning, event: Event) -> Accrual:
    """The (unsaved) accrual of an earning."""
    return Accrual(**accrual_values(earning, event))


def accrual_legs(earning: rules.Earning) -> list[Leg]:
    book = Book.PENDING if earning.held else earning.destination
    return [Leg(book, earning.amount, earning.beneficiary_id, earning.program.pk),
            Leg(Book.EARNINGS_EXPENSE, -earning.amount, None, earning.program.pk)]


def commission_message(accrual_id: int, earning: rules.Earning, event: Event) -> tuple[str, int, dict]:
    return (outbox.COMMISSION_CREATED, earning.beneficiary_id, {
        "accrual": accrual_id, "program": earning.program.key, "rule": earning.rule,
        "amount": format_exact(earning.amount), "held": earning.held,
        "book": Book.PENDING if earning.held else earning.destination, "event": event.external_id})


def conversion_message(referral: Referral, account: Account, event: Event) -> tuple[str, int, dict]:
    return (outbox.REFERRAL_CONVERTED, referral.referrer_id, {
        "referral": referral.pk, "referred": account.external_id, "occurred_at": event.occurred_at.isoformat()})


def publish_commission(accrual: Accrual, earning: rules.Earning, event: Event) -> None:
    kind, account_id, data = commission_message(accrual.pk, earning, event)
    outbox.publish(kind, account_id=account_id, data=data)


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


def _persist(earnings: list[rules.Earning], event: Event) -> None:
    for earning in earnings:
        accrual = accrual_of(earning, event)
        accrual.save(force_insert=True)
        post(kind="accrual", rule=earning.rule, event=event, legs=accrual_legs(earning))
        if granted(earning):
            grant_credits([accrual])
        publish_commission(accrual, earning, event)


def granted(earning: rules.Earning) -> bool:
    """Whether an earning opens an expiring credit grant as it accrues (released sign-up credit)."""
    return not earning.held and bool(earning.expires_days)


def grant_credits(accruals=(), *, batch: str = "") -> None:
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
        bulk.execute("UPDATE {accrual} SET state = %s, released_at = %s{clear} WHERE {ready}",
                     [Accrual.State.RELEASED, bulk.db_datetime(at)], accrual=bulk.table(Accrual),
                     ready=bulk.one_of("id", batch), clear=f", {clearing} = false" if clearing else "")
        grant_credits(batch=batch.name)
        ready_groups = bulk.rows(groups + " HAVING SUM(amount - reversed) <> 0")
        for beneficiary_id, program_id, destination, amount in ready_groups:
            outbox.publish(outbox.COMMISSION_RELEASED, account_id=beneficiary_id, data={
                "program_id": program_id, "amount": format_exact(amount), "book": destination, "rule": rule})
        return batch.count


# --------------------------------------------------------------------------- external events


def _on_account_created(event: Event, replay: bool) -> int:
    payload = event.payload
    external_id = payload["account"]
    if replay:
        account = Account.objects.get(external_id=external_id)
    else:
        if Account.objects.filter(external_id=external_id).exists():
            raise EventRejected({"account": "account already exists; only new accounts can be referred"},
                                "account_exists")
        account = new_account(event)
        account.save(force_insert=True)
        open_books([account.pk])
    event.account = account
    warnings = list(event.warnings or [])
    referrer, click, template = _attribution(
        payload, event.occurred_at, ignored={w["field"] for w in warnings}, warnings=warnings)
    event.warnings = warnings
    event.save(update_fields=["account", "warnings"])
    if referrer is None:
        return 1
    signals = self_referral_signals(referrer, account, click)
    referral = new_referral(event, referrer=referrer, referred=account, click=click, template=template,
                            signals=signals)
    referral.save(force_insert=True)
    if signals:
        FraudFlag.objects.create(referral=referral, signals=signals)
    kind, account_id, data = referral_created_message(referral, account, event)
    outbox.publish(kind, account_id=account_id, data=data)
    _persist(signup_earnings(load_programs([event]), event, referral), event)
    return 1


def new_account(event: Event) -> Account:
    """The (unsaved) account an `account.created` event opens, its fields spelled as the database
    gives them back: the self-referral signals compare it with referrers read from there."""
    payload = event.payload
    email = payload.get("email", "").strip()
    signup_ip = str(ipaddress.ip_address(payload["ip"].strip())) if payload.get("ip") else None
    if signup_ip:
        # The column keeps an IPv4-mapped address dotted (::ffff:198.51.100.4), where Python
        # spells it in hex (::ffff:c633:6404): compared as is, a referrer's own IP did not match.
        signup_ip = Account._meta.get_field("signup_ip").to_python(signup_ip)
    return Account(
        external_id=payload["account"], email=email, email_normalized=ev.normalize_email(email), signup_ip=signup_ip,
        device_id=payload.get("device_id", ""), signed_up_at=event.occurred_at,
    )


def new_referral(event: Event, *, referrer: Account, referred: Account, click: Click | None,
                 template: Template | None, signals: list[dict]) -> Referral:
    """The (unsaved) referral of a sign-up: ineligible, with its reasons, when signals fired."""
    return Referral(
        referrer=referrer, referred=referred, click=click, template=template, created_at=event.occurred_at,
        status=Referral.Status.INELIGIBLE if signals else Referral.Status.PENDING,
        ineligible_reason=_reason(signals),
    )


def referral_created_message(referral: Referral, account: Account, event: Event) -> tuple[str, int, dict]:
    return (outbox.REFERRAL_CREATED, referral.referrer_id, {
        "referral": referral.pk, "referred": account.external_id, "status": referral.status,
        "occurred_at": event.occurred_at.isoformat()})


def signup_earnings(programs: Programs, event: Event, referral: Referral) -> list[rules.Earning]:
    """What a referred sign-up earns (the sign-up credit), under the programmes in force at its time."""
    ctx = rules.Context(event_type=event.type, occurred_at=event.occurred_at, amount=0,
                        account_id=referral.referred_id, referrer_id=referral.referrer_id, referral_id=referral.pk,
                        referral_ineligible=referral.status == Referral.Status.INELIGIBLE)
    earnings = []
    for program in programs.enabled(Program.Kind.SIGNUP_CREDIT, at=event.occurred_at):
        earnings += rules.signup_credit(program, ctx)
    return earnings


ATTRIBUTION_WARNED = ("referral_code", "click_id")


def warning(field_name: str, code: str, message: str) -> dict:
    """A result warning: the event was accepted, but this field of it was ignored."""
    return {"field": field_name, "code": code, "message": message}


def _attribution(payload: dict, occurred_at: datetime, *, ignored: set[str],
                 warnings: list[dict]) -> tuple[Account | None, Click | None, Template | None]:
    return attribution(
        payload, occurred_at, ignored=ignored, warnings=warnings,
        account_by_code=lambda code: Account.objects.filter(referral_code=code).first(),
        click_by_id=clicks.find_click,
        template_by_id=lambda template_id: Template.objects.filter(external_id=template_id)
        .select_related("creator").first())


def attribution(payload: dict, occurred_at: datetime, *, ignored: set[str], warnings: list[dict],
                account_by_code: Callable[[str], Account | None], click_by_id: Callable[[str], Click | None],
                template_by_id: Callable[[str], Template | None],
                ) -> tuple[Account | None, Click | None, Template | None]:
    """Who referred the account. A code or click that cannot attribute it (unknown, malformed,
    disabled, expired, mismatched) is ignored with a warning, never a rejection: losing the
    account would lose every later event of it. Fields in `ignored` (warned about when the event
    was first applied, or by validation) are skipped, so a replay decides the same.

    The lookups are given: the step reads each from the database, a set-based run
    (`referrals.engine.signups`) from what it loaded for the whole run."""
    referrer = click = template = None
    code = payload.get("referral_code") if "referral_code" not in ignored else None
    if code:
        found = account_by_code(code.lower()) if isinstance(code, str) else None
        if found is None:
            warnings.append(warning("referral_code", "unknown_code",
                                    f"unknown referral code {code!r}; the account is not attributed"))
        elif not found.code_enabled:
            warnings.append(warning("referral_code", "disabled_code",
                                    "this referral code is disabled; the account is not attributed"))
        else:
            referrer = found
    click_id = payload.get("click_id") if "click_id" not in ignored else None
    if click_id:
        found = click_by_id(click_id) if isinstance(click_id, str) else None  # row id or public id
        window = timedelta(days=settings.REFERRAL["ATTRIBUTION_WINDOW_DAYS"])
        if found is None:
            warnings.append(warning("click_id", "unknown_click", f"unknown click {click_id!r}; it is ignored"))
        elif referrer is not None and found.referrer_id != referrer.pk:
            warnings.append(warning("click_id", "click_mismatch",
                                    "belongs to a different referral code; it is ignored"))
        elif found.created_at < occurred_at - window:
            warnings.append(warning("click_id", "click_expired", "is older than the attribution window; "
                                    "it is ignored"))
        elif referrer is None and not found.referrer.code_enabled:
            warnings.append(warning("click_id", "disabled_code", "the click's referral code is disabled; "
                                    "the account is not attributed"))
        else:
            click = found
            referrer = referrer or found.referrer
    if template_id := payload.get("template"):
        template = template_by_id(template_id)
        if template is None:
            raise EventRejected({"template": f"unknown template {template_id!r}"}, "unknown_template")
        # A template link refers the visitor to the template's creator.
        referrer = referrer or template.creator
    return referrer, click, template


def self_referral_signals(referrer: Account, referred: Account, click: Click | None = None) -> list[dict]:
    """Why a referral looks like self-referral or abuse; empty when it does not."""
    since, until = click_burst_window(referred)
    return referral_signals(
        referrer, referred, click=click,
        click_shared=click is not None and Referral.objects.filter(click=click).exists(),
        recent_clicks=Click.objects.filter(referrer=referrer, created_at__lte=until, created_at__gte=since).count())


def click_burst_window(referred: Account) -> tuple[datetime, datetime]:
    """The minutes before a sign-up in which many clicks on the referrer's link look like abuse."""
    return (referred.signed_up_at - timedelta(minutes=settings.REFERRAL["CLICK_BURST_MINUTES"]),
            referred.signed_up_at)


def referral_signals(referrer: Account, referred: Account, *, click: Click | None, click_shared: bool,
                     recent_clicks: int) -> list[dict]:
    """`self_referral_signals` given what it reads: whether `click` already brought another
    sign-up, and how many clicks on the referrer's link fell in `click_burst_window`."""
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
    if click_shared:
        signals.append({"signal": "shared_click", "detail": f"click {click.pk} already brought another sign-up"})
    burst_minutes = settings.REFERRAL["CLICK_BURST_MINUTES"]
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


def qualify_template(template: Template, program: Program, *, event: Event, at: datetime) -> int:
    Template.objects.filter(pk=template.pk, qualified_at__isnull=True).update(qualified_at=at)
    template.qualified_at = at
    held = Accrual.objects.filter(template=template, held_for_template=True)
    held.update(held_for_template=False)
    return release_ready(Accrual.objects.filter(template=template), event=event,
                         rule=f"{program.key}:template-qualified", at=at)


def check_payment_fingerprint(account: Account, fingerprint: str, event: Event) -> None:
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
    target = Event.objects.select_for_update().filter(external_id=event.payload["refunds"]).first()
    check_refund(event, account, target)
    referral = _referral_for(account)
    referral_fields, account_changed = refund_figures(event, target, referral, account)
    event.save(update_fields=["refunds"])
    target.save(update_fields=["refunded"])
    if referral_fields:
        Referral.objects.filter(pk=referral.pk).update(**{name: getattr(referral, name) for name in referral_fields})
    if account_changed:
        Account.objects.filter(pk=account.pk).update(purchased_credits=account.purchased_credits)
    legs = []
    for accrual in clawed_back(target.accruals.all()):
        if accrual_legs := claw_back(accrual, target):
            legs += accrual_legs
            Accrual.objects.filter(pk=accrual.pk).update(reversed=accrual.reversed)
    post(kind="reversal", rule="refund", event=event, legs=legs)
    return 1


def check_refund(event: Event, account: Account, target: Event | None) -> None:
    """A refund's reasons to be rejected, on the state it is applied to: the refunded event
    (`target`, looked up by the payload's `refunds`) and what is left to refund of it."""
    if target is None:
        raise EventRejected({"refunds": f"unknown event {event.payload['refunds']!r}"}, "unknown_event")
    if target.account_id != account.pk:
        raise EventRejected({"refunds": "belongs to a different account"}, "wrong_account")
    if target.type not in ev.REFUNDABLE_TYPES:
        raise EventRejected({"refunds": f"a {target.type} event cannot be refunded"}, "not_refundable")
    refundable = target.amount - target.refunded
    if event.amount > refundable:
        raise EventRejected({"amount": f"is larger than what is left to refund ({format_exact(refundable)})"},
                            "refund_too_large")


def refund_figures(event: Event, target: Event, referral: Referral | None,
                   account: Account) -> tuple[list[str], bool]:
    """A checked refund's figures, on the rows in memory (locked, or carried through a run):
    the refunded total of the payment, the referral's usage spend or purchases, the account's
    purchased credits. Returns the referral fields it changed and whether the account changed."""
    event.refunds = target
    target.refunded += event.amount
    referral_fields = []
    if referral is not None:
        if target.type == ev.USAGE_CHARGED:
            referral.spend -= event.amount
            referral.spend_by_product[target.product] = referral.spend_by_product.get(target.product, 0) - event.amount
            referral_fields = ["spend", "spend_by_product"]
        else:
            referral.purchases -= event.amount
            referral_fields = ["purchases"]
    if target.type != ev.CREDITS_PURCHASED:
        return referral_fields, False
    account.purchased_credits = max(account.purchased_credits - event.amount, 0)
    return referral_fields, True


def clawed_back(accruals):
    """The accruals a refund of their payment claws back (rate kinds, not void), locked, in id
    order. Only the accrual rows are locked (`of`), not the programmes joined to pick the kinds:
    refunds of different accounts do not wait on each other, nor on a programme edit."""
    return (accruals.filter(program__kind__in=rules.RATE_KINDS).exclude(state=Accrual.State.VOID)
            .select_for_update(of=("self",)))


def claw_back(accrual: Accrual, target: Event) -> list[Leg]:
    """Reverse `accrual` (in memory) to its share of what has been refunded of its payment so
    far, from whichever book the commission sits in now; returns the ledger legs (none if
    nothing more is due). Cumulative shares make a full refund reverse exactly all of it."""
    should_be_reversed = share_of(accrual.amount, target.refunded, target.amount)
    delta = should_be_reversed - accrual.reversed
    if delta <= 0:
        return []
    accrual.reversed = should_be_reversed
    book = Book.PENDING if accrual.state == Accrual.State.HELD else accrual.destination
    return [Leg(book, -delta, accrual.beneficiary_id, accrual.program_id),
            Leg(Book.EARNINGS_EXPENSE, delta, None, accrual.program_id)]


def _on_redeem(event: Event, replay: bool) -> int:
    account = _account_for(event)
    credits = Balance.objects.get(account=account, book=Book.CREDITS).amount
    grants = list(CreditGrant.objects.select_for_update().filter(
        account=account, expired_at__isnull=True, remaining__gt=0).order_by("expires_at", "id"))
    check_spendable(event, credits, grants)
    for grant, take in consume_grants(event, grants):
        CreditGrant.objects.filter(pk=grant.pk).update(remaining=F("remaining") - take)
    post(kind="redemption", rule="credits.redeemed", event=event, legs=redemption_legs(event, account))
    return 1


def check_spendable(event: Event, credits: int, grants: list[CreditGrant]) -> None:
    """A redemption's reason to be rejected: more than the account's credits balance less its
    open grants (`grants`, in memory) that have lapsed by the event's time but that the expiry
    job has not expired yet."""
    lapsed = sum(grant.remaining for grant in grants if grant.expires_at <= event.occurred_at)
    spendable = credits - lapsed
    if event.amount > spendable:
        available = format_exact(max(spendable, 0))
        raise EventRejected({"amount": f"is more than the account's spendable credits ({available})"},
                            "insufficient_credits")


def consume_grants(event: Event, grants: list[CreditGrant]) -> list[tuple[CreditGrant, int]]:
    """Take a checked redemption from the open grants still valid at its time, on the rows in
    memory (`grants`, locked, or carried through a run); returns each grant used with what was
    taken from it. What the grants do not cover comes from credits that do not expire."""
    left = event.amount
    used = []
    # Credits that expire soonest are used first.
    for grant in sorted(grants, key=lambda grant: (grant.expires_at, grant.pk)):
        if not left:
            break
        if grant.expires_at <= event.occurred_at or not grant.remaining:
            continue
        take = min(grant.remaining, left)
        grant.remaining -= take
        used.append((grant, take))
        left -= take
    return used


def redemption_legs(event: Event, account: Account) -> list[Leg]:
    return [Leg(Book.CREDITS, -event.amount, account.pk), Leg(Book.REDEEMED, event.amount, None)]


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


STEPS = {
    ev.ACCOUNT_CREATED: _on_account_created,
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

"""Applying a run of one account's stored money events set-based.

`apply_run` gives what `services.apply_event` gives applied to each event in id order (the
same accruals, ledger movements, referral, account and template figures, milestone awards and
outbox messages), with a fixed number of queries per run instead of about 18 per event: the
state the handlers read (referral, templates, programmes, the referrer's tracks and approvals,
spend so far, milestones paid) is loaded once, each event's earnings are computed in Python by
the same `referrals.rules`, and the results are written with a few bulk statements.

A run is the longest prefix of the events that needs nothing more than that. It stops before
an event the per-event path must handle, which the caller then applies on its own:

- not a stateless money event (`ingestion.BULK_TYPES`), or its payload names another account;
- a credit purchase with a payment fingerprint (fraud checks across accounts);
- an unknown template (rejected with its reason), or a template this event would qualify for
  a template share (releasing the template's held earnings);
- an earning with expiring credits (not made by these programme kinds today).

The caller holds the account's row lock (see `ingestion._apply_account`); the run claims its
events with one conditional UPDATE and gives up (applying nothing) if it did not get them all.
"""
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ledger.money import net_sum

from . import bulk, rules, services, versions
from . import events as ev
from .models import (
    Account,
    Accrual,
    Application,
    Event,
    MilestoneAward,
    Program,
    Referral,
    Template,
    Track,
    TrackChange,
)

log = logging.getLogger(__name__)

SET_BASED_TYPES = frozenset({ev.USAGE_CHARGED, ev.CREDITS_PURCHASED, ev.PLAN_PURCHASED})


@dataclass
class Run:
    """The events a run covered, and whether they were applied set-based."""

    events: list[Event]
    applied: bool = False


@dataclass
class _Plan:
    """What applying the run's events one by one would write, gathered in Python."""

    account: Account
    referral: Referral | None
    purchased_credits: int
    events: list[Event] = field(default_factory=list)
    earnings: list[tuple[Event, rules.Earning]] = field(default_factory=list)
    awards: list[MilestoneAward] = field(default_factory=list)
    conversion: Event | None = None
    template_of: dict[int, Template] = field(default_factory=dict)  # event id -> template
    runtime_added: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # template id -> seconds


def apply_run(account_id: int, events: list[Event]) -> Run:
    """Apply the longest set-based prefix of `events` (one account's pending events, id order).

    Returns the run with `applied` true; or, when the first event needs the per-event path or
    the set-based attempt failed (rolled back, logged), the events to apply one by one.
    """
    plan = None
    try:
        # One savepoint for reading and writing: a database error in either leaves the caller's
        # transaction usable for the per-event path.
        with transaction.atomic():
            plan = _plan(account_id, events)
            if plan.events:
                _write(plan)
    except Exception:
        log.exception("set-based apply for account %s failed; applying them one by one", account_id)
        return Run(plan.events if plan and plan.events else events[:1])
    if not plan.events:
        return Run(events[:1])
    return Run(plan.events, applied=True)


# --------------------------------------------------------------------------- planning


def _plan(account_id: int, events: list[Event]) -> _Plan:
    account = Account.objects.get(pk=account_id)  # locked by the caller
    referral = Referral.objects.select_for_update().filter(referred=account).first()
    wanted = {e.payload.get("template") for e in events if e.payload.get("template")}
    templates = {t.external_id: t for t in Template.objects.select_for_update().filter(external_id__in=wanted)}
    program_versions = versions.load()  # each event below uses the versions in force at its time
    kinds = (*rules.RATE_KINDS, Program.Kind.MILESTONE)
    tracks, approved, awarded = [], set(), set()
    if referral is not None:
        tracks = list(TrackChange.objects.filter(account_id=referral.referrer_id)
                      .values_list("effective_at", "id", "track"))
        approved = set(Application.objects.filter(account_id=referral.referrer_id,
                                                  status=Application.Status.APPROVED)
                       .values_list("program_id", flat=True))
        awarded = set(MilestoneAward.objects.filter(referral=referral).values_list("program_id", flat=True))
    # Net usage spend per product applied before the run (what `_net_product_spend` sums).
    spend_by_product: dict[str, int] = defaultdict(int)
    if events:
        spend_rows = (Event.objects.filter(account_id=account_id, type=ev.USAGE_CHARGED, pk__lt=events[0].pk,
                                           applied_at__isnull=False)
                      .order_by().values_list("product").annotate(net=net_sum("amount", "refunded")))
        for product, net in spend_rows:
            spend_by_product[product] += int(net or 0)
    spend_total = sum(spend_by_product.values())

    plan = _Plan(account=account, referral=referral, purchased_credits=account.purchased_credits)
    runtime = {t.pk: t.runtime_seconds for t in templates.values()}
    spend = referral.spend if referral else 0
    purchases = referral.purchases if referral else 0
    converted_at = referral.converted_at if referral else None
    status = referral.status if referral else None
    for event in events:
        payload = event.payload
        template = templates.get(payload["template"]) if payload.get("template") else None
        if (event.type not in SET_BASED_TYPES or event.amount is None or payload.get("account") != account.external_id
                or (event.type == ev.CREDITS_PURCHASED and payload.get("payment_fingerprint"))
                or (payload.get("template") and template is None)):
            break
        programs = program_versions.at(event.occurred_at, kinds=kinds)
        template_gates = [services.template_gate_seconds(p) for p in programs
                          if p.kind == Program.Kind.TEMPLATE_SHARE]
        runtime_after = runtime[template.pk] + event.runtime_seconds if template else 0
        if template is not None and template.qualified_at is None and any(runtime_after >= g for g in template_gates):
            break  # this event qualifies the template: releasing its held earnings is per-event work

        # What `_on_money_event` does to the account, referral and template, in order.
        if event.type == ev.CREDITS_PURCHASED:
            plan.purchased_credits += event.amount
        elif event.type == ev.USAGE_CHARGED:
            plan.purchased_credits = max(plan.purchased_credits - event.amount, 0)
            spend_by_product[event.product] += event.amount
            spend_total += event.amount
        if referral is not None:
            if event.type == ev.USAGE_CHARGED:
                spend += event.amount
            else:
                purchases += event.amount
            if converted_at is None:
                converted_at = event.occurred_at
                if status == Referral.Status.PENDING:
                    status = Referral.Status.CONVERTED
                    plan.conversion = event
        if template is not None:
            plan.template_of[event.pk] = template
            if event.runtime_seconds:
                runtime[template.pk] = runtime_after
                plan.runtime_added[template.pk] += event.runtime_seconds

        ctx = rules.Context(
            event_type=event.type, occurred_at=event.occurred_at, amount=event.amount, product=event.product,
            account_id=account.pk,
            referrer_id=referral.referrer_id if referral else None, referral_id=referral.pk if referral else None,
            referral_ineligible=status == Referral.Status.INELIGIBLE,
            referrer_track=_track_at(tracks, event.occurred_at) if referral else Track.BASIC,
            template_id=template.pk if template else None,
            template_creator_id=template.creator_id if template else None,
            template_qualified=bool(template and template.qualified_at),
        )
        earnings: list[rules.Earning] = []
        for program in programs:
            if program.kind == Program.Kind.TEMPLATE_SHARE:
                earnings += rules.template_share(program, ctx)
            elif program.kind == Program.Kind.MILESTONE:
                if referral is None or event.type not in program.event_types or (
                        program.product and program.product != event.product):
                    continue
                after = spend_by_product[program.product] if program.product else spend_total
                if program.pk in awarded or not rules.milestone_crossed(program, after - event.amount, after):
                    continue
                awarded.add(program.pk)
                plan.awards.append(MilestoneAward(program=program, referral=referral, event=event))
                earnings += rules.milestone_bonuses(
                    program, referrer_id=referral.referrer_id, referred_id=referral.referred_id,
                    referral_id=referral.pk, ineligible=status == Referral.Status.INELIGIBLE,
                    occurred_at=event.occurred_at)
            else:
                approved_here = not program.requires_approval or (referral is not None and program.pk in approved)
                earnings += rules.commission(program, ctx, approved=approved_here)
        if any(earning.expires_days for earning in earnings):
            raise ValueError("expiring credits are granted by the per-event path only")
        plan.events.append(event)
        plan.earnings += [(event, earning) for earning in earnings]

    if referral is not None:
        referral.spend, referral.purchases, referral.converted_at, referral.status = (
            spend, purchases, converted_at, status)
    return plan


def _track_at(tracks: list[tuple], at) -> str:
    """`services.track_at` over the referrer's track changes loaded once."""
    effective = [change for change in tracks if change[0] <= at]
    return max(effective)[2] if effective else Track.BASIC


# --------------------------------------------------------------------------- writing


def _write(plan: _Plan) -> None:
    ids = [event.pk for event in plan.events]
    # The claim, as `_apply_account` makes it per event: an event another applier got first
    # (impossible under the account lock, but cheap to prove) sends the run to the per-event path.
    if Event.objects.filter(pk__in=ids, applied_at__isnull=True).update(applied_at=timezone.now()) != len(ids):
        raise RuntimeError("some events of the run were applied by someone else")

    by_template: dict[int, list[int]] = defaultdict(list)
    for event_id, template in plan.template_of.items():
        by_template[template.pk].append(event_id)
    for template_id, event_ids in by_template.items():
        Event.objects.filter(pk__in=event_ids).update(template_id=template_id)
    for template_id, seconds in plan.runtime_added.items():
        Template.objects.filter(pk=template_id).update(runtime_seconds=F("runtime_seconds") + seconds)
    if any(event.type in (ev.CREDITS_PURCHASED, ev.USAGE_CHARGED) for event in plan.events):
        Account.objects.filter(pk=plan.account.pk).update(purchased_credits=plan.purchased_credits)
    if plan.referral is not None:
        referral = plan.referral
        Referral.objects.filter(pk=referral.pk).update(spend=referral.spend, purchases=referral.purchases,
                                                       converted_at=referral.converted_at, status=referral.status)
    MilestoneAward.objects.bulk_create(plan.awards)

    accruals = Accrual.objects.bulk_create([services.accrual_of(earning, event) for event, earning in plan.earnings])
    bulk.post_each(kind="accrual", postings=[(earning.rule, event, services.accrual_legs(earning))
                                             for event, earning in plan.earnings])

    # The messages, in the order the per-event path publishes them (after commit).
    created = defaultdict(list)
    for accrual, (event, earning) in zip(accruals, plan.earnings, strict=True):
        created[event.pk].append((accrual, earning))
    for event in plan.events:
        if event is plan.conversion:
            services.publish_conversion(plan.referral, plan.account, event)
        for accrual, earning in created[event.pk]:
            services.publish_commission(accrual, earning, event)

"""The engine: applying logged events to accounts, the ledger, rollups and the outbox.

`apply_events(events)` applies a list of logged events, in id order, across any number of
accounts. It is the only way an event takes effect: a stored batch (`ingestion.apply_pending`),
one event of the synchronous path (a batch of one), a staff action, a periodic job and the
replay of `verify_ledger` all call it.

Money events (`MONEY_TYPES`: usage charges, credit and plan purchases) are applied set-based,
a run of them at a time whatever the number of accounts in it, with a number of SQL statements
that does not grow with the run:

1. load what the rules need for all the run's accounts at once (accounts, their referrals,
   the referrers' tracks and approvals, milestones paid and spend so far, templates, and the
   programme configuration through the one loader `load_programs`);
2. compute every event's effects in Python, in id order, with the pure `referrals.engine.rules`;
3. write them with a few bulk statements: accruals, credit grants, milestone awards,
   referral / account / template figures (`bulk_update`), ledger transactions, entries and
   the balance projection (`bulk.post_each`). The dashboard rollups follow the accrual and
   referral rows through their database triggers (`referrals.engine.rollups`), in the same
   statements. Outbox messages are queued for after commit, in the order the events imply.

Sign-ups (`account.created`) in a row, two or more, are applied set-based too
(`referrals.engine.signups`): the accounts, their balance rows, referrals, fraud flags, sign-up
credits and their ledger legs with a few bulk statements, the clicks they name looked up at once
(`clicks.find_clicks`), the attribution and self-referral signals decided in Python in id order,
exactly as the step decides them one by one. So are refunds (`payment.refunded`) in a row
(`referrals.engine.refunds`): the refunded events, referral spend or purchases, purchased
credits, the claw-back of the payments' accruals and its ledger legs, computed in id order on
the rows in memory with the step's own pieces. So are redemptions
(`credits.redeemed`) in a row (`referrals.engine.redemptions`): the accounts' credits balances and
open grants loaded once, the spendable check and the grants' consumption done in id order in
memory with the step's own pieces, the grants' remainders and the ledger legs written in bulk.
So are template publications (`template.published`) in a row (`referrals.engine.templates`): the
publishers and templates loaded once, new templates created and renamed ones written in bulk; a
template another account published, and an unknown publisher, end the run (the step rejects them).

Every other event type is applied by its step (`_STEPS`, and the steps other apps register
with `register_step`), one event at a time inside the same call.

Ordering:

- Per account, events are applied in id order (the caller holds the accounts' row locks, see
  `ingestion.apply_pending`), which is the order of a replay.
- Across accounts, a run is planned in global id order: a template's runtime grows charge by
  charge in id order whichever account the charge is of, and a milestone is decided on the
  referred account's own charges in id order. Effects that reach other accounts in an
  order-dependent way end the set-based run and are applied on their own, at their place in id
  order: the charge that makes a template reach its runtime gate (it qualifies the template
  and releases the held earnings of every account on it), and a credit purchase whose payment
  fingerprint flags a referral (the other side of one of its account's referrals used the same
  payment method before it in id order; a purchase that flags nothing, the usual case, stays in
  the run and its fingerprint is recorded with the run's writes). Events of other types are
  applied at their place in id order too.
- A run of sign-ups ends where the step has to decide alone, and that sign-up is applied by
  the step at its place: a second sign-up of an account in the run, one whose account exists
  already (rejected; replayed: one whose account is missing), one with an unknown template
  (rejected) or an unusable IP. A referrer signed up earlier in the run is known from the run
  itself (its code, e-mail, IP, device). Sign-ups attributed through a click (`click_id`) stay
  in the run: its clicks are looked up once before it is decided (the ones still in this
  process's click buffer written first; on PostgreSQL one wait, for all of them, for clicks
  another process has not written yet), and a click counts as shared (`shared_click`) when a
  referral of before the run or of an earlier sign-up in it names it. A lone sign-up, and the
  synchronous path's batch of one (`on_error=None`), take the step.
- A run of refunds sees its own effects (two refunds of one payment: the second claws back
  from what the first left) and ends where the step would reject or write alone, and that
  refund is applied by the step at its place: one larger than what is left to refund (after
  the run's earlier refunds), of an unknown account or of an event that is unknown, of another
  account or not refundable, and one logged under another account id than its payload's. A
  lone refund and the batch of one take the step.
- A run of redemptions sees its own effects (two redemptions of one account: the second spends
  from the balance and grants the first left) and ends where the step would reject or write
  alone, and that redemption is applied by the step at its place: one larger than the account's
  spendable credits (after the run's earlier redemptions, less its grants lapsed by then), of an
  unknown account or of an account without a credits balance, and one logged under another
  account id than its payload's. A lone redemption and the batch of one take the step.
- A run that fails as a whole (a database error) is retried event by event; an event that
  fails on its own is recorded with its error (`on_error`) and left out, the rest go on.
"""
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import NamedTuple

from django.db import transaction
from django.db.models import Q

from ..models import (
    Account,
    Accrual,
    Application,
    CreditGrant,
    Event,
    MilestoneAward,
    PaymentFingerprint,
    Program,
    Referral,
    Template,
    Track,
    TrackChange,
)
from . import bulk, outbox, redemptions, refunds, rules, signups, steps, templates
from . import events as ev
from .configuration import Programs, load_programs
from .steps import (
    EventRejected,
    accrual_legs,
    accrual_of,
    accrual_values,
    check_payment_fingerprint,
    commission_message,
    conversion_message,
    publish_commission,
    qualify_template,
)

log = logging.getLogger(__name__)

MONEY_TYPES = frozenset({ev.USAGE_CHARGED, ev.CREDITS_PURCHASED, ev.PLAN_PURCHASED})

# Longest set-based run planned at once (bounds the statements' parameter lists).
RUN_MAX = 2000


# --------------------------------------------------------------------------- entry point


Step = Callable[[Event, bool], int]
_STEPS: dict[str, Step] = dict(steps.STEPS)


def register_step(event_type: str, step: Step) -> None:
    """Apps register the step of the internal events they write (payouts, adjustments, jobs)."""
    _STEPS[event_type] = step


def known_types() -> list[str]:
    return sorted({*MONEY_TYPES, *_STEPS})


def runs_set_based(event_type: str) -> bool:
    """Whether two or more events of this type in a row are applied set-based."""
    return event_type in MONEY_TYPES or event_type in _RUNS


def record_error(event: Event, exc: Exception) -> None:
    """Accepted but not applicable (a bug, or state that changed under it): kept out of the
    ledger and of replays, visible in the admin with its reason."""
    log.exception("stored event %s could not be applied", event.external_id)
    Event.objects.filter(pk=event.pk).update(applied_at=None, apply_error=f"{type(exc).__name__}: {exc}"[:2000])


class _SetBasedRun(NamedTuple):
    """An event type that also goes set-based in runs: sign-ups, refunds, redemptions. A run
    starts where two events of the type come in a row (a lone one, like the synchronous path's
    batch of one, is applied by its step)."""

    apply: Callable[..., int]
    name: str


def _run_starts(events: list[Event], position: int) -> bool:
    return position + 1 < len(events) and events[position].type == events[position + 1].type


_RUNS = {
    ev.ACCOUNT_CREATED: _SetBasedRun(signups.apply_signup_run, "sign-ups"),
    ev.PAYMENT_REFUNDED: _SetBasedRun(refunds.apply_refund_run, "refunds"),
    ev.CREDITS_REDEEMED: _SetBasedRun(redemptions.apply_redemption_run, "redemptions"),
    ev.TEMPLATE_PUBLISHED: _SetBasedRun(templates.apply_template_run, "template publications"),
}


def apply_events(events: list[Event], *, replay: bool = False,
                 on_error: Callable[[Event, Exception], None] | None = record_error) -> int:
    """Apply `events` (id order; their accounts locked by the caller); returns the effect count.

    With `on_error=None` the first failure propagates (and rolls back with the caller's
    transaction): the synchronous path answers such an event `rejected`."""
    programs = load_programs(events)
    effect = 0
    position = 0
    while position < len(events):
        event = events[position]
        if event.type in MONEY_TYPES:
            run = events[position:position + RUN_MAX]
            try:
                with transaction.atomic():
                    done = _apply_money_run(run, programs, replay=replay, strict=on_error is None)
            except Exception as exc:
                if on_error is None:
                    raise
                if len(run) == 1:
                    on_error(event, exc)
                    position += 1
                    continue
                log.exception("set-based run of %d events failed; applying them one by one", len(run))
                done = 0
            if done:
                effect += done
                position += done
                continue
        elif on_error is not None and (kind := _RUNS.get(event.type)) and _run_starts(events, position):
            run = events[position:position + RUN_MAX]
            try:
                with transaction.atomic():
                    done = kind.apply(run, programs, replay=replay)
            except Exception:
                log.exception("set-based run of %s failed; applying them one by one", kind.name)
                done = 0
            if done:
                effect += done
                position += done
                continue
        effect += _apply_one(event, programs, replay=replay, on_error=on_error)
        position += 1
    return effect


def _apply_one(event: Event, programs: Programs, *, replay: bool, on_error) -> int:
    try:
        with transaction.atomic():
            if event.type in MONEY_TYPES:
                done = _apply_money_run([event], programs, replay=replay, strict=True)
                if done:
                    return done
            return _STEPS[event.type](event, replay) or 0
    except Exception as exc:
        if on_error is None:
            raise
        on_error(event, exc)
        return 0


# --------------------------------------------------------------------------- money events, set-based


@dataclass
class _State:
    """What the rules need for the run's accounts, loaded once, then carried event to event."""

    accounts: dict[int, Account]
    referrals: dict[int, Referral]  # by referred account
    templates: dict[str, Template]  # by external id
    tracks: dict[int, list[tuple]]  # referrer -> [(effective_at, id, track)]
    approved: set[tuple[int, int]]  # (referrer, program)
    awarded: set[tuple[int, int]]  # (referral, program)
    spend: dict[tuple[int, str], int]  # (account, product) -> net usage spend applied so far
    changed_accounts: set[int] = field(default_factory=set)
    changed_referrals: set[int] = field(default_factory=set)
    changed_templates: set[int] = field(default_factory=set)


_REFERRAL_FIELDS = ("id", "referrer_id", "referred_id", "status", "spend", "spend_by_product", "purchases",
                    "converted_at")


def _load(run: list[Event], programs: list[Program]) -> _State:
    account_ids = {e.account_id for e in run}
    accounts = {a.pk: a for a in Account.objects.filter(pk__any_of=account_ids).only(
        "id", "external_id", "purchased_credits")}
    # The referral fields the rules and the run's writes use (`_write`), no more.
    referrals = {r.referred_id: r for r in Referral.objects.select_for_update().filter(
        referred_id__any_of=account_ids).only(*_REFERRAL_FIELDS)}
    wanted = {e.payload.get("template") for e in run if e.payload.get("template")}
    templates = ({t.external_id: t for t in Template.objects.select_for_update().filter(external_id__any_of=wanted)}
                 if wanted else {})
    referrers = {r.referrer_id for r in referrals.values()}
    tracks: dict[int, list[tuple]] = defaultdict(list)
    approved: set[tuple[int, int]] = set()
    awarded: set[tuple[int, int]] = set()
    spend: dict[tuple[int, str], int] = defaultdict(int)
    if referrers and any(p.kind == Program.Kind.PURCHASE_COMMISSION and p.partner_rate is not None
                         for p in programs):
        for account_id, effective_at, pk, track in TrackChange.objects.filter(account_id__any_of=referrers).values_list(
                "account_id", "effective_at", "id", "track"):
            tracks[account_id].append((effective_at, pk, track))
    if referrers and any(p.requires_approval for p in programs):
        approved = set(Application.objects.filter(account_id__any_of=referrers, status=Application.Status.APPROVED)
                       .values_list("account_id", "program_id"))
    milestones = [p for p in programs if p.kind == Program.Kind.MILESTONE]
    if referrals and milestones:
        awarded = set(MilestoneAward.objects.filter(referral_id__any_of=[r.pk for r in referrals.values()],
                                                    program__in=milestones).values_list("referral_id", "program_id"))
    # Net usage spend applied before this run, per product: what a milestone's "spend up to
    # this charge" adds to. It is kept on the referral row (locked above), not summed from the log.
    for referred, referral in referrals.items():
        for product, amount in referral.spend_by_product.items():
            spend[(referred, product)] = amount
    return _State(accounts=accounts, referrals=referrals, templates=templates, tracks=tracks, approved=approved,
                  awarded=awarded, spend=spend)


def _track_at(tracks: list[tuple], at) -> str:
    effective = [change for change in tracks if change[0] <= at]
    return max(effective)[2] if effective else Track.BASIC


def _set_based(event: Event, state: _State, first: bool, fingerprints_clear: dict) -> bool:
    """Whether the event can join the run (see the module docstring, "Ordering")."""
    payload = event.payload
    account = state.accounts.get(event.account_id)
    if event.type not in MONEY_TYPES or event.amount is None or account is None:
        return False
    if payload.get("account") != account.external_id:
        return False
    if (event.type == ev.CREDITS_PURCHASED and payload.get("payment_fingerprint") and not first
            and event.pk not in fingerprints_clear):
        return False  # its fraud check flags a referral: it runs first, on the state the events before it left
    return not payload.get("template") or payload["template"] in state.templates  # else: unknown template


def _apply_money_run(run: list[Event], programs: Programs, *, replay: bool, strict: bool) -> int:
    """Apply the longest prefix of `run` that can go set-based; returns its length (0: none)."""
    rate_programs = programs.enabled(*rules.RATE_KINDS, Program.Kind.MILESTONE)
    head = []
    for event in run:
        if event.type not in MONEY_TYPES:
            break
        head.append(event)
    if not head:
        return 0
    first = head[0]
    if fingerprint := first.type == ev.CREDITS_PURCHASED and first.payload.get("payment_fingerprint"):
        # A shared payment method may flag referrals of this account and of others, and this
        # purchase's own commission is then held: the check comes before the purchase is planned.
        account = Account.objects.filter(pk=first.account_id, external_id=first.payload.get("account")).first()
        if account is not None:
            check_payment_fingerprint(account, fingerprint, first)
    state = _load(head, rate_programs)
    if strict:
        _check_single(first, state)
    fingerprints_clear = _fingerprints_clear(head[1:])

    planned: list[Event] = []
    earnings: list[tuple[Event, rules.Earning]] = []
    awards: list[MilestoneAward] = []
    conversions: list[Event] = []
    event_templates: list[Event] = []
    qualified: list[tuple[Template, Program, Event]] = []
    for event in head:
        if qualified or not _set_based(event, state, first=event is first, fingerprints_clear=fingerprints_clear):
            break
        account = state.accounts[event.account_id]
        referral = state.referrals.get(account.pk)
        template = state.templates.get(event.payload["template"]) if event.payload.get("template") else None
        if event.type == ev.CREDITS_PURCHASED:
            account.purchased_credits += event.amount
            state.changed_accounts.add(account.pk)
        elif event.type == ev.USAGE_CHARGED:
            # Usage is paid from the account's own purchased credits first.
            if account.purchased_credits:
                account.purchased_credits = max(account.purchased_credits - event.amount, 0)
                state.changed_accounts.add(account.pk)
            state.spend[(account.pk, event.product)] += event.amount
        if referral is not None:
            if event.type == ev.USAGE_CHARGED:
                referral.spend += event.amount
                referral.spend_by_product[event.product] = state.spend[(account.pk, event.product)]
            else:
                referral.purchases += event.amount
            if referral.converted_at is None:
                referral.converted_at = event.occurred_at
                if referral.status == Referral.Status.PENDING:
                    referral.status = Referral.Status.CONVERTED
                    conversions.append(event)
            state.changed_referrals.add(referral.referred_id)
        if template is not None:
            event.template = template
            event_templates.append(event)
            if event.runtime_seconds:
                template.runtime_seconds += event.runtime_seconds
                state.changed_templates.add(template.pk)

        ctx = rules.Context(
            event_type=event.type, occurred_at=event.occurred_at, amount=event.amount, product=event.product,
            account_id=account.pk,
            referrer_id=referral.referrer_id if referral else None, referral_id=referral.pk if referral else None,
            referral_ineligible=bool(referral and referral.status == Referral.Status.INELIGIBLE),
            referrer_track=_track_at(state.tracks.get(referral.referrer_id, []), event.occurred_at)
            if referral else Track.BASIC,
            template_id=template.pk if template else None,
            template_creator_id=template.creator_id if template else None,
            template_qualified=bool(template and template.qualified_at),
        )
        for program in programs.enabled(*rules.RATE_KINDS, Program.Kind.MILESTONE, at=event.occurred_at):
            if program.kind == Program.Kind.TEMPLATE_SHARE:
                if (template is not None and template.qualified_at is None
                        and template.runtime_seconds >= template_gate_seconds(program)):
                    # This charge reaches the runtime gate: the template qualifies (after the
                    # run's writes, releasing its held earnings) and the run ends with it.
                    template.qualified_at = event.occurred_at
                    qualified.append((template, program, event))
                    ctx = replace(ctx, template_qualified=True)
                earned = rules.template_share(program, ctx)
            elif program.kind == Program.Kind.MILESTONE:
                earned = _milestone(program, event, referral, state, awards)
            else:
                approved = not program.requires_approval or (
                    referral is not None and (referral.referrer_id, program.pk) in state.approved)
                earned = rules.commission(program, ctx, approved=approved)
            earnings += [(event, earning) for earning in earned]
        planned.append(event)
    if not planned:
        return 0
    recorded = [fingerprints_clear[e.pk] for e in planned if fingerprints_clear.get(e.pk)]
    if recorded:
        PaymentFingerprint.objects.bulk_create([PaymentFingerprint(account_id=account_id, fingerprint=fingerprint)
                                                for account_id, fingerprint in recorded], ignore_conflicts=True)
    _write(planned, state, earnings, awards, conversions, event_templates)
    for template, program, event in qualified:
        qualify_template(template, program, event=event, at=event.occurred_at)
    return len(planned)


def _fingerprints_clear(events: list[Event]) -> dict[int, tuple[int, str] | None]:
    """The credit purchases with a payment fingerprint among `events` (in id order) whose
    payment check (`steps.check_payment_fingerprint`) would flag no referral, up to the first
    that would: it ends the run, and its check runs in full as the next run's first event. Each
    maps to the (account, fingerprint) it records for the first time (None: known already).

    A purchase flags a referral when the other side of one of its account's referrals (referrer
    or referred) has used the same payment method, before it in id order: the fingerprints
    recorded so far and the referrals between the buyers and their holders are read once."""
    purchases = [e for e in events if e.type == ev.CREDITS_PURCHASED and e.payload.get("payment_fingerprint")]
    if not purchases:
        return {}
    known = set(PaymentFingerprint.objects.filter(
        fingerprint__any_of={e.payload["payment_fingerprint"] for e in purchases}
    ).values_list("account_id", "fingerprint"))
    buyers = {e.account_id for e in purchases}
    holders = {account_id for account_id, _ in known} | buyers
    partners: dict[int, set[int]] = defaultdict(set)
    for referrer, referred in Referral.objects.filter(
            Q(referred_id__any_of=buyers, referrer_id__any_of=holders)
            | Q(referrer_id__any_of=buyers, referred_id__any_of=holders)
    ).values_list("referrer_id", "referred_id"):
        partners[referrer].add(referred)
        partners[referred].add(referrer)
    clear: dict[int, tuple[int, str] | None] = {}
    for event in purchases:
        pair = (event.account_id, event.payload["payment_fingerprint"])
        if any((partner, pair[1]) in known for partner in partners[event.account_id]):
            break
        clear[event.pk] = None if pair in known else pair
        known.add(pair)
    return clear


def _check_single(event: Event, state: _State) -> None:
    """A batch of one answers the synchronous path: its reasons to reject, named by field."""
    account = state.accounts.get(event.account_id)
    if account is None or event.payload.get("account") != account.external_id:
        raise EventRejected({"account": f"unknown account {event.payload.get('account')!r}"}, "unknown_account")
    if (template_id := event.payload.get("template")) and template_id not in state.templates:
        raise EventRejected({"template": f"unknown template {template_id!r}"}, "unknown_template")


def _milestone(program: Program, event: Event, referral: Referral | None, state: _State,
               awards: list[MilestoneAward]) -> list[rules.Earning]:
    if referral is None or event.type not in program.event_types or (
            program.product and program.product != event.product):
        return []
    if (referral.pk, program.pk) in state.awarded:
        return []
    # Spend up to and including this charge: of the milestone's product, or all usage.
    after = state.spend[(event.account_id, program.product)] if program.product else referral.spend
    if not rules.milestone_crossed(program, after - event.amount, after):
        return []
    state.awarded.add((referral.pk, program.pk))
    awards.append(MilestoneAward(program=program, referral=referral, event=event))
    return rules.milestone_bonuses(
        program, referrer_id=referral.referrer_id, referred_id=referral.referred_id, referral_id=referral.pk,
        ineligible=referral.status == Referral.Status.INELIGIBLE, occurred_at=event.occurred_at)


def template_gate_seconds(program: Program) -> int:
    return int(program.template_min_runtime_hours * 3600)


def _write(planned, state: _State, earnings, awards, conversions, event_templates) -> None:
    if event_templates:
        bulk.update_rows(Event, event_templates, ["template"])
    if state.changed_templates:
        bulk.update_rows(Template, [t for t in state.templates.values() if t.pk in state.changed_templates],
                         ["runtime_seconds"])
    if state.changed_accounts:
        bulk.update_rows(Account, [state.accounts[a] for a in state.changed_accounts], ["purchased_credits"])
    if state.changed_referrals:
        bulk.update_rows(Referral, [state.referrals[a] for a in state.changed_referrals],
                         ["spend", "spend_by_product", "purchases", "converted_at", "status"])
    if awards:
        bulk.create_rows(MilestoneAward, _columns([{"program_id": award.program.pk, "referral_id": award.referral.pk,
                                                     "event_id": award.event.pk} for award in awards]), returning=())
    accrual_ids = bulk.create_rows(Accrual, _columns([accrual_values(earning, event) for event, earning in earnings])) \
        if earnings else []
    grants = [{"account_id": earning.beneficiary_id, "accrual_id": accrual_id, "amount": earning.amount,
               "remaining": earning.amount, "expires_at": event.occurred_at + timedelta(days=earning.expires_days)}
              for accrual_id, (event, earning) in zip(accrual_ids, earnings, strict=True)
              if earning.expires_days and not earning.held]
    if grants:
        bulk.create_rows(CreditGrant, _columns(grants), returning=())
    bulk.post_each(kind="accrual", postings=[(earning.rule, event, accrual_legs(earning))
                                             for event, earning in earnings])

    # The messages, in the order applying the events one by one publishes them (after commit).
    created = defaultdict(list)
    for accrual_id, (event, earning) in zip(accrual_ids, earnings, strict=True):
        created[event.pk].append((accrual_id, earning))
    converted = {event.pk for event in conversions}
    messages = []
    for event in planned:
        if event.pk in converted:
            messages.append(conversion_message(state.referrals[event.account_id], state.accounts[event.account_id],
                                               event))
        messages += [commission_message(accrual_id, earning, event) for accrual_id, earning in created[event.pk]]
    outbox.publish_many(messages)


def _columns(rows: list[dict]) -> dict[str, list]:
    """Rows by column, as `bulk.create_rows` takes them."""
    return {name: [row[name] for row in rows] for name in rows[0]}


__all__ = ["MONEY_TYPES", "EventRejected", "Programs", "accrual_legs", "accrual_of", "apply_events", "known_types",
           "load_programs", "publish_commission", "register_step", "template_gate_seconds"]

"""Programme rules: what an event earns, under which programme, for whom, held or not.

Pure computation over the programme's configuration and a small context built by the
services; persisting accruals and posting to the ledger is `referrals.engine.services`' job.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.money import percent_of, to_units

from ..models import Program, Track
from . import events as ev

RATE_KINDS = (Program.Kind.REVENUE_SHARE, Program.Kind.PURCHASE_COMMISSION, Program.Kind.TEMPLATE_SHARE)


@dataclass(frozen=True)
class Earning:
    program: Program
    rule: str
    beneficiary_id: int
    amount: int
    destination: str
    referral_id: int | None = None
    template_id: int | None = None
    track: str = ""
    held_for_gate: bool = False
    held_for_template: bool = False
    held_for_fraud: bool = False
    held_until: datetime | None = None
    expires_days: int = 0

    @property
    def held(self) -> bool:
        return self.held_for_gate or self.held_for_template or self.held_for_fraud or self.held_until is not None


@dataclass(frozen=True)
class Context:
    """What the rules need to know about the event's surroundings."""

    event_type: str
    occurred_at: datetime
    amount: int
    product: str = ""
    account_id: int | None = None
    referrer_id: int | None = None
    referral_id: int | None = None
    referral_ineligible: bool = False
    referrer_track: str = Track.BASIC
    template_id: int | None = None
    template_creator_id: int | None = None
    template_qualified: bool = False


def _holds(program: Program, occurred_at: datetime) -> datetime | None:
    return occurred_at + timedelta(days=program.hold_days) if program.hold_days else None


def _counts(program: Program, ctx: Context) -> bool:
    if ctx.event_type not in program.event_types:
        return False
    return not program.product or program.product == ctx.product


def commission(program: Program, ctx: Context, *, approved: bool) -> list[Earning]:
    """Revenue share and purchase commission: rate x amount for the referrer."""
    if ctx.referrer_id is None or not _counts(program, ctx):
        return []
    rate, destination, track = program.rate, program.pays_in, ""
    if program.kind == Program.Kind.PURCHASE_COMMISSION and program.partner_rate is not None:
        track = ctx.referrer_track
        if track == Track.PARTNER:
            rate, destination = program.partner_rate, program.partner_pays_in or program.pays_in
    amount = percent_of(ctx.amount, rate)
    if amount <= 0:
        return []
    base = dict(
        program=program, rule=f"{program.key}:{rate}%", beneficiary_id=ctx.referrer_id,
        referral_id=ctx.referral_id, track=track,
        held_for_gate=program.requires_approval and not approved,
        held_for_fraud=ctx.referral_ineligible, held_until=_holds(program, ctx.occurred_at),
    )
    if destination == Program.PaysIn.CREDITS and program.cashout_percent:
        # Part of credit earnings is withdrawable (e.g. 75 %): it accrues as cash, the rest
        # as credits. Rounded down on the cash side; the remainder stays credits.
        cash = percent_of(amount, program.cashout_percent)
        parts = [(cash, Program.PaysIn.CASH), (amount - cash, Program.PaysIn.CREDITS)]
        return [Earning(amount=a, destination=d, **base) for a, d in parts if a > 0]
    return [Earning(amount=amount, destination=destination, **base)]


def template_share(program: Program, ctx: Context) -> list[Earning]:
    """1 % of runtime spend on a template, for its creator, held until the template qualifies."""
    if ctx.template_id is None or not _counts(program, ctx):
        return []
    amount = percent_of(ctx.amount, program.rate)
    if amount <= 0:
        return []
    return [Earning(
        program=program, rule=f"{program.key}:{program.rate}%", beneficiary_id=ctx.template_creator_id,
        amount=amount, destination=program.pays_in, template_id=ctx.template_id,
        held_for_template=not ctx.template_qualified, held_until=_holds(program, ctx.occurred_at),
    )]


def milestone_crossed(program: Program, spend_before: int, spend_after: int) -> bool:
    threshold = to_units(program.milestone_threshold)
    return threshold > 0 and spend_before < threshold <= spend_after


def milestone_bonuses(program: Program, *, referrer_id: int, referred_id: int, referral_id: int,
                      ineligible: bool, occurred_at: datetime) -> list[Earning]:
    base = dict(program=program, rule=f"{program.key}:milestone", destination=program.pays_in,
                referral_id=referral_id, held_for_fraud=ineligible, held_until=_holds(program, occurred_at))
    pairs = [(referrer_id, to_units(program.referrer_bonus)), (referred_id, to_units(program.referred_bonus))]
    return [Earning(beneficiary_id=who, amount=amount, **base) for who, amount in pairs if amount > 0]


def signup_credit(program: Program, ctx: Context) -> list[Earning]:
    if ctx.event_type != ev.ACCOUNT_CREATED or ctx.referrer_id is None:
        return []
    amount = to_units(program.signup_credit)
    if amount <= 0:
        return []
    return [Earning(
        program=program, rule=f"{program.key}:signup-credit", beneficiary_id=ctx.account_id, amount=amount,
        destination=Program.PaysIn.CREDITS, referral_id=ctx.referral_id, held_for_fraud=ctx.referral_ineligible,
        expires_days=program.credit_valid_days,
    )]

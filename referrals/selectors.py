"""Reads: balances, stats and earnings as the API and the dashboard show them."""
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q, Sum

from ledger.models import Balance, Book, Entry
from ledger.money import floor_to_cents

from .engine import rollups
from .models import Account, Program, Referral


@dataclass(frozen=True)
class Balances:
    credits: int
    cash_available: int
    pending: int
    cash_blocked: int  # cash held back by the own-purchased-credits rule
    cash_book: int


def account_balances(account: Account) -> Balances:
    books = dict(Balance.objects.filter(account=account).values_list("book", "amount"))
    cash_by_program = dict(
        Entry.objects.filter(account=account, book=Book.CASH).values_list("program_id")
        .annotate(total=Sum("amount")).values_list("program_id", "total")
    )
    blocking = set()
    if account.purchased_credits > 0 and cash_by_program:
        blocking = set(Program.objects.filter(pk__in=cash_by_program, own_credits_block_cashout=True)
                       .values_list("pk", flat=True))
    withdrawable = sum(int(v) for p, v in cash_by_program.items() if p not in blocking)
    blocked = sum(int(v) for p, v in cash_by_program.items() if p in blocking)
    return Balances(
        credits=books.get(Book.CREDITS, 0),
        cash_available=max(floor_to_cents(withdrawable), 0),
        pending=books.get(Book.PENDING, 0),
        cash_blocked=max(blocked, 0),
        cash_book=books.get(Book.CASH, 0),
    )


def referral_stats(account: Account, *, earned: rollups.Earnings | None = None,
                   by_status: dict[str, rollups.StatusTotals] | None = None) -> dict:
    """Counts of clicks, sign-ups and conversions, and referral earnings, from the rollups (pass
    `earned` and `by_status` when the caller has read them already)."""
    by_status = rollups.referral_totals(account.pk) if by_status is None else by_status
    total = sum(totals.referrals for totals in by_status.values())
    conversions = by_status.get(Referral.Status.CONVERTED, rollups.StatusTotals()).referrals
    clicks, unique_clicks = rollups.click_totals(account.pk)
    # Referral earnings only: what the account received as a referred user is not among them.
    earned = earned or rollups.earnings(account.pk)
    rate = (Decimal(conversions) / Decimal(total)).quantize(Decimal("0.0001")) if total else Decimal("0")
    return {
        "total_referrals": total,
        "conversions": conversions,
        "conversion_rate": rate,
        "total_clicks": clicks,
        "unique_clicks": unique_clicks,
        "pending_referrals": by_status.get(Referral.Status.PENDING, rollups.StatusTotals()).referrals,
        "total_earnings": earned.referral_total,
    }


def earnings_by_program(account: Account, *, earned: rollups.Earnings | None = None) -> list[dict]:
    """Per programme the account earned under, in ledger units (SPEC "Figures agree"):
    `earned` (net of claw-backs), `pending` (held), `paid` (payouts settled, less reversed),
    `reserved` (payout requests in progress) and `available = earned - pending - paid - reserved`.

    Every page, CSV, API field and admin panel takes these figures from here; a payout lowers
    `available` in the programme whose cash it took (its allocation)."""
    earned = earned or rollups.earnings(account.pk)
    moved = defaultdict(int)
    # One query: the account's reserved book, and the platform:payouts legs of its payout events
    # (settled minus reversed), per programme.
    for book, program_id, total in (
        Entry.objects.filter(Q(account=account, book=Book.RESERVED)
                             | Q(account__isnull=True, book=Book.PAYOUTS, transaction__event__account=account))
        .values_list("book", "program_id").annotate(total=Sum("amount")).values_list("book", "program_id", "total")
    ):
        moved[(book, program_id)] += int(total or 0)
    program_ids = set(earned.by_program) | {program_id for _, program_id in moved if program_id is not None}
    programs = {p.pk: p for p in Program.objects.filter(pk__in=program_ids)}
    out = []
    for program_id in sorted(programs, key=lambda pk: programs[pk].key):
        program, sums = programs[program_id], earned.by_program.get(program_id, rollups.ProgramEarnings())
        paid, reserved = moved[(Book.PAYOUTS, program_id)], moved[(Book.RESERVED, program_id)]
        out.append({"program": program.key, "name": program.name, "earned": sums.earned, "pending": sums.pending,
                    "paid": paid, "reserved": reserved,
                    "available": sums.earned - sums.pending - paid - reserved})
    return out


FIGURES = ("earned", "pending", "paid", "reserved", "available")


def earnings_totals(rows: list[dict]) -> dict:
    """The sum of each figure over the rows of `earnings_by_program` (the total row beside them)."""
    return {name: sum(row[name] for row in rows) for name in FIGURES}


def conversion_percent(rate: Decimal) -> str:
    """The conversion rate as every page shows it: a percent with one decimal ("86.7")."""
    return f"{(rate * 100).quantize(Decimal('0.1'))}"


def gate_progress(account: Account, program: Program, *,
                  by_status: dict[str, rollups.StatusTotals] | None = None) -> dict:
    """Where a referrer stands against a gated programme's thresholds (for the dashboard)."""
    by_status = rollups.referral_totals(account.pk) if by_status is None else by_status
    eligible = [t for status, t in by_status.items() if status != Referral.Status.INELIGIBLE]
    return {"referrals": sum(t.referrals for t in eligible), "referrals_needed": program.gate_min_referrals,
            "spend": sum(t.spend for t in eligible), "spend_needed": int(program.gate_min_spend * 10**10)}

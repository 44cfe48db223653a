"""Reads: balances, stats and earnings as the API and the dashboard show them."""
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from ledger.models import Balance, Book, Entry
from ledger.money import floor_to_cents

from . import rollups
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
    """Per programme the account earned under: earned, pending, available and paid out."""
    earned = earned or rollups.earnings(account.pk)
    programs = {p.pk: p for p in Program.objects.filter(pk__in=earned.by_program)}
    # Paid out: the platform:payouts legs of this account's payout events (settled minus reversed).
    paid = dict(
        Entry.objects.filter(book=Book.PAYOUTS, transaction__event__account=account).values_list("program_id")
        .annotate(total=Sum("amount")).values_list("program_id", "total")
    )
    out = []
    for program_id, sums in sorted(earned.by_program.items(), key=lambda item: programs[item[0]].key):
        program = programs[program_id]
        out.append({"program": program.key, "name": program.name, "earned": sums.earned, "pending": sums.pending,
                    "available": sums.earned - sums.pending, "paid": int(paid.get(program_id) or 0)})
    return out


def gate_progress(account: Account, program: Program, *,
                  by_status: dict[str, rollups.StatusTotals] | None = None) -> dict:
    """Where a referrer stands against a gated programme's thresholds (for the dashboard)."""
    by_status = rollups.referral_totals(account.pk) if by_status is None else by_status
    eligible = [t for status, t in by_status.items() if status != Referral.Status.INELIGIBLE]
    return {"referrals": sum(t.referrals for t in eligible), "referrals_needed": program.gate_min_referrals,
            "spend": sum(t.spend for t in eligible), "spend_needed": int(program.gate_min_spend * 10**10)}

"""Reads: balances, stats and earnings as the API and the dashboard show them."""
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q, Sum

from ledger.models import Balance, Book, Entry
from ledger.money import floor_to_cents

from .models import Account, Accrual, Click, Program, Referral


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


def referral_stats(account: Account) -> dict:
    counts = Referral.objects.filter(referrer=account).aggregate(
        total=Count("id"),
        conversions=Count("id", filter=Q(status=Referral.Status.CONVERTED)),
        pending=Count("id", filter=Q(status=Referral.Status.PENDING)),
    )
    clicks = Click.objects.filter(referrer=account).aggregate(
        total=Count("id"), unique=Count("id", filter=Q(is_unique=True)))
    # Referral earnings only: what the account received as a referred user is not among them.
    earned = (Accrual.objects.filter(beneficiary=account).exclude(state=Accrual.State.VOID)
              .exclude(referral__referred=account)).aggregate(
        total=Sum("amount"), reversed=Sum("reversed"))
    total = counts["total"]
    rate = (Decimal(counts["conversions"]) / Decimal(total)).quantize(Decimal("0.0001")) if total else Decimal("0")
    return {
        "total_referrals": total,
        "conversions": counts["conversions"],
        "conversion_rate": rate,
        "total_clicks": clicks["total"],
        "unique_clicks": clicks["unique"],
        "pending_referrals": counts["pending"],
        "total_earnings": int(earned["total"] or 0) - int(earned["reversed"] or 0),
    }


def earnings_by_program(account: Account) -> list[dict]:
    rows = (
        Accrual.objects.filter(beneficiary=account).exclude(state=Accrual.State.VOID)
        .values("program_id", "program__key", "program__name")
        .annotate(
            gross=Sum("amount"), clawed_back=Sum("reversed"),
            held=Sum("amount", filter=Q(state=Accrual.State.HELD)),
            held_clawed_back=Sum("reversed", filter=Q(state=Accrual.State.HELD)),
        )
        .order_by("program__key")
    )
    # Paid out: the platform:payouts legs of this account's payout events (settled minus reversed).
    paid = dict(
        Entry.objects.filter(book=Book.PAYOUTS, transaction__event__account=account).values_list("program_id")
        .annotate(total=Sum("amount")).values_list("program_id", "total")
    )
    out = []
    for row in rows:
        earned = int(row["gross"]) - int(row["clawed_back"])
        pending = int(row["held"] or 0) - int(row["held_clawed_back"] or 0)
        out.append({"program": row["program__key"], "name": row["program__name"], "earned": earned,
                    "pending": pending, "available": earned - pending,
                    "paid": int(paid.get(row["program_id"]) or 0)})
    return out


def gate_progress(account: Account, program: Program) -> dict:
    """Where a referrer stands against a gated programme's thresholds (for the dashboard)."""
    eligible = Referral.objects.filter(referrer=account).exclude(status=Referral.Status.INELIGIBLE)
    agg = eligible.aggregate(n=Count("id"), spend=Sum("spend"))
    return {"referrals": agg["n"], "referrals_needed": program.gate_min_referrals,
            "spend": int(agg["spend"] or 0), "spend_needed": int(program.gate_min_spend * 10**10)}

"""Reads over the ledger: balances and integrity checks."""
from django.db.models import Sum

from .models import Balance, Entry


def balances_for(account_id: int) -> dict[str, int]:
    return dict(Balance.objects.filter(account_id=account_id).values_list("book", "amount"))


def ledger_sums_by_book() -> dict[tuple[int | None, str], int]:
    rows = Entry.objects.values("account_id", "book").annotate(total=Sum("amount")).order_by()
    return {(r["account_id"], r["book"]): int(r["total"]) for r in rows}


def projection_by_book() -> dict[tuple[int | None, str], int]:
    return {(a, b): int(v) for a, b, v in Balance.objects.values_list("account_id", "book", "amount")}


def unbalanced_transactions() -> list[tuple[int, int]]:
    rows = Entry.objects.values("transaction_id").annotate(total=Sum("amount")).exclude(total=0).order_by()
    return [(r["transaction_id"], int(r["total"])) for r in rows]

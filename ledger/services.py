"""Posting to the ledger. The only way value moves."""
from collections import defaultdict
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F

from .models import ACCOUNT_BOOKS, Balance, Book, Entry, Transaction


class UnbalancedTransaction(ValueError):
    pass


@dataclass(frozen=True)
class Leg:
    book: str
    amount: int
    account_id: int | None = None
    program_id: int | None = None


def open_books(account_ids) -> None:
    """Create the zero balance rows of new accounts, so posting only ever updates."""
    Balance.objects.bulk_create(
        [Balance(account_id=a, book=b) for a in account_ids for b in ACCOUNT_BOOKS],
        ignore_conflicts=True,
    )


def post(*, kind: str, legs: list[Leg], rule: str = "", event=None, actor=None, memo: str = "") -> Transaction | None:
    """Write one balanced transaction and move the balance projection with it.

    Zero legs are dropped; a transaction with nothing left is not written (returns None).
    """
    legs = [leg for leg in legs if leg.amount]
    if not legs:
        return None
    total = sum(leg.amount for leg in legs)
    if total != 0:
        raise UnbalancedTransaction(f"{kind}: legs sum to {total}, not 0")
    for leg in legs:
        is_platform = leg.book.startswith("platform:")
        if is_platform != (leg.account_id is None):
            raise UnbalancedTransaction(f"{kind}: book {leg.book} does not match its holder")
    with transaction.atomic():
        txn = Transaction.objects.create(kind=kind, rule=rule, event=event, actor=actor, memo=memo[:300])
        Entry.objects.bulk_create(
            [
                Entry(transaction=txn, account_id=leg.account_id, book=leg.book,
                      program_id=leg.program_id, amount=leg.amount)
                for leg in legs
            ]
        )
        moves: dict[tuple[int, str], int] = defaultdict(int)
        for leg in legs:
            if leg.account_id is not None:
                moves[(leg.account_id, leg.book)] += leg.amount
        for (account_id, book), amount in moves.items():
            if amount:
                Balance.objects.filter(account_id=account_id, book=book).update(amount=F("amount") + amount)
    return txn


def allow_rebuild() -> None:
    """Inside the current transaction, let PostgreSQL's append-only trigger accept deletes
    (used only by `verify_ledger`, whose replay is always rolled back)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL ledger.allow_rebuild = 'on'")


__all__ = ["Book", "Leg", "UnbalancedTransaction", "allow_rebuild", "open_books", "post"]

"""Reads for payouts: withdrawable cash per programme, an account's methods and payout history."""
from django.db.models import QuerySet, Sum

from ledger.models import Book, Entry
from referrals.models import Account, Program
from referrals.selectors import account_balances

from .models import Payout, PayoutMethod


def withdrawable_cash_by_program(account: Account) -> dict[int, int]:
    """Cash a payout may take, per programme, before rounding: the CASH book (already net of
    what is reserved for or paid by payouts), without programmes blocked by the account's own
    purchased credits, and only programmes with a positive balance."""
    cash = dict(Entry.objects.filter(account=account, book=Book.CASH).values_list("program_id")
                .annotate(total=Sum("amount")).values_list("program_id", "total"))
    positive = {program_id: int(total) for program_id, total in cash.items() if program_id and total and total > 0}
    if account.purchased_credits > 0 and positive:
        blocked = set(Program.objects.filter(pk__in=positive, own_credits_block_cashout=True)
                      .values_list("pk", flat=True))
        positive = {p: v for p, v in positive.items() if p not in blocked}
    return positive


def cash_available(account: Account) -> int:
    """The same figure as the API's `cash_available` (whole cents)."""
    return account_balances(account).cash_available


def methods_of(account: Account) -> QuerySet[PayoutMethod]:
    return PayoutMethod.objects.filter(account=account)


def payouts_of(account: Account) -> QuerySet[Payout]:
    return Payout.objects.filter(account=account).select_related("method")


def stuck_payouts(*, approved_before, processing_before) -> QuerySet[Payout]:
    """Approved payouts nobody sent and processing ones without a final answer for too long."""
    from django.db.models import Q

    return Payout.objects.filter(
        Q(status=Payout.Status.APPROVED, approved_at__lte=approved_before)
        | Q(status=Payout.Status.PROCESSING, processing_at__lte=processing_before)
    ).order_by("id")

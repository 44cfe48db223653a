"""Staff actions of the back office: balance adjustments and audited programme edits."""
from django.db import transaction

from ledger.models import Balance, Book
from ledger.money import format_exact
from ledger.services import Leg, post
from referrals.engine.services import ActionRefused, record_staff_event
from referrals.models import Account, AuditLog, Event, Program

from .models import Adjustment, ProgramChange

ADJUSTMENT_POSTED = "adjustment.posted"
ADJUSTABLE_BOOKS = (Book.CREDITS, Book.CASH)


@transaction.atomic
def adjustment_post(*, account: Account, book: str, amount: int, reason: str, actor) -> Adjustment:
    """Credit (amount > 0) or debit (amount < 0) an account's credits or cash, with a reason."""
    reason = (reason or "").strip()
    if not reason:
        raise ActionRefused("reason: a reason is required for every adjustment")
    if book not in ADJUSTABLE_BOOKS:
        raise ActionRefused(f"book: must be one of {', '.join(ADJUSTABLE_BOOKS)}")
    if not amount:
        raise ActionRefused("amount: must not be zero")
    if actor is None or not getattr(actor, "is_staff", False):
        raise ActionRefused("only staff members can adjust balances")
    account = Account.objects.select_for_update().get(pk=account.pk)
    balance = Balance.objects.get(account=account, book=book).amount
    if balance + amount < 0:
        raise ActionRefused(f"amount: a debit of {format_exact(-amount)} is more than the {book} balance "
                            f"({format_exact(balance)})")
    event = record_staff_event(ADJUSTMENT_POSTED, account=account, actor=actor, payload={
        "account": account.external_id, "book": book, "amount": amount, "reason": reason})
    adjustment = Adjustment.objects.create(account=account, book=book, amount=amount, reason=reason,
                                           actor=actor, event=event)
    AuditLog.objects.create(actor=actor, action="account.adjust", object_type="Account", object_id=str(account.pk),
                            reason=reason, data={"book": book, "amount": format_exact(amount)})
    return adjustment


def apply_adjustment(event: Event, replay: bool) -> int:
    """The ledger side of an adjustment; also what `verify_ledger` replays."""
    payload = event.payload
    post(kind="adjustment", rule="staff-adjustment", event=event, actor=event.actor, memo=payload["reason"], legs=[
        Leg(payload["book"], payload["amount"], event.account_id),
        Leg(Book.ADJUSTMENTS, -payload["amount"], None),
    ])
    return 1


def program_save(*, program: Program, actor, changed_fields: list[str], before: dict) -> Program:
    """Save an edited programme and record what changed (later events use the new values)."""
    with transaction.atomic():
        program.full_clean()
        program.save()
        changes = {f: [_plain(before.get(f)), _plain(getattr(program, f))] for f in changed_fields
                   if _plain(before.get(f)) != _plain(getattr(program, f))}
        if changes:
            ProgramChange.objects.create(program=program, actor=actor, changes=changes)
            AuditLog.objects.create(actor=actor, action="program.change", object_type="Program",
                                    object_id=str(program.pk), data=changes)
    return program


def _plain(value):
    return value if isinstance(value, (str, int, bool, list, dict, type(None))) else str(value)

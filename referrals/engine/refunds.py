"""Refunds applied set-based: a run of consecutive `payment.refunded` events with a number of
SQL statements that does not grow with the run, exactly as the step (`steps._on_refund`)
applies them one by one. `referrals.engine.apply.apply_events` dispatches runs here ("Ordering").
"""
from collections import defaultdict
from itertools import takewhile

from ..models import Account, Accrual, Event, Referral
from . import bulk
from . import events as ev
from .configuration import Programs
from .steps import EventRejected, check_refund, claw_back, clawed_back, refund_figures


def apply_refund_run(run: list[Event], programs: Programs, *, replay: bool) -> int:
    """Apply the longest prefix of `run`'s refunds that can go set-based; returns its length
    (0: none). It ends at the first refund the step would reject or must write itself (see
    `_left_to_step`), which the engine then hands to the step."""
    head = list(takewhile(lambda event: event.type == ev.PAYMENT_REFUNDED, run))
    accounts = {account.external_id: account for account in Account.objects.select_for_update().filter(
        external_id__any_of={event.payload.get("account") for event in head} - {None})}
    targets = {target.external_id: target for target in Event.objects.select_for_update().filter(
        external_id__any_of={event.payload.get("refunds") for event in head} - {None})}
    referrals = {referral.referred_id: referral for referral in Referral.objects.select_for_update().filter(
        referred_id__any_of=[account.pk for account in accounts.values()])}
    accruals: dict[int, list[Accrual]] = defaultdict(list)
    for accrual in clawed_back(Accrual.objects.filter(event_id__any_of=[target.pk for target in targets.values()])):
        accruals[accrual.event_id].append(accrual)

    # In id order, on the rows in memory: a refund sees what the refunds before it in the run did.
    planned: list[Event] = []
    refunded: dict[int, Event] = {}
    changed_referrals: dict[int, Referral] = {}
    changed_accounts: dict[int, Account] = {}
    changed_accruals: dict[int, Accrual] = {}
    postings = []
    handed_in = [(event, event.refunds_id) for event in head]
    for event in head:
        account = accounts.get(event.payload.get("account"))
        if _left_to_step(event, account):
            break
        target = targets.get(event.payload["refunds"])
        try:
            check_refund(event, account, target)
        except EventRejected:
            break  # the step rejects it, with its reason
        referral = referrals.get(account.pk)
        referral_fields, account_changed = refund_figures(event, target, referral, account)
        refunded[target.pk] = target
        if referral_fields:
            changed_referrals[referral.pk] = referral
        if account_changed:
            changed_accounts[account.pk] = account
        legs = []
        for accrual in accruals[target.pk]:
            if accrual_legs := claw_back(accrual, target):
                legs += accrual_legs
                changed_accruals[accrual.pk] = accrual
        postings.append(("refund", event, legs))
        planned.append(event)
    if not planned:
        return 0
    try:
        bulk.update_rows(Event, planned, ["refunds"])
        bulk.update_rows(Event, refunded.values(), ["refunded"])
        bulk.update_rows(Referral, changed_referrals.values(), ["spend", "spend_by_product", "purchases"])
        bulk.update_rows(Account, changed_accounts.values(), ["purchased_credits"])
        bulk.update_rows(Accrual, changed_accruals.values(), ["reversed"])
        bulk.post_each(kind="reversal", postings=postings)
    except Exception:
        # Rolled back: the engine applies the events one by one, as they were handed in.
        for event, refunds_id in handed_in:
            event.refunds_id = refunds_id
        raise
    return len(planned)


def _left_to_step(event: Event, account: Account | None) -> bool:
    """Where the run ends and the step takes the refund: an unknown account (the step rejects
    it), an event logged under another account id than its payload's (the step rewrites it),
    and one without its refunded event or amount (the step fails on it)."""
    return (account is None or event.account_id != account.pk or "refunds" not in event.payload
            or event.amount is None)


__all__ = ["apply_refund_run"]

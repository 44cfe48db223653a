"""Redemptions applied set-based: a run of consecutive `credits.redeemed` events with a number of
SQL statements that does not grow with the run, exactly as the step (`steps._on_redeem`) applies
them one by one. `referrals.engine.apply.apply_events` dispatches runs here ("Ordering").
"""
from collections import defaultdict
from itertools import takewhile

from ledger.models import Balance, Book

from ..models import Account, CreditGrant, Event
from . import bulk
from . import events as ev
from .configuration import Programs
from .steps import EventRejected, check_spendable, consume_grants, redemption_legs


def apply_redemption_run(run: list[Event], programs: Programs, *, replay: bool) -> int:
    """Apply the longest prefix of `run`'s redemptions that can go set-based; returns its length
    (0: none). It ends at the first redemption the step would reject or must write itself (see
    `_left_to_step`), which the engine then hands to the step."""
    head = list(takewhile(lambda event: event.type == ev.CREDITS_REDEEMED, run))
    accounts = {account.external_id: account for account in Account.objects.select_for_update().filter(
        external_id__any_of={event.payload.get("account") for event in head} - {None})}
    account_ids = [account.pk for account in accounts.values()]
    credits = dict(Balance.objects.filter(account_id__any_of=account_ids, book=Book.CREDITS)
                   .values_list("account_id", "amount"))
    grants: dict[int, list[CreditGrant]] = defaultdict(list)
    for grant in CreditGrant.objects.select_for_update().filter(
            account_id__any_of=account_ids, expired_at__isnull=True, remaining__gt=0).order_by("expires_at", "id"):
        grants[grant.account_id].append(grant)

    # In id order, on the rows in memory: a redemption sees the balance and grants the
    # redemptions before it in the run left.
    planned: list[Event] = []
    changed_grants: dict[int, CreditGrant] = {}
    postings = []
    for event in head:
        account = accounts.get(event.payload.get("account"))
        if _left_to_step(event, account, credits):
            break
        try:
            check_spendable(event, credits[account.pk], grants[account.pk])
        except EventRejected:
            break  # the step rejects it, with its reason
        for grant, _ in consume_grants(event, grants[account.pk]):
            changed_grants[grant.pk] = grant
        credits[account.pk] -= event.amount
        postings.append(("credits.redeemed", event, redemption_legs(event, account)))
        planned.append(event)
    if not planned:
        return 0
    bulk.update_rows(CreditGrant, changed_grants.values(), ["remaining"])
    bulk.post_each(kind="redemption", postings=postings)
    return len(planned)


def _left_to_step(event: Event, account: Account | None, credits: dict[int, int]) -> bool:
    """Where the run ends and the step takes the redemption: an unknown account (the step
    rejects it), an event logged under another account id than its payload's (the step rewrites
    it), and one without an amount or a credits balance row (the step fails on it)."""
    return account is None or event.account_id != account.pk or event.amount is None or account.pk not in credits


__all__ = ["apply_redemption_run"]

"""Sign-ups applied set-based: a run of consecutive `account.created` events with a number of
SQL statements that does not grow with the run, exactly as the step (`steps._on_account_created`)
applies them one by one. `referrals.engine.apply.apply_events` dispatches runs here ("Ordering").
"""
from itertools import takewhile

from ledger.services import open_books

from ..models import Account, Accrual, Click, Event, FraudFlag, Referral, Template
from . import bulk, outbox
from . import events as ev
from .configuration import Programs
from .steps import (
    EventRejected,
    accrual_legs,
    accrual_of,
    attribution,
    click_burst_window,
    commission_message,
    grant_credits,
    granted,
    new_account,
    new_referral,
    referral_created_message,
    referral_signals,
    signup_earnings,
)


def apply_signup_run(run: list[Event], programs: Programs, *, replay: bool) -> int:
    """Apply the longest prefix of `run`'s sign-ups that can go set-based; returns its length
    (0: none). The event it stops at is left to the step (see `_left_to_step`)."""
    head = list(takewhile(lambda event: event.type == ev.ACCOUNT_CREATED, run))
    wanted = {event.payload.get("account") for event in head}
    existing = {account.external_id: account for account in Account.objects.filter(external_id__in=wanted)}
    codes = {code.lower() for event in head
             if isinstance(code := event.payload.get("referral_code"), str) and code}
    by_code = ({account.referral_code: account for account in Account.objects.filter(referral_code__in=codes)}
               if codes else {})
    template_ids = {event.payload["template"] for event in head if event.payload.get("template")}
    templates = ({t.external_id: t for t in Template.objects.filter(external_id__in=template_ids)
                  .select_related("creator")} if template_ids else {})

    # Decide every sign-up in id order, as the step would with the earlier ones applied.
    planned: list[tuple[Event, Account, Account | None, Template | None, list[dict]]] = []
    created: list[Account] = []
    seen: set[str] = set()
    for event in head:
        if _left_to_step(event, replay=replay, existing=existing, seen=seen):
            break
        warnings = list(event.warnings or [])
        try:
            referrer, _, template = attribution(
                event.payload, event.occurred_at, ignored={w["field"] for w in warnings}, warnings=warnings,
                account_by_code=by_code.get, click_by_id=_no_click, template_by_id=templates.get)
        except EventRejected:
            break  # an unknown template: the step rejects it
        if replay:
            account = existing[event.payload["account"]]
        else:
            try:
                account = new_account(event)
            except (KeyError, AttributeError, ValueError):
                break  # an unusable field (the IP): the step fails on it
            created.append(account)
            by_code.setdefault(account.referral_code, account)
        seen.add(account.external_id)
        planned.append((event, account, referrer, template, warnings))
    if not planned:
        return 0
    before = [(event, event.account_id, event.warnings) for event, *_ in planned]
    try:
        _write(planned, created, programs)
    except Exception:
        # Rolled back: the engine applies the events one by one, as they were handed in.
        for event, account_id, warnings in before:
            event.account_id, event.warnings = account_id, warnings
        raise
    return len(planned)


def _write(planned: list[tuple], created: list[Account], programs: Programs) -> None:
    Account.objects.bulk_create(created)
    open_books([account.pk for account in created])
    for event, account, _, _, warnings in planned:
        event.account, event.warnings = account, warnings  # the account now that it has its id
    bulk.update_rows(Event, [event for event, *_ in planned], ["account", "warnings"])
    referred = [(event, account, referrer, template) for event, account, referrer, template, _ in planned
                if referrer is not None]
    if not referred:
        return

    recent = _recent_clicks([(referrer.pk, account) for _, account, referrer, _ in referred])
    referrals, flags = [], []
    for (event, account, referrer, template), recent_clicks in zip(referred, recent, strict=True):
        signals = referral_signals(referrer, account, click=None, click_shared=False, recent_clicks=recent_clicks)
        referral = new_referral(event, referrer=referrer, referred=account, click=None, template=template,
                                signals=signals)
        referrals.append(referral)
        if signals:
            flags.append(FraudFlag(referral=referral, signals=signals))
    Referral.objects.bulk_create(referrals)
    FraudFlag.objects.bulk_create(flags)

    earnings = [(event, referral, earning) for (event, *_), referral in zip(referred, referrals, strict=True)
                for earning in signup_earnings(programs, event, referral)]
    accruals = Accrual.objects.bulk_create([accrual_of(earning, event) for event, _, earning in earnings])
    grant_credits([accrual for accrual, (_, _, earning) in zip(accruals, earnings, strict=True) if granted(earning)])
    bulk.post_each(kind="accrual", postings=[(earning.rule, event, accrual_legs(earning))
                                             for event, _, earning in earnings])

    # The messages in the order the step publishes them: each referral, then what it earned.
    commissions: dict[int, list] = {}
    for accrual, (event, _, earning) in zip(accruals, earnings, strict=True):
        commissions.setdefault(event.pk, []).append(commission_message(accrual.pk, earning, event))
    messages = []
    for (event, account, *_), referral in zip(referred, referrals, strict=True):
        messages.append(referral_created_message(referral, account, event))
        messages += commissions.get(event.pk, [])
    outbox.publish_many(messages)


def _left_to_step(event: Event, *, replay: bool, existing: dict[str, Account], seen: set[str]) -> bool:
    """Where the run ends and the step takes the event: a second sign-up of one account in the
    run, an account that exists already (the step rejects it) or, replayed, one that does not,
    and a click to attribute through (`clicks.find_click` may write the row from the click
    buffer, or wait for another process to write it)."""
    payload = event.payload
    external_id = payload.get("account")
    warned = {w["field"] for w in event.warnings or []}
    if external_id in seen or (payload.get("click_id") and "click_id" not in warned):
        return True
    return (external_id not in existing) if replay else (external_id in existing)


def _no_click(click_id: str) -> Click | None:
    raise AssertionError("sign-ups with a click are applied by their step")  # see _left_to_step


# Pairs per statement of `_recent_clicks` (bounds its parameter list, as bulk.update_rows).
CLICKS_CHUNK = 500


def _recent_clicks(pairs: list[tuple[int, Account]]) -> list[int]:
    """Per (referrer id, referred account): the clicks on the referrer's link in the burst
    window before the sign-up (`steps.click_burst_window`), one statement per CLICKS_CHUNK."""
    counts = [0] * len(pairs)
    if bulk.is_postgres():
        row = ("(CAST(%s AS INTEGER), CAST(%s AS BIGINT), CAST(%s AS TIMESTAMP WITH TIME ZONE), "
               "CAST(%s AS TIMESTAMP WITH TIME ZONE))")
    else:
        row = "(%s, %s, %s, %s)"
    for start in range(0, len(pairs), CLICKS_CHUNK):
        chunk = pairs[start:start + CLICKS_CHUNK]
        params: list = []
        for n, (referrer_id, referred) in enumerate(chunk, start):
            since, until = click_burst_window(referred)
            params += [n, referrer_id, bulk.db_datetime(since), bulk.db_datetime(until)]
        for n, count in bulk.rows(
                "WITH s (n, referrer_id, since, until) AS (VALUES {rows}) "
                "SELECT s.n, COUNT(*) FROM s JOIN {click} c ON c.referrer_id = s.referrer_id "
                "AND c.created_at >= s.since AND c.created_at <= s.until GROUP BY s.n",
                params, rows=", ".join([row] * len(chunk)), click=bulk.table(Click)):
            counts[n] = count
    return counts


__all__ = ["apply_signup_run"]

"""Sign-ups applied set-based: a run of consecutive `account.created` events with a number of
SQL statements that does not grow with the run, exactly as the step (`steps._on_account_created`)
applies them one by one, attribution through a referral code, a template or a click included (the
run's clicks are looked up at once, `clicks.find_clicks`). `referrals.engine.apply.apply_events`
dispatches runs here ("Ordering").
"""
from collections.abc import Iterator
from itertools import takewhile

from ledger.services import open_books

from ..attribution import clicks
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
    (0: none). The event it stops at is left to the step (see `_up_to_step`)."""
    head = list(takewhile(lambda event: event.type == ev.ACCOUNT_CREATED, run))
    wanted = {event.payload.get("account") for event in head}
    existing = {account.external_id: account for account in Account.objects.filter(external_id__any_of=wanted)}
    codes = {code.lower() for event in head
             if isinstance(code := event.payload.get("referral_code"), str) and code}
    by_code = ({account.referral_code: account for account in Account.objects.filter(referral_code__any_of=codes)}
               if codes else {})
    template_ids = {event.payload["template"] for event in head if event.payload.get("template")}
    templates = ({t.external_id: t for t in Template.objects.filter(external_id__any_of=template_ids)
                  .select_related("creator")} if template_ids else {})

    candidates = _up_to_step(head, replay=replay, existing=existing)
    found_clicks = clicks.find_clicks(_click_ids(candidates))

    # Decide every sign-up in id order, as the step would with the earlier ones applied.
    planned: list[tuple[Event, Account, Account | None, Click | None, Template | None, list[dict]]] = []
    created: list[Account] = []
    for event in candidates:
        warnings = list(event.warnings or [])
        try:
            referrer, click, template = attribution(
                event.payload, event.occurred_at, ignored={w["field"] for w in warnings}, warnings=warnings,
                account_by_code=by_code.get, click_by_id=found_clicks.get, template_by_id=templates.get)
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
        planned.append((event, account, referrer, click, template, warnings))
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
    for event, account, *_, warnings in planned:
        event.account, event.warnings = account, warnings  # the account now that it has its id
    bulk.update_rows(Event, [event for event, *_ in planned], ["account", "warnings"])
    referred = [(event, account, referrer, click, template) for event, account, referrer, click, template, _
                in planned if referrer is not None]
    if not referred:
        return

    recent = _recent_clicks([(referrer.pk, account) for _, account, referrer, *_ in referred])
    # A click is shared when a referral names it already (`steps.self_referral_signals`): one of
    # before the run, or of an earlier sign-up of the run.
    used = _clicks_used({click.pk for *_, click, _ in referred if click is not None})
    referrals, flags = [], []
    for (event, account, referrer, click, template), recent_clicks in zip(referred, recent, strict=True):
        signals = referral_signals(referrer, account, click=click,
                                   click_shared=click is not None and click.pk in used, recent_clicks=recent_clicks)
        if click is not None:
            used.add(click.pk)
        referral = new_referral(event, referrer=referrer, referred=account, click=click, template=template,
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


def _up_to_step(head: list[Event], *, replay: bool, existing: dict[str, Account]) -> list[Event]:
    """The sign-ups of `head` before the first that is left to the step: a second sign-up of one
    account in the run, an account that exists already (the step rejects it) or, replayed, one
    that does not. (The run may end earlier, where deciding a sign-up fails: see the caller.)"""
    seen: set[str] = set()
    for position, event in enumerate(head):
        external_id = event.payload.get("account")
        if external_id in seen or ((external_id not in existing) if replay else (external_id in existing)):
            return head[:position]
        seen.add(external_id)
    return head


def _click_ids(events: list[Event]) -> Iterator[str]:
    """The click ids the sign-ups' attribution will look up (not those warned about already)."""
    for event in events:
        click_id = event.payload.get("click_id")
        if click_id and isinstance(click_id, str) and "click_id" not in {w["field"] for w in event.warnings or []}:
            yield click_id


def _clicks_used(click_ids: set[int]) -> set[int]:
    """Those of these clicks that a referral names already."""
    if not click_ids:
        return set()
    return set(Referral.objects.filter(click_id__any_of=click_ids).values_list("click_id", flat=True))


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

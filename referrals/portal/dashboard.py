"""Reads for the end-user dashboard pages: referral lists, ledger lines in plain words, the
wallet, templates, and the chart and funnel of the overview.

Every function runs a fixed number of queries whatever the account's size (the page tests
assert it with 10,000 referrals); amounts stay in ledger units until the view formats them.
"""
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.apps import apps
from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet, Sum

from ledger.models import Book, Entry
from ledger.money import UNITS, format_cents, net_sum, to_units

from .. import models
from ..engine import events as ev
from ..engine import rollups
from ..models import Account, Accrual, CreditGrant, Program, Referral

REFERRALS_PER_PAGE = 25
ENTRIES_PER_PAGE = 50

BOOK_WORDS = {
    Book.PENDING: "held earnings",
    Book.CREDITS: "credits",
    Book.CASH: "cash earnings",
    Book.RESERVED: "reserved for a payout",
}


# --------------------------------------------------------------------------- referrals


def referral_list(account: Account, *, query: str = "", status: str = "") -> QuerySet:
    """The account's referrals, newest first, filtered by status and a search on the referred
    account's id or e-mail."""
    referrals = Referral.objects.filter(referrer=account).select_related("referred", "template")
    if status in Referral.Status.values:
        referrals = referrals.filter(status=status)
    query = query.strip()
    if query:
        referrals = referrals.filter(Q(referred__external_id__icontains=query) | Q(referred__email__icontains=query))
    return referrals.order_by("-created_at", "-id")


def referral_page(account: Account, *, query: str = "", status: str = "", page: str | int = 1,
                  before: str = "", after: str = "") -> Page:
    """One page of referrals, each with `earned` (what it earned this account, net of refunds).

    The "Older" and "Newer" links carry a cursor (the created time and id of the page's last or
    first row) and the page number, for display: a cursor page is a bounded range scan of the
    referrer's newest-first index however deep it is. A bare `?page=N` is cut from the ids
    alone (an index-only scan). Without a search the total comes from the referral rollup, not
    a COUNT over every referral. BadCursor when a cursor is not one."""
    ids = referral_list(account, query=query, status=status).values_list("id", flat=True)
    paginator = Paginator(ids, REFERRALS_PER_PAGE)
    if not query.strip():
        by_status = rollups.referral_totals(account.pk)
        paginator.count = (by_status.get(status, rollups.StatusTotals()).referrals if status in Referral.Status.values
                           else sum(t.referrals for t in by_status.values()))
    number = paginator.get_page(page).number if not (before or after) else _page_number(paginator, page)
    if before:
        at, pk = parse_cursor(before)
        page_ids = list(ids.filter(created_at__lte=at).filter(Q(created_at__lt=at) | Q(id__lt=pk))
                        [:REFERRALS_PER_PAGE])
    elif after:
        at, pk = parse_cursor(after)
        page_ids = list(ids.filter(created_at__gte=at).filter(Q(created_at__gt=at) | Q(id__gt=pk))
                        .order_by("created_at", "id")[:REFERRALS_PER_PAGE])[::-1]
    else:
        page_ids = list(paginator.page(number).object_list)
    loaded = Referral.objects.select_related("referred", "template").in_bulk(page_ids)
    rows = [loaded[pk] for pk in page_ids if pk in loaded]
    earned = dict(
        Accrual.objects.filter(beneficiary=account, referral__in=page_ids)
        .exclude(state=Accrual.State.VOID).values("referral_id")
        .annotate(total=net_sum("amount", "reversed")).values_list("referral_id", "total")
    )
    for referral in rows:
        referral.earned = int(earned.get(referral.pk) or 0)
    current = Page(rows, number, paginator)
    current.newer_cursor = _cursor((rows[0].created_at, rows[0].pk)) if rows else ""
    current.older_cursor = _cursor((rows[-1].created_at, rows[-1].pk)) if rows else ""
    return current


def _page_number(paginator: Paginator, page) -> int:
    """The page number a cursor link carries, for display only (clamped, never an error)."""
    try:
        return min(max(int(page), 1), paginator.num_pages)
    except (TypeError, ValueError):
        return 1


def milestone_progress(referrals: list[Referral]) -> dict[int, list[dict]]:
    """Per referral, where its referred account stands against each enabled milestone programme:
    net spend of the programme's product as the engine counts it (`Referral.spend_by_product`,
    applied charges net of refunds; all usage for a programme without a product), the threshold,
    and whether the bonus was awarded. An ineligible referral earns nothing, so it shows none.
    One query for the whole list, whatever its length."""
    programs = [p for p in Program.objects.filter(enabled=True, kind=Program.Kind.MILESTONE) if p.milestone_threshold]
    out: dict[int, list[dict]] = {r.pk: [] for r in referrals}
    counted = [r for r in referrals if r.status != Referral.Status.INELIGIBLE]
    if not programs or not counted:
        return out
    awarded = set(Accrual.objects.filter(referral__in=counted, program__in=programs)
                  .exclude(state=Accrual.State.VOID).values_list("referral_id", "program_id"))
    for program in programs:
        threshold = to_units(program.milestone_threshold)
        for referral in counted:
            spent = referral.spend_by_product.get(program.product, 0) if program.product else referral.spend
            spent = max(int(spent), 0)
            out[referral.pk].append({
                "program": program, "spend": spent, "threshold": threshold,
                "reached": (referral.pk, program.pk) in awarded or spent >= threshold,
                "value": min(spent, threshold) // (UNITS // 100), "max": threshold // (UNITS // 100),
            })
    return out


def referral_accruals(account: Account, referral: Referral) -> list[Accrual]:
    return list(Accrual.objects.filter(beneficiary=account, referral=referral)
                .select_related("program", "event").order_by("-created_at", "-id"))


# --------------------------------------------------------------------------- earnings in plain words


@dataclass
class LedgerLine:
    id: int
    at: datetime
    book: str
    book_words: str
    amount: int
    description: str
    kind: str
    rule: str
    event: str
    program: str


def account_entries(account: Account) -> QuerySet:
    """The account's earning legs (accruals, claw-backs, voids: what changes what it earned,
    `rollups.EARNING_KINDS`), the rows of the earnings page and CSV. Moves between its own books
    (releases, payout reservations, fraud holds) are not earnings and are not listed: a held
    earning says "released since" instead of a second, paired row. Their sum is the total earned
    of `selectors.earnings_by_program`."""
    # Newest first by when it happened (the event's time), not when it was posted: a replayed or
    # late event would otherwise sort by its arrival. `LedgerLine` holds that time per account
    # leg, indexed, so this reads in index order instead of sorting a million joined rows.
    # The event's raw payload is never shown: not loading (and JSON-decoding) it per line.
    return (Entry.objects.filter(line__account_id=account.pk, transaction__kind__in=rollups.EARNING_KINDS)
            .select_related("transaction", "transaction__event", "program").defer("transaction__event__payload")
            .order_by("-line__happened_at", "-line__entry_id"))


def ledger_lines(account: Account, entries) -> list[LedgerLine]:
    """Describe each entry of `account` in words: which event, which rule, how much, which book.

    Accrual legs are matched to their `Accrual` (same event, programme and amount; the 75 % / 25 %
    split of a credit commission makes two accruals of one event) in one query for the batch."""
    entries = list(entries)
    event_ids = {e.transaction.event_id for e in entries if e.transaction.kind == "accrual"}
    accruals: dict[tuple, list[Accrual]] = defaultdict(list)
    if event_ids:
        for accrual in (Accrual.objects.filter(beneficiary=account, event_id__in=event_ids)
                        .select_related("program", "template", "referral")):
            accruals[(accrual.event_id, accrual.program_id)].append(accrual)
    lines = []
    for entry in entries:
        txn = entry.transaction
        accrual = None
        if txn.kind == "accrual":
            candidates = accruals.get((txn.event_id, entry.program_id), [])
            fallback = candidates[0] if candidates else None
            accrual = next((a for a in candidates if a.amount == abs(entry.amount)), fallback)
        lines.append(LedgerLine(
            id=entry.pk, at=txn.created_at if txn.event is None else txn.event.occurred_at, book=entry.book,
            book_words=BOOK_WORDS.get(entry.book, entry.book), amount=entry.amount,
            description=describe(entry, accrual, account),
            kind=txn.kind, rule=txn.rule, event=txn.event.external_id if txn.event else "",
            program=entry.program.name if entry.program else "",
        ))
    return lines


class BadCursor(ValueError):
    pass


@dataclass
class LedgerWindow:
    """One page of a keyset-paginated list: cursors to the newer and older neighbours ("" when
    there is none). No page numbers: counting a million entries per view is what this avoids."""

    newer: str = ""
    older: str = ""


def _cursor(key: tuple[datetime, int]) -> str:
    happened_at, entry_id = key
    return f"{round(happened_at.timestamp() * 1_000_000)}.{entry_id}"


def parse_cursor(value: str) -> tuple[datetime, int]:
    """ "<microseconds since the epoch>.<entry id>" -> (time, id); BadCursor if it is not one."""
    micros, _, entry_id = value.partition(".")
    if not (micros.lstrip("-").isdigit() and entry_id.isdigit()):
        raise BadCursor("not a position in the list")
    try:
        at = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise BadCursor("not a position in the list") from None
    return at.replace(microsecond=int(micros) % 1_000_000), int(entry_id)


def ledger_page(account: Account, *, before: str = "", after: str = "") -> tuple[LedgerWindow, list[LedgerLine]]:
    """A page of the account's ledger lines, newest first: the first page, the one just older than
    cursor `before`, or the one just newer than `after` (BadCursor when a cursor is not one)."""
    keys = models.LedgerLine.objects.filter(account_id=account.pk, entry__transaction__kind__in=rollups.EARNING_KINDS)
    if before:
        at, entry_id = parse_cursor(before)
        # `<=` on the time bounds the index scan; the OR only settles ties at that instant.
        keys = keys.filter(happened_at__lte=at).filter(Q(happened_at__lt=at) | Q(entry_id__lt=entry_id))
    elif after:
        at, entry_id = parse_cursor(after)
        keys = keys.filter(happened_at__gte=at).filter(Q(happened_at__gt=at) | Q(entry_id__gt=entry_id))
    order = ("happened_at", "entry_id") if after else ("-happened_at", "-entry_id")
    found = list(keys.order_by(*order).values_list("happened_at", "entry_id")[:ENTRIES_PER_PAGE + 1])
    more = len(found) > ENTRIES_PER_PAGE
    found = found[:ENTRIES_PER_PAGE]
    if after:
        found.reverse()
    loaded = account_entries(account).in_bulk([entry_id for _, entry_id in found])
    lines = ledger_lines(account, [loaded[entry_id] for _, entry_id in found if entry_id in loaded])
    window = LedgerWindow()
    if found:
        has_newer = (after and more) or bool(before)
        has_older = (not after and more) or bool(after)
        window.newer = _cursor(found[0]) if has_newer else ""
        window.older = _cursor(found[-1]) if has_older else ""
    return window, lines


def _money(units: int) -> str:
    """$1,234.56 in words; an amount under a cent keeps its digits ($0.0042) rather than read $0.00."""
    if units and abs(units) < UNITS // 100:
        return f"${Decimal(units) / UNITS:f}"
    return f"${Decimal(format_cents(units)):,.2f}"


def _what_was_paid(event) -> str:
    amount = _money(event.amount or 0)
    if event.type == ev.USAGE_CHARGED:
        product = f"{event.product} " if event.product else ""
        return f"{amount} {product}spend"
    if event.type == ev.CREDITS_PURCHASED:
        return f"a {amount} credit purchase"
    if event.type == ev.PLAN_PURCHASED:
        return f"a {amount} plan purchase"
    return f"{amount} ({event.type})"


def _hold_words(accrual: Accrual) -> str:
    program = accrual.program
    if accrual.held_for_fraud:
        reason = "held while staff review the referral (possible self-referral)"
    elif accrual.held_for_template or (program.kind == Program.Kind.TEMPLATE_SHARE
                                       and program.template_min_runtime_hours and accrual.template_id):
        hours = f"{program.template_min_runtime_hours.normalize():f}"
        reason = f"held until the template has {hours} h of runtime"
    elif accrual.held_for_gate or program.requires_approval:
        reason = "held until the programme is approved"
    elif accrual.held_until:
        reason = f"held until {accrual.held_until:%Y-%m-%d} (holding period)"
    else:
        reason = "held"
    if accrual.state == Accrual.State.RELEASED:
        reason += " (released since)"
    elif accrual.state == Accrual.State.VOID:
        reason += " (voided since)"
    return reason


def _rate(rule: str) -> str:
    """ "runpod-revenue-share:2.00%" -> "2%"; "…:2.25%" -> "2.25%"."""
    text = rule.rsplit(":", 1)[-1].rstrip("%")
    try:
        return f"{Decimal(text).normalize():f}%"
    except ArithmeticError:
        return rule.rsplit(":", 1)[-1]


def _accrual_words(entry: Entry, accrual: Accrual | None, account: Account) -> str:
    if accrual is None:
        return f"Earned under {entry.program.name if entry.program else 'a programme'}"
    program, event = accrual.program, entry.transaction.event
    bucket = _hold_words(accrual) if entry.book == Book.PENDING else f"added to your {BOOK_WORDS[entry.book]}"
    if program.kind in (Program.Kind.REVENUE_SHARE, Program.Kind.PURCHASE_COMMISSION):
        rate = _rate(accrual.rule)
        track = f" ({accrual.get_track_display()} track)" if accrual.track else ""
        split = ""
        if program.cashout_percent and program.pays_in == Program.PaysIn.CREDITS:
            part = "withdrawable part" if accrual.destination == Book.CASH else "credits-only part"
            split = f", {part} of the {program.cashout_percent.normalize():f}% cash-out rule"
        return f"{rate} of {_what_was_paid(event)} by a referred account{track}{split}, {bucket}"
    if program.kind == Program.Kind.TEMPLATE_SHARE:
        name = accrual.template.name or accrual.template.external_id if accrual.template else "your template"
        return f"{_rate(accrual.rule)} of {_what_was_paid(event)} on your template {name}, {bucket}"
    if program.kind == Program.Kind.MILESTONE:
        threshold = _money(to_units(program.milestone_threshold))
        whose = "your" if accrual.referral and accrual.referral.referred_id == account.pk else "a referred account's"
        product = f"{program.product} " if program.product else ""
        return f"Milestone bonus: {whose} {product}spend reached {threshold}, {bucket}"
    if program.kind == Program.Kind.SIGNUP_CREDIT:
        days = f", valid {accrual.expires_days} days" if accrual.expires_days else ""
        return f"Sign-up credit for joining through a referral link{days}, {bucket}"
    return f"{program.name}, {bucket}"


RELEASE_REASONS = {
    "approved": "the programme application was approved",
    "template-qualified": "your template reached its runtime threshold",
    "fraud-cleared": "staff cleared the referral after a review",
    "hold-period-passed": "the holding period passed",
}


def describe(entry: Entry, accrual: Accrual | None, account: Account) -> str:
    """One ledger leg in words, from the point of view of the account holder."""
    txn = entry.transaction
    book = BOOK_WORDS.get(entry.book, entry.book)
    if txn.kind == "accrual":
        return _accrual_words(entry, accrual, account)
    if txn.kind == "release":
        reason = RELEASE_REASONS.get(txn.rule.rsplit(":", 1)[-1], txn.rule)
        if entry.amount < 0:
            return f"Released from held earnings: {reason}"
        return f"Released into your {book}: {reason}"
    if txn.kind == "reversal":
        return f"Clawed back from your {book}: the referred account's payment was refunded"
    if txn.kind == "redemption":
        return "Credits used to pay for usage"
    if txn.kind == "expiry":
        return "Unused sign-up credit expired"
    if txn.kind == "void":
        return "Voided: staff confirmed the referral as a self-referral"
    if txn.kind == "fraud-hold":
        return f"{'Moved out of' if entry.amount < 0 else 'Held in'} your {book} while staff review a referral"
    words = txn.memo or txn.rule or txn.kind
    direction = "added to" if entry.amount > 0 else "taken from"
    return f"{txn.kind.replace('-', ' ').replace('.', ' ').capitalize()}: {words} ({direction} your {book})"


# --------------------------------------------------------------------------- wallet


@dataclass
class Wallet:
    grants: list[CreditGrant]
    held: dict[str, int]  # reason -> amount held (ledger units)
    cashout_programs: list[Program] = field(default_factory=list)
    min_payout: int = 0
    blocked_by_own_credits: bool = False
    pays_cash: bool = False


def pays_cash(programs) -> bool:
    """Whether any of these programmes pays cash that can be withdrawn (a cash track, or a
    cash-out share of its credits); runpod's pay in platform credits only."""
    return any(Program.PaysIn.CASH in (p.pays_in, p.partner_pays_in) or p.cashout_percent for p in programs)


def wallet(account: Account, *, now: datetime) -> Wallet:
    grants = list(CreditGrant.objects.filter(account=account, expired_at__isnull=True, remaining__gt=0,
                                             expires_at__gt=now).select_related("accrual__program")[:100])
    held = Accrual.objects.filter(beneficiary=account, state=Accrual.State.HELD).aggregate(
        fraud=Sum("amount", filter=Q(held_for_fraud=True)),
        fraud_back=Sum("reversed", filter=Q(held_for_fraud=True)),
        gate=Sum("amount", filter=Q(held_for_gate=True, held_for_fraud=False)),
        gate_back=Sum("reversed", filter=Q(held_for_gate=True, held_for_fraud=False)),
        template=Sum("amount", filter=Q(held_for_template=True, held_for_gate=False, held_for_fraud=False)),
        template_back=Sum("reversed", filter=Q(held_for_template=True, held_for_gate=False, held_for_fraud=False)),
        period=Sum("amount", filter=Q(held_for_template=False, held_for_gate=False, held_for_fraud=False)),
        period_back=Sum("reversed", filter=Q(held_for_template=False, held_for_gate=False, held_for_fraud=False)),
    )
    reasons = {
        "gate": "waiting for the programme's gate and staff approval",
        "template": "waiting for your template to reach its runtime threshold",
        "fraud": "held while staff review a referral",
        "period": "in the programme's holding period",
    }
    held_by_reason = {}
    for key, words in reasons.items():
        amount = int(held[key] or 0) - int(held[f"{key}_back"] or 0)
        if amount:
            held_by_reason[words] = amount
    programs = list(Program.objects.filter(enabled=True))
    cashout = [p for p in programs if p.cashout_percent and p.pays_in == Program.PaysIn.CREDITS]
    minimums = [to_units(p.min_payout) for p in programs if p.min_payout]
    return Wallet(
        grants=grants, held=held_by_reason, cashout_programs=cashout,
        min_payout=max(minimums) if minimums else 0,
        blocked_by_own_credits=account.purchased_credits > 0 and any(p.own_credits_block_cashout for p in programs),
        pays_cash=pays_cash(programs),
    )


# --------------------------------------------------------------------------- templates


def template_rows(account: Account, *, limit: int = 100, earned: rollups.Earnings | None = None) -> list[dict]:
    """The account's templates with runtime, earnings and whether their gate is met."""
    programs = list(Program.objects.filter(enabled=True, kind=Program.Kind.TEMPLATE_SHARE))
    needed_hours = max((p.template_min_runtime_hours for p in programs), default=Decimal(0))
    templates = list(account.templates.select_related("creator").order_by("-created_at", "-id")[:limit])
    earned = earned or rollups.earnings(account.pk)
    earned_by_template, held = earned.by_template, earned.held_by_template
    rows = []
    for template in templates:
        hours = Decimal(template.runtime_seconds) / 3600
        rows.append({
            "template": template, "link": template.referral_link,
            "runtime_hours": hours.quantize(Decimal("0.1")), "needed_hours": needed_hours,
            "runtime_seconds": template.runtime_seconds, "needed_seconds": int(needed_hours * 3600),
            "qualified": template.qualified_at is not None or (needed_hours and hours >= needed_hours),
            "earned": earned_by_template.get(template.pk, 0), "held": held.get(template.pk, 0),
        })
    return rows


# --------------------------------------------------------------------------- chart and funnel


def earnings_by_month(account: Account, *, now: datetime, months: int = 12,
                      earned: rollups.Earnings | None = None) -> list[tuple[datetime, int]]:
    """Referral earnings (net of claw-backs, void excluded) per calendar month (UTC) of the
    accrual, oldest first, with empty months filled in, ending with the month of `now`."""
    first = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    starts = [first]
    for _ in range(months - 1):
        starts.insert(0, (starts[0] - timedelta(days=1)).replace(day=1))
    earned = earned or rollups.earnings(account.pk)
    totals = {(m.year, m.month): total for m, total in earned.referral_by_month.items()}
    return [(start, totals.get((start.year, start.month), 0)) for start in starts]


CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM = 600, 220, 20, 30


def bar_chart(series: list[tuple[datetime, int]]) -> dict:
    """Geometry of a server-rendered SVG bar chart (viewBox units)."""
    peak = max((amount for _, amount in series), default=0)
    slot = CHART_WIDTH / max(len(series), 1)
    usable = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    bars = []
    for index, (month, amount) in enumerate(series):
        height = round(usable * max(amount, 0) / peak, 1) if peak > 0 else 0
        bars.append({
            "x": round(index * slot + slot * 0.15, 1), "width": round(slot * 0.7, 1),
            "y": round(CHART_TOP + usable - height, 1), "height": height,
            "label_x": round(index * slot + slot / 2, 1), "label": month.strftime("%b"),
            "month": month.strftime("%B %Y"), "amount": format_cents(amount),
        })
    return {"bars": bars, "width": CHART_WIDTH, "height": CHART_HEIGHT, "baseline": CHART_HEIGHT - CHART_BOTTOM,
            "peak": format_cents(peak), "label_y": CHART_HEIGHT - 10}


def funnel(stats: dict) -> list[dict]:
    """Unique clicks -> sign-ups -> conversions, each as a share of the widest step. Each step's
    rate of the one before has one decimal, and the conversions step is the conversion rate of
    the stats (the same figure as the card and the API), not a second rounding of it."""
    from ..selectors import conversion_percent

    steps = [("Unique clicks", stats["unique_clicks"]), ("Sign-ups", stats["total_referrals"]),
             ("Conversions", stats["conversions"])]
    widest = max((n for _, n in steps), default=0)
    out = []
    previous = None
    for label, count in steps:
        percent = round(100 * count / widest) if widest else 0
        step_rate = ""
        if label == "Conversions" and previous:
            step_rate = f"{conversion_percent(stats['conversion_rate'])}% of the step before"
        elif previous:
            step_rate = f"{conversion_percent(Decimal(count) / Decimal(previous))}% of the step before"
        out.append({"label": label, "count": count, "percent": max(percent, 1 if count else 0), "rate": step_rate})
        previous = count
    return out


def status_counts(account: Account) -> dict:
    """How many referrals the account has, in all and per status (from the referral rollup)."""
    by_status = rollups.referral_totals(account.pk)
    counts = {s: by_status.get(s, rollups.StatusTotals()).referrals for s in Referral.Status.values}
    return {"all": sum(t.referrals for t in by_status.values()), **counts}


# --------------------------------------------------------------------------- payout account (Partner upgrade)


def payout_method_summary(account: Account, *, types: list[str] | None = None) -> dict:
    """Whether the account has a payout account ready to receive money (of one of `types`, when
    given), for the Partner upgrade.

    Payout methods belong to the `payouts` app, which depends on this one and not the other way
    round; the model is therefore looked up by name. Without it no step can be required."""
    try:
        model = apps.get_model("payouts", "PayoutMethod")
    except LookupError:
        return {"required": False, "connected": False, "label": "", "types": types or []}
    methods = model.objects.filter(account=account, ready=True)
    if types:
        methods = methods.filter(type__in=types)
    method = methods.order_by("-updated_at", "-id").first()
    return {"required": True, "connected": method is not None, "label": str(method) if method else "",
            "types": types or []}

"""Rollups for the dashboard (`EarningsRollup`, `ReferralRollup`, `ClickRollup`): the job that
compacts them, the reads over them, and the checks that they match their source rows and the
ledger. The database triggers that keep them in step with every accrual, referral and click
write are installed by migrations `0005_earnings_rollup` and `0007_referrer_rollups`.
On SQLite, a later migration that alters `referrals_accrual`, `referrals_referral`,
`referrals_click` or `ledger_entry` rebuilds the table and drops its triggers: such a migration
must reinstall them (PostgreSQL keeps them through ALTER TABLE). The rollup property tests in
tests/test_dashboard_rollups.py fail if a trigger is missing.

Why triggers and delta rows: accruals are written by the event services, by the set-based jobs
(one UPDATE releasing thousands of rows) and by replays; a trigger catches every one of them in
the statement that writes the accrual, so the rollup commits or rolls back with the ledger legs.
Each statement *appends* signed deltas instead of updating a shared total: an event for one of
Alice's referrals and a job releasing her older holds never wait on (or deadlock over) a rollup
row. Readers sum a key's rows; `compact` merges them so there are few to sum.
"""
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date

from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDate, TruncMonth

from ledger.models import Book, Entry

from ..models import Accrual, Click, ClickRollup, EarningsRollup, Referral, ReferralRollup
from . import bulk

KEYS = ("beneficiary_id", "program_id", "template_id", "month", "state", "as_referred")


@dataclass(frozen=True)
class Rollup:
    """A delta table: rows with the same key add up; `source` selects its rows from scratch."""

    table: str
    keys: tuple[str, ...]
    sums: tuple[str, ...]
    source: str

    def fragments(self) -> dict[str, str]:
        return {
            "t": self.table,
            "keys": ", ".join(self.keys),
            "cols": ", ".join(self.keys + self.sums),
            "sums": ", ".join(f"SUM({c})" for c in self.sums),
            "any": " OR ".join(f"SUM({c}) <> 0" for c in self.sums),
            "none": " AND ".join(f"SUM({c}) = 0" for c in self.sums),
            # NULL keys (a template-less accrual) must match each other.
            "same": " AND ".join(f"COALESCE(x.{k}, 0) = COALESCE(d.{k}, 0)" if k == "template_id"
                                 else f"x.{k} = d.{k}" for k in self.keys),
        }


ROLLUPS = (
    Rollup("referrals_earningsrollup", KEYS, ("accruals", "amount", "reversed"), """
        SELECT a.beneficiary_id, a.program_id, a.template_id, {month}, a.state,
               COALESCE(r.referred_id = a.beneficiary_id, false), COUNT(*), SUM(a.amount), SUM(a.reversed)
        FROM referrals_accrual a LEFT JOIN referrals_referral r ON r.id = a.referral_id
        GROUP BY 1, 2, 3, 4, 5, 6"""),
    Rollup("referrals_referralrollup", ("referrer_id", "status"), ("referrals", "spend", "purchases"), """
        SELECT referrer_id, status, COUNT(*), SUM(spend), SUM(purchases) FROM referrals_referral GROUP BY 1, 2"""),
    Rollup("referrals_clickrollup", ("referrer_id",), ("clicks", "unique_clicks"), """
        SELECT referrer_id, COUNT(*), SUM(CASE WHEN is_unique THEN 1 ELSE 0 END) FROM referrals_click GROUP BY 1"""),
)

# Keys with more than one row, or whose rows sum to nothing; and their merged sums.
_SPLIT_KEYS = "SELECT {keys} FROM {t} GROUP BY {keys} HAVING COUNT(*) > 1 OR ({none})"
_INSERT_MERGED = "INSERT INTO {t} ({cols}) SELECT {keys}, {sums} FROM {rows} GROUP BY {keys} HAVING {any}"


def compact(at=None) -> dict:
    """Merge each key's delta rows into one (and drop keys that sum to nothing), in every rollup.

    On PostgreSQL one statement per rollup deletes the rows it sees and inserts their sums:
    rows that writers commit meanwhile are not seen, so they stay as deltas for the next run and
    nothing is counted twice or lost. SQLite has a single writer, so a few statements do."""
    counts = {}
    for rollup in ROLLUPS:
        names = rollup.fragments()
        split = bulk.sql(_SPLIT_KEYS, **names)
        if bulk.is_postgres():
            merge = bulk.sql(_INSERT_MERGED, **names, rows="gone")
            merged = bulk.execute("WITH gone AS (DELETE FROM {t} x USING ({split}) d WHERE {same} RETURNING x.*) "
                                  "{merge}", **names, split=split, merge=merge)
        else:
            bulk.execute("CREATE TEMPORARY TABLE tmp_rollup_split AS {split}", split=split)
            bulk.execute("CREATE TEMPORARY TABLE tmp_rollup_merged AS SELECT x.* FROM {t} x "
                         "JOIN tmp_rollup_split d ON {same}", **names)
            bulk.execute("DELETE FROM {t} WHERE id IN (SELECT id FROM tmp_rollup_merged)", **names)
            merged = bulk.execute(_INSERT_MERGED, **names, rows="tmp_rollup_merged")
            bulk.execute("DROP TABLE tmp_rollup_split")
            bulk.execute("DROP TABLE tmp_rollup_merged")
        counts[rollup.table.removeprefix("referrals_")] = merged
    return counts


def rebuild() -> dict:
    """Recompute every rollup, and the ledger lines, from their source rows (after a bulk load
    that bypassed the triggers, e.g. `bench/dashboard.py`). Run it with no writers about."""
    month = ("date_trunc('month', a.created_at AT TIME ZONE 'UTC')::date" if bulk.is_postgres()
             else "date(a.created_at, 'start of month')")
    counts = {}
    for rollup in ROLLUPS:
        names = rollup.fragments()
        bulk.execute("DELETE FROM {t}", **names)
        counts[rollup.table.removeprefix("referrals_")] = bulk.execute(
            "INSERT INTO {t} ({cols}) {source}", **names, source=bulk.sql(rollup.source, month=month))
    bulk.execute("DELETE FROM referrals_ledgerline")
    counts["ledgerline"] = bulk.execute("""
        INSERT INTO referrals_ledgerline (entry_id, account_id, happened_at)
        SELECT n.id, n.account_id, COALESCE(e.occurred_at, t.created_at)
        FROM ledger_entry n JOIN ledger_transaction t ON t.id = n.transaction_id
        LEFT JOIN referrals_event e ON e.id = t.event_id WHERE n.account_id IS NOT NULL""")
    return counts


# ---------------------------------------------------------------------------- reads


@dataclass
class ProgramEarnings:
    gross: int = 0
    reversed: int = 0
    held: int = 0
    held_reversed: int = 0

    @property
    def earned(self) -> int:
        return self.gross - self.reversed

    @property
    def pending(self) -> int:
        return self.held - self.held_reversed


@dataclass
class Earnings:
    """One account's accrual sums, void accruals left out."""

    by_program: dict[int, ProgramEarnings] = field(default_factory=dict)
    # Referral earnings (not what the account received as a referred user), net, by month.
    referral_by_month: dict[date, int] = field(default_factory=dict)
    referral_total: int = 0
    by_template: dict[int, int] = field(default_factory=dict)  # net, all states
    held_by_template: dict[int, int] = field(default_factory=dict)


def earnings(account_id: int) -> Earnings:
    """Everything the overview shows about earnings, from one query over the rollup."""
    rows = (EarningsRollup.objects.filter(beneficiary_id=account_id).exclude(state=Accrual.State.VOID)
            .values("program_id", "template_id", "month", "state", "as_referred")
            .annotate(n=Sum("accruals"), gross=Sum("amount"), back=Sum("reversed")).order_by())
    out = Earnings()
    by_month = defaultdict(int)
    by_template = defaultdict(int)
    held_by_template = defaultdict(int)
    for row in rows:
        if not row["n"]:  # deltas that cancel out (e.g. accruals that moved to another state)
            continue
        gross, back = int(row["gross"] or 0), int(row["back"] or 0)
        program = out.by_program.setdefault(row["program_id"], ProgramEarnings())
        program.gross += gross
        program.reversed += back
        held = row["state"] == Accrual.State.HELD
        if held:
            program.held += gross
            program.held_reversed += back
        if not row["as_referred"]:
            out.referral_total += gross - back
            by_month[row["month"]] += gross - back
        if row["template_id"] is not None:
            by_template[row["template_id"]] += gross - back
            if held:
                held_by_template[row["template_id"]] += gross - back
    out.referral_by_month = dict(by_month)
    out.by_template = dict(by_template)
    out.held_by_template = dict(held_by_template)
    return out


@dataclass(frozen=True)
class StatusTotals:
    referrals: int = 0
    spend: int = 0
    purchases: int = 0


def referral_totals(referrer_id: int) -> dict[str, StatusTotals]:
    """Per referral status: how many, and their net spend and purchases."""
    rows = (ReferralRollup.objects.filter(referrer_id=referrer_id).values("status")
            .annotate(n=Sum("referrals"), spend=Sum("spend"), purchases=Sum("purchases")).order_by())
    return {row["status"]: StatusTotals(int(row["n"]), int(row["spend"]), int(row["purchases"]))
            for row in rows if row["n"]}


def click_totals(referrer_id: int) -> tuple[int, int]:
    """(clicks, unique clicks)."""
    totals = ClickRollup.objects.filter(referrer_id=referrer_id).aggregate(
        clicks=Sum("clicks"), unique=Sum("unique_clicks"))
    return int(totals["clicks"] or 0), int(totals["unique"] or 0)


# ---------------------------------------------------------------------------- checks


def _rollup_sums() -> dict[tuple, tuple[int, int, int]]:
    rows = (EarningsRollup.objects.values(*KEYS).annotate(n=Sum("accruals"), a=Sum("amount"), r=Sum("reversed"))
            .order_by())
    return {tuple(row[k] for k in KEYS): (int(row["n"]), int(row["a"]), int(row["r"]))
            for row in rows if row["n"] or row["a"] or row["r"]}


def _accrual_sums() -> dict[tuple, tuple[int, int, int]]:
    as_referred = Coalesce(ExpressionWrapper(Q(referral__referred_id=F("beneficiary_id")),
                                             output_field=BooleanField()), Value(False))
    month = TruncDate(TruncMonth("created_at", tzinfo=UTC), tzinfo=UTC)
    rows = (Accrual.objects.annotate(month=month, as_referred=as_referred)
            .values(*KEYS).annotate(n=Count("id"), a=Sum("amount"), r=Sum("reversed")).order_by())
    return {tuple(row[k] for k in KEYS): (int(row["n"]), int(row["a"]), int(row["r"])) for row in rows}


# Transaction kinds that change what an account has earned (as opposed to moving it between
# books, spending, expiring or paying it out): what the rollup's net figures must equal.
EARNING_KINDS = ("accrual", "reversal", "void")


def referrer_differences() -> list[str]:
    """Where the referral and click rollups disagree with the referrals and clicks."""
    problems = []
    rollup = {(r["referrer_id"], r["status"]): (int(r["n"]), int(r["s"]), int(r["p"]))
              for r in ReferralRollup.objects.values("referrer_id", "status").annotate(
                  n=Sum("referrals"), s=Sum("spend"), p=Sum("purchases")).order_by()
              if r["n"] or r["s"] or r["p"]}
    source = {(r["referrer_id"], r["status"]): (int(r["n"]), int(r["s"]), int(r["p"]))
              for r in Referral.objects.values("referrer_id", "status").annotate(
                  n=Count("id"), s=Sum("spend"), p=Sum("purchases")).order_by()}
    clicks = {r["referrer_id"]: (int(r["n"]), int(r["u"])) for r in ClickRollup.objects.values("referrer_id")
              .annotate(n=Sum("clicks"), u=Sum("unique_clicks")).order_by() if r["n"] or r["u"]}
    click_source = {r["referrer_id"]: (int(r["n"]), int(r["u"])) for r in Click.objects.values("referrer_id")
                    .annotate(n=Count("id"), u=Count("id", filter=Q(is_unique=True))).order_by()}
    for name, ours, theirs in (("referral", rollup, source), ("click", clicks, click_source)):
        for key in sorted(set(ours) | set(theirs), key=str):
            if ours.get(key) != theirs.get(key):
                problems.append(f"{name} rollup {key}: rollup {ours.get(key)} != {name}s {theirs.get(key)}")
    return problems


def earnings_differences() -> list[str]:
    """Where the rollup disagrees with the accruals (key by key) or with the ledger (per account
    and programme: held net = pending book; non-void net = legs of accruals, claw-backs and voids)."""
    problems = []
    rollup, accruals = _rollup_sums(), _accrual_sums()
    for key in sorted(set(rollup) | set(accruals), key=str):
        if rollup.get(key) != accruals.get(key):
            problems.append(f"earnings rollup {key}: rollup {rollup.get(key)} != accruals {accruals.get(key)}")
    held, earned = defaultdict(int), defaultdict(int)
    for (account, program, _, _, state, _), (_, amount, back) in rollup.items():
        if state == Accrual.State.HELD:
            held[(account, program)] += amount - back
        if state != Accrual.State.VOID:
            earned[(account, program)] += amount - back
    pending = {(a, p): int(t) for a, p, t in Entry.objects.filter(book=Book.PENDING, account__isnull=False)
               .values_list("account_id", "program_id").annotate(t=Sum("amount")).values_list(
                   "account_id", "program_id", "t")}
    ledger_earned = {(a, p): int(t) for a, p, t in Entry.objects.filter(
        account__isnull=False, transaction__kind__in=EARNING_KINDS).values_list("account_id", "program_id")
        .annotate(t=Sum("amount")).values_list("account_id", "program_id", "t")}
    for name, ours, ledger in (("held", held, pending), ("earned", earned, ledger_earned)):
        for key in sorted(set(ours) | set(ledger), key=str):
            if ours.get(key, 0) != ledger.get(key, 0):
                problems.append(f"earnings rollup {name} of account {key[0]} programme {key[1]}: "
                                f"rollup {ours.get(key, 0)} != ledger {ledger.get(key, 0)}")
    return problems


__all__ = ["ROLLUPS", "Earnings", "ProgramEarnings", "StatusTotals", "click_totals", "compact", "earnings",
           "earnings_differences", "rebuild", "referral_totals", "referrer_differences"]

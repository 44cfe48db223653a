"""Rollups for the dashboard: the job that compacts `EarningsRollup`, the reads over it, and the
check that it matches the accruals and the ledger. The database triggers that keep it in step
with every accrual write are installed by migration `referrals/0003_earnings_rollup`.

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

from . import bulk
from .models import Accrual, EarningsRollup

KEYS = ("beneficiary_id", "program_id", "template_id", "day", "state", "as_referred")

# Keys with more than one row, or whose rows sum to nothing.
_SPLIT_KEYS = """
    SELECT beneficiary_id, program_id, template_id, day, state, as_referred FROM referrals_earningsrollup
    GROUP BY beneficiary_id, program_id, template_id, day, state, as_referred
    HAVING COUNT(*) > 1 OR (SUM(accruals) = 0 AND SUM(amount) = 0 AND SUM(reversed) = 0)"""
_SAME_KEY = """x.beneficiary_id = d.beneficiary_id AND x.program_id = d.program_id
    AND COALESCE(x.template_id, 0) = COALESCE(d.template_id, 0) AND x.day = d.day AND x.state = d.state
    AND x.as_referred = d.as_referred"""
_INSERT_MERGED = """
    INSERT INTO referrals_earningsrollup (beneficiary_id, program_id, template_id, day, state, as_referred,
                                          accruals, amount, reversed)
    SELECT beneficiary_id, program_id, template_id, day, state, as_referred, SUM(accruals), SUM(amount), SUM(reversed)
    FROM {rows} GROUP BY beneficiary_id, program_id, template_id, day, state, as_referred
    HAVING SUM(accruals) <> 0 OR SUM(amount) <> 0 OR SUM(reversed) <> 0"""


def compact(at=None) -> dict:
    """Merge each key's delta rows into one (and drop keys that sum to nothing).

    On PostgreSQL one statement deletes the rows it sees and inserts their sums: rows that
    writers commit meanwhile are not seen, so they stay as deltas for the next run and nothing
    is counted twice or lost. SQLite has a single writer, so a few statements do."""
    if bulk.is_postgres():
        merged = bulk.execute(
            "WITH gone AS (DELETE FROM referrals_earningsrollup x USING ({split}) d WHERE {same} RETURNING x.*) "
            "{merge}",
            split=_SPLIT_KEYS, same=_SAME_KEY, merge=bulk.sql(_INSERT_MERGED, rows="gone"))
        return {"keys_merged": merged}
    bulk.execute("CREATE TEMPORARY TABLE tmp_rollup_split AS {split}", split=_SPLIT_KEYS)
    bulk.execute("CREATE TEMPORARY TABLE tmp_rollup_merged AS SELECT x.* FROM referrals_earningsrollup x "
                 "JOIN tmp_rollup_split d ON {same}", same=_SAME_KEY)
    bulk.execute("DELETE FROM referrals_earningsrollup WHERE id IN (SELECT id FROM tmp_rollup_merged)")
    merged = bulk.execute(_INSERT_MERGED, rows="tmp_rollup_merged")
    bulk.execute("DROP TABLE tmp_rollup_split")
    bulk.execute("DROP TABLE tmp_rollup_merged")
    return {"keys_merged": merged}


def rebuild() -> int:
    """Recompute the rollup from the accruals (after a bulk load that bypassed the triggers,
    e.g. `bench/dashboard.py`). Run it in a transaction with no accrual writers about."""
    day = "(a.created_at AT TIME ZONE 'UTC')::date" if bulk.is_postgres() else "date(a.created_at)"
    bulk.execute("DELETE FROM referrals_earningsrollup")
    return bulk.execute("""
        INSERT INTO referrals_earningsrollup (beneficiary_id, program_id, template_id, day, state, as_referred,
                                              accruals, amount, reversed)
        SELECT a.beneficiary_id, a.program_id, a.template_id, {day}, a.state,
               COALESCE(r.referred_id = a.beneficiary_id, false), COUNT(*), SUM(a.amount), SUM(a.reversed)
        FROM referrals_accrual a LEFT JOIN referrals_referral r ON r.id = a.referral_id
        GROUP BY 1, 2, 3, 4, 5, 6""", day=day)


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
            .annotate(month=TruncMonth("day")).values("program_id", "template_id", "month", "state", "as_referred")
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


# ---------------------------------------------------------------------------- checks


def _rollup_sums() -> dict[tuple, tuple[int, int, int]]:
    rows = (EarningsRollup.objects.values(*KEYS).annotate(n=Sum("accruals"), a=Sum("amount"), r=Sum("reversed"))
            .order_by())
    return {tuple(row[k] for k in KEYS): (int(row["n"]), int(row["a"]), int(row["r"]))
            for row in rows if row["n"] or row["a"] or row["r"]}


def _accrual_sums() -> dict[tuple, tuple[int, int, int]]:
    as_referred = Coalesce(ExpressionWrapper(Q(referral__referred_id=F("beneficiary_id")),
                                             output_field=BooleanField()), Value(False))
    rows = (Accrual.objects.annotate(day=TruncDate("created_at", tzinfo=UTC), as_referred=as_referred)
            .values(*KEYS).annotate(n=Count("id"), a=Sum("amount"), r=Sum("reversed")).order_by())
    return {tuple(row[k] for k in KEYS): (int(row["n"]), int(row["a"]), int(row["r"])) for row in rows}


# Transaction kinds that change what an account has earned (as opposed to moving it between
# books, spending, expiring or paying it out): what the rollup's net figures must equal.
EARNING_KINDS = ("accrual", "reversal", "void")


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


__all__ = ["Earnings", "ProgramEarnings", "compact", "earnings", "earnings_differences", "rebuild"]

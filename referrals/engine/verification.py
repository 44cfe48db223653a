"""Ledger verification: the ledger must balance, match its projection and be reproducible
from the event log. `verify_ledger` (the command) and the property tests use this."""
import json
from collections import defaultdict

from django.db import transaction

from ledger.models import Balance, Book, Entry
from ledger.models import Transaction as LedgerTransaction
from ledger.money import net_sum
from ledger.selectors import ledger_sums_by_book, projection_by_book, unbalanced_transactions
from ledger.services import allow_rebuild

from ..models import (
    Account,
    Accrual,
    Application,
    CreditGrant,
    Event,
    FraudFlag,
    MilestoneAward,
    PaymentFingerprint,
    Referral,
    Template,
    TrackChange,
)
from .apply import apply_events

REPLAY_CHUNK = 2000  # events the engine replays per call


class _Rollback(Exception):
    pass


def _state() -> dict:
    """Everything the event log determines, in comparable form (ids of derived rows left out)."""
    accruals = defaultdict(int)
    # With the programme version that made them: a replay must use the same rules as live.
    rows = Accrual.objects.values_list("beneficiary_id", "program_id", "program_version", "state", "destination") \
        .annotate(net=net_sum("amount", "reversed"))
    for beneficiary, program, version, state, destination, net in rows:
        accruals[(beneficiary, program, version, state, destination)] += int(net)
    return {
        "ledger": {k: v for k, v in ledger_sums_by_book().items() if v},
        "accruals": {k: v for k, v in accruals.items() if v},
        "referrals": {(*row[:5], json.dumps(row[5], sort_keys=True)) for row in Referral.objects.values_list(
            "referrer_id", "referred_id", "status", "spend", "purchases", "spend_by_product")},
        "grants": set(CreditGrant.objects.values_list("account_id", "amount", "remaining", "expires_at")),
        "templates": set(Template.objects.values_list("pk", "runtime_seconds", "qualified_at")),
        "accounts": set(Account.objects.values_list("pk", "track", "purchased_credits")),
    }


def check_integrity() -> list[str]:
    """Cheap checks: balanced transactions, projection = ledger, pending book = held accruals."""
    problems = [f"transaction #{t} is unbalanced by {total} units" for t, total in unbalanced_transactions()]
    sums = {k: v for k, v in ledger_sums_by_book().items() if k[0] is not None}
    projection = projection_by_book()
    for key in sorted(set(sums) | set(projection), key=str):
        if sums.get(key, 0) != projection.get(key, 0):
            problems.append(f"balance of account {key[0]} book {key[1]}: projection {projection.get(key, 0)}"
                            f" != ledger {sums.get(key, 0)}")
    held = dict(Accrual.objects.filter(state=Accrual.State.HELD).values_list("beneficiary_id")
                .annotate(net=net_sum("amount", "reversed")).values_list("beneficiary_id", "net"))
    for account_id in set(held) | {a for (a, b) in sums if b == Book.PENDING}:
        if int(held.get(account_id) or 0) != sums.get((account_id, Book.PENDING), 0):
            problems.append(f"account {account_id}: pending book {sums.get((account_id, Book.PENDING), 0)}"
                            f" != held earnings {held.get(account_id) or 0}")
    return problems


def replay_differences() -> list[str]:
    """Rebuild every derived row from the event log inside a transaction that is always
    rolled back, and list where the rebuilt state differs from the stored one."""
    before = _state()
    differences: list[str] = []
    try:
        with transaction.atomic():
            allow_rebuild()
            _reset_derived_state()
            # The same engine as live, over the log in id order. Stored events a batch has not
            # applied yet are not part of the state either.
            def failed(event, exc):  # a replay failure is itself a finding; report it and go on
                differences.append(f"event {event.external_id} ({event.type}) failed on replay: {exc}")

            chunk: list[Event] = []
            for event in Event.objects.filter(applied_at__isnull=False).order_by("id").iterator(chunk_size=2000):
                chunk.append(event)
                if len(chunk) == REPLAY_CHUNK:
                    apply_events(chunk, replay=True, on_error=failed)
                    chunk = []
            apply_events(chunk, replay=True, on_error=failed)
            after = _state()
            raise _Rollback
    except _Rollback:
        pass
    for part in before:
        if before[part] != after[part]:
            differences.extend(_describe(part, before[part], after[part]))
    return differences


def _describe(part, before, after) -> list[str]:
    if isinstance(before, dict):
        keys = sorted(set(before) | set(after), key=str)
        return [f"{part} {k}: stored {before.get(k, 0)} != replayed {after.get(k, 0)}"
                for k in keys if before.get(k, 0) != after.get(k, 0)][:50]
    stored_only, replay_only = sorted(before - after, key=str)[:5], sorted(after - before, key=str)[:5]
    return [f"{part}: stored has {stored_only}, replay has {replay_only}"]


def _reset_derived_state() -> None:
    for model in (Entry, LedgerTransaction, CreditGrant, MilestoneAward, Accrual, FraudFlag, TrackChange,
                  Referral, PaymentFingerprint):
        model.objects.all()._raw_delete(model.objects.db)
    Balance.objects.update(amount=0)
    Account.objects.update(track="basic", purchased_credits=0)
    Template.objects.update(runtime_seconds=0, qualified_at=None)
    Event.objects.update(refunded=0, refunds=None)
    Application.objects.update(status=Application.Status.OPEN, decided_at=None, decided_by=None, reason="")


def unapplied_events() -> list[str]:
    """Accepted events the ledger does not show: not applied yet, or failed to apply."""
    problems = []
    pending = Event.objects.filter(applied_at__isnull=True, apply_error="")
    oldest = pending.order_by("id").first()
    if oldest is not None:
        problems.append(f"{pending.count()} accepted event(s) not applied yet, oldest {oldest.external_id} stored at "
                        f"{oldest.received_at.isoformat()} (the sweeper or run_jobs applies them)")
    failed = Event.objects.filter(applied_at__isnull=True).exclude(apply_error="")
    problems += [f"event {external_id} failed to apply: {error[:200]}"
                 for external_id, error in failed.order_by("id").values_list("external_id", "apply_error")[:20]]
    return problems


def verify(*, replay: bool = True) -> list[str]:
    problems = check_integrity() + unapplied_events()
    if replay:
        problems += replay_differences()
    return problems

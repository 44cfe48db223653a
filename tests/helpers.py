"""Building events the way an integration sends them, and pushing them through the real service."""
import itertools
import os
import socket
import time
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from ledger.money import to_units
from referrals.engine.events import validate_event
from referrals.engine.ingestion import ingest_batch
from referrals.engine.services import ingest_event
from referrals.models import Account, Event

_ids = itertools.count(1)
# HYPOTHESIS_PROFILE=deep (make test-deep) runs every property test with at least 1,000 examples.
DEEP_EXAMPLES = 1000


def examples(n: int) -> int:
    """A property test's example count: `n`, or at least DEEP_EXAMPLES in the deep profile.
    (An explicit @settings(max_examples=...) wins over the loaded profile, hence this.)"""
    return max(n, DEEP_EXAMPLES) if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else n
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def event(type_: str, account: str, *, when: datetime | None = None, id: str | None = None, **fields) -> dict:
    return {"id": id or f"evt-{next(_ids)}", "type": type_, "account": account,
            "occurred_at": (when or T0).isoformat(), **fields}


def push(raw: dict, *, now: datetime | None = None) -> str:
    """Ingest and insist it was accepted; returns the event id."""
    result = ingest_event(raw, now=now)
    assert result.status == "accepted", result.as_dict()
    return result.id


def store(raw: dict, *, now: datetime | None = None) -> Event:
    """Log an event as accepted and not applied yet (as a batch, or an applier killed mid-batch,
    leaves it), without applying it: `ingestion.apply_pending` applies it."""
    valid = validate_event(raw, now=now or T0 + timedelta(days=400))
    account_id = Account.objects.filter(external_id=valid.account).values_list("pk", flat=True).first()
    return Event.objects.create(
        external_id=valid.external_id, type=valid.type, occurred_at=valid.occurred_at, account_id=account_id,
        payload=valid.raw, content_hash=valid.content_hash, amount=valid.amount, product=valid.product,
        runtime_seconds=valid.runtime_seconds, warnings=valid.warnings or None, applied_at=None)


def signup(account: str, *, email: str | None = None, code: str | None = None, when=None, **fields) -> Account:
    extra = {"email": email or f"{account}@example.com", **fields}
    if code:
        extra["referral_code"] = code
    push(event("account.created", account, when=when, **extra))
    return Account.objects.get(external_id=account)


def spend(account: str, amount: str, *, product: str = "pods", when=None, **fields) -> str:
    return push(event("usage.charged", account, when=when, amount=amount, product=product, **fields))


def buy_credits(account: str, amount: str, *, when=None, **fields) -> str:
    return push(event("credits.purchased", account, when=when, amount=amount, **fields))


def buy_plan(account: str, amount: str, *, plan: str = "pro", when=None) -> str:
    return push(event("plan.purchased", account, when=when, amount=amount, plan=plan))


def usd(value: str) -> int:
    return to_units(value)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str, every: float = 0.1):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def published(callbacks) -> list[tuple[str, int, dict]]:
    """The outbox messages, in publishing order, held by after-commit callbacks captured with
    `django_capture_on_commit_callbacks(execute=False)` (other callbacks are skipped)."""
    import functools

    from referrals.engine import outbox

    messages = []
    for callback in callbacks:
        if isinstance(callback, functools.partial) and callback.func is outbox._deliver:
            messages.append(callback.args)
        elif isinstance(callback, functools.partial) and callback.func is outbox._deliver_many:
            messages += callback.args[0]
    return messages


def fail_once(monkeypatch, owner, name: str) -> None:
    """Make `owner.name` raise once (a database gone away), then behave as before."""
    original = getattr(owner, name)
    failures = iter([RuntimeError("the database went away")])

    def failing_once(*args, **kwargs):
        if (failure := next(failures, None)) is not None:
            raise failure
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing_once)


def ledger_consistent() -> None:
    """The ledger balances, matches its projection, and the event log replays to the same state."""
    from referrals.engine.verification import check_integrity, replay_differences

    assert check_integrity() == []
    differences = replay_differences()
    assert differences == [], "\n".join(differences)


def applied_rolled_back(settings, capture, size: int, step_calls: list, *, snapshot, check=ledger_consistent):
    """Apply the stored events in batches of `size` inside a transaction rolled back afterwards:
    `check()` runs on what it left; returns `snapshot(callbacks)` of it, how many events were
    applied and which of them went through their step (`step_calls`)."""
    from referrals.engine.ingestion import apply_pending
    from tests.test_ledger_properties import rolled_back

    settings.APPLY_BATCH_MAX = size
    step_calls.clear()
    with rolled_back():
        with capture(execute=False) as callbacks:
            applied = apply_pending()
        stepped = list(step_calls)
        check()
        return snapshot(callbacks), applied, stepped


def one_per_call_rolled_back(batch: list[dict], state) -> tuple[list[dict], object, int]:
    """Ingest each event of `batch` in an ingestion call of its own (the synchronous path a lone
    event takes), in a transaction rolled back afterwards: the answers, `state()` as that left
    it, and the number of queries, to hold a whole batch's ingestion against."""
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            answers = [result.as_dict() for raw in batch for result in ingest_batch([raw])]
        after = state()
        transaction.set_rollback(True)
    return answers, after, len(queries)

"""Building events the way an integration sends them, and pushing them through the real service."""
import itertools
import os
import socket
import time
from datetime import UTC, datetime, timedelta

from ledger.money import to_units
from referrals.engine.events import validate_event
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

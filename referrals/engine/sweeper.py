"""The sweeper: nothing accepted is left unapplied.

An accepted event is stored first and applied after commit (inline for a small batch, by the
`apply_stored_events` task for a large one). If that second step is interrupted — a worker
killed mid-batch, a lost task message, a database restart — the event stays stored with
`applied_at` null. The sweeper finds those events and applies them through the one entry point
(`ingestion.apply_pending`), oldest first, in bounded rounds:

- on Celery beat every few seconds (`referrals.sweep_unapplied`, schedule created by
  `setup_schedules`); only events stored more than `min_age` seconds ago, so it does not race
  the request or task that is applying a fresh batch (it would be correct, only wasted work);
- at the start of every `run_jobs`, with no minimum age, so a job never runs over a ledger
  that is missing accepted events.

Two appliers at once never apply an event twice: `apply_pending` takes each account's row lock
and re-reads its pending events under it, and events are claimed by a conditional UPDATE. Two
beat sweeps at once are additionally kept from doing the same work twice by a session-level
advisory lock (PostgreSQL): the second one returns at once.

Events whose application failed (`apply_error` set) are not retried here: they are visible in
the admin and in `verify_ledger`.
"""
import logging
import time
from contextlib import contextmanager
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from ..models import Event
from . import bulk, ingestion

log = logging.getLogger(__name__)

ROUND = 2000  # events handed to apply_pending per round
SWEEP_LOCK = "referrals.engine.sweeper"


def pending_events():
    """Accepted events not applied yet (and not failed)."""
    return Event.objects.filter(applied_at__isnull=True, apply_error="")


def sweep(*, min_age: float = 0, budget: float | None = None, round_size: int = ROUND) -> int:
    """Apply every pending event stored at least `min_age` seconds ago, oldest first, in rounds of
    `round_size`; stop after `budget` seconds (the next sweep goes on). Returns how many were applied."""
    started = time.monotonic()
    cutoff = timezone.now() - timedelta(seconds=min_age) if min_age else None
    applied = 0
    after = 0
    while True:
        due = pending_events().filter(pk__gt=after)
        if cutoff is not None:
            due = due.filter(received_at__lte=cutoff)
        ids = list(due.order_by("id").values_list("pk", flat=True)[:round_size])
        if not ids:
            break
        applied += ingestion.apply_pending(event_ids=ids)
        after = ids[-1]
        if len(ids) < round_size or (budget is not None and time.monotonic() - started >= budget):
            break
    if applied:
        log.info("sweeper applied %d stored event(s) in %.2f s", applied, time.monotonic() - started)
    return applied


@contextmanager
def exclusive():
    """True inside if no other sweep holds the sweeper lock (always True off PostgreSQL)."""
    if not bulk.is_postgres():
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [SWEEP_LOCK])
        got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [SWEEP_LOCK])


def sweep_once(*, min_age: float, budget: float) -> int:
    """One beat tick: sweep unless another sweep is running."""
    with exclusive() as got:
        if not got:
            log.info("sweeper: another sweep is running; skipping this tick")
            return 0
        return sweep(min_age=min_age, budget=budget)


def lag() -> dict:
    """How far applying is behind: pending events (counted up to 10,000) and the oldest one's age."""
    oldest = pending_events().order_by("id").values_list("received_at", flat=True).first()
    count = pending_events().order_by()[:10_001].count()
    age = max((timezone.now() - oldest).total_seconds(), 0.0) if oldest else 0.0
    return {"unapplied": count, "oldest_unapplied_age_seconds": round(age, 1)}

"""Celery tasks: thin wrappers that take ids and times and call one service.

Periodic jobs are scheduled by django-celery-beat (rows created by `setup_schedules`, edited by
staff in the admin) and run through `jobs.run_jobs`, so every run leaves a JobRun row. Work that
follows a write is queued with `enqueue_on_commit`, so a task never sees a rolled-back change.
"""
import logging
from functools import partial

from celery import shared_task
from django.db import DatabaseError, InterfaceError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .engine import ingestion, sweeper  # noqa: F401 - ingestion registers referrals.apply_stored_events with the worker
from .engine.jobs import JOBS, UnknownJob, run_jobs

log = logging.getLogger(__name__)

# A job that failed on the database (a lost connection, a deadlock, a serialisation failure) is
# retried with exponential backoff: 2 s, 4 s, 8 s, ... up to 10 minutes apart, with jitter.
RETRY = dict(autoretry_for=(DatabaseError, InterfaceError), retry_backoff=2, retry_backoff_max=600, retry_jitter=True,
             max_retries=10)


@shared_task(name="referrals.run_job", acks_late=True, **RETRY)
def run_job(name: str, at: str | None = None) -> dict:
    """Run one periodic job as of `at` (ISO 8601; default: now). Beat calls it with the name only."""
    if name not in JOBS:
        raise UnknownJob(f"unknown job {name!r}; known: {', '.join(JOBS)}")
    when = parse_datetime(at) if at else timezone.now()
    if when is None or when.tzinfo is None:
        raise ValueError(f"at: {at!r} is not an ISO 8601 date-time with a time zone")
    return run_jobs(at=when, names=[name])[name]


# The sweeper on beat (every few seconds): events stored at least SWEEP_MIN_AGE seconds ago, for
# at most SWEEP_BUDGET seconds a tick (a tick that finds another sweep running returns at once).
SWEEP_MIN_AGE = 2.0
SWEEP_BUDGET = 50.0


@shared_task(name="referrals.sweep_unapplied", ignore_result=True)
def sweep_unapplied() -> int:
    """Apply accepted events that are still not applied (see `referrals.engine.sweeper`)."""
    return sweeper.sweep_once(min_age=SWEEP_MIN_AGE, budget=SWEEP_BUDGET)


def enqueue_on_commit(task, *args, **kwargs) -> None:
    """Queue `task(*args, **kwargs)` once the current transaction commits.

    If the broker is unreachable the caller's request still succeeds: the failure is logged, and
    callers whose work cannot wait either do it inline instead (`ingestion.queue_apply`) or rely
    on a periodic job to catch up (each job works from what is due, not from messages).
    """
    transaction.on_commit(partial(_send, task, args, kwargs))


def _send(task, args, kwargs) -> None:
    try:
        task.apply_async(args, kwargs)
    except Exception as exc:  # kombu/redis connection errors: logged, never raised into a request
        log.warning("broker unavailable, %s not queued now (%s: %s)", task.name, type(exc).__name__, exc)

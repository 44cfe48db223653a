"""Celery plumbing in embedded mode (no Redis): the job task, queueing on commit, schedules, and
the health endpoint with the broker down. The real worker and beat: test_celery_integration.py."""
import logging
import socket
import time

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine.jobs import JOBS, UnknownJob
from referrals.engine.services import ingest_event
from referrals.management.commands.setup_schedules import TASK, schedule_name, setup_schedules
from referrals.models import JobRun
from referrals.tasks import enqueue_on_commit, run_job
from referrals_site.celery import app
from tests.helpers import at, event, signup


@pytest.fixture
def lapsed_credit(apimarket):
    alice = signup("alice")
    return signup("bob", code=alice.referral_code, when=at(1))


def test_it_runs_a_job_task_as_of_the_given_time(lapsed_credit):
    result = run_job.delay("expire_credits", at(31).isoformat())
    assert result.get() == {"grants_expired": 1}
    assert balances_for(lapsed_credit.pk)[Book.CREDITS] == 0
    run = JobRun.objects.get()
    assert (run.name, run.at, run.counts, run.error) == ("expire_credits", at(31), {"grants_expired": 1}, "")


def test_it_runs_a_job_task_as_of_now_when_beat_gives_no_time(lapsed_credit):
    assert run_job.delay(name="expire_credits").get() == {"grants_expired": 1}
    assert JobRun.objects.get().finished_at is not None


def test_it_refuses_a_task_with_a_bad_time_naming_the_field(lapsed_credit):
    for bad in ("yesterday", "2026-02-01T00:00:00"):  # not a date-time; no time zone
        with pytest.raises(ValueError, match="at: "):
            run_job.apply(args=("expire_credits", bad), throw=True)
    assert JobRun.objects.count() == 0
    assert balances_for(lapsed_credit.pk)[Book.CREDITS] > 0


def test_it_refuses_an_unknown_job(db):
    with pytest.raises(UnknownJob, match="unknown job 'sweep'"):
        run_job.apply(args=("sweep",), throw=True)
    assert JobRun.objects.count() == 0


def test_it_queues_work_only_when_the_transaction_commits(lapsed_credit, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        enqueue_on_commit(run_job, "expire_credits", at(31).isoformat())
        assert JobRun.objects.count() == 0
    assert len(callbacks) == 1 and JobRun.objects.count() == 0
    callbacks[0]()  # the commit
    assert JobRun.objects.get().counts == {"grants_expired": 1}


def test_it_creates_a_schedule_per_job_once_and_keeps_staff_edits(db):
    from referrals.management.commands.setup_schedules import OTHER_TASKS, SWEEPER

    assert setup_schedules() == [schedule_name(job) for job in JOBS] + [name for name, _, _ in OTHER_TASKS] + [
        SWEEPER[0]]
    assert set(PeriodicTask.objects.exclude(task=TASK).values_list("task", flat=True)) == {
        "integrations.deliver_due_webhooks", "notifications.tasks.send_expiry_reminders",
        "referrals.sweep_unapplied"}
    tasks = PeriodicTask.objects.filter(task=TASK)
    assert sorted(t.kwargs for t in tasks) == sorted(f'{{"name": "{job}"}}' for job in JOBS)
    # Staff change one in the admin; running the command again keeps their change.
    hourly, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.filter(name=schedule_name("milestones")).update(interval=hourly, enabled=False)
    assert setup_schedules() == []
    edited = PeriodicTask.objects.get(name=schedule_name("milestones"))
    assert (edited.interval, edited.enabled) == (hourly, False)
    assert tasks.count() == len(JOBS)


def test_it_refuses_a_schedule_of_zero_minutes_naming_the_job(db):
    with pytest.raises(ValueError, match=r"minutes\[release_holds\]"):
        setup_schedules(minutes={"release_holds": 0})
    assert PeriodicTask.objects.filter(task=TASK).count() == 0


def test_health_says_ok_in_embedded_mode(client, db):
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {
        "database": {"ok": True}, "broker": {"ok": True, "mode": "embedded"},
        "events": {"ok": True, "unapplied": 0, "oldest_unapplied_age_seconds": 0.0}}}


@pytest.fixture
def broker_down(settings):
    """Point the app at a Redis port nobody listens on, with eager mode off."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The app reads Django's settings under the CELERY_ namespace, so that is the key to change.
    saved = {key: app.conf[key] for key in ("CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER")}
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.update(CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0", CELERY_TASK_ALWAYS_EAGER=False)
    _fresh_connection_pools()
    yield
    app.conf.update(**saved)
    _fresh_connection_pools()


def _fresh_connection_pools():
    # Pools are built from the broker URL on first use; drop them so the next use rebuilds them.
    app._pool = None
    app.amqp._producer_pool = None


def test_with_redis_down_the_app_serves_accepts_events_and_health_says_so(client, lapsed_credit, broker_down,
                                                                           caplog):
    started = time.monotonic()
    response = client.get("/health/")
    assert response.status_code == 200, "the web app still serves"
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is False and body["checks"]["broker"]["mode"] == "redis"
    # Events are still accepted, and queueing after commit logs instead of failing the request.
    assert ingest_event(event("usage.charged", "bob", amount="5.00", product="pods", when=at(2))).status == "accepted"
    with caplog.at_level(logging.WARNING, logger="referrals.tasks"):
        enqueue_on_commit(run_job, "expire_credits", at(31).isoformat())
    # The test's transaction never commits; run what the commit would.
    from django.db import connection

    for _, callback, _ in connection.run_on_commit:
        callback()
    assert "broker unavailable, referrals.run_job not queued now" in caplog.text
    assert JobRun.objects.count() == 0, "nothing ran: the job waits for its next beat tick"
    assert time.monotonic() - started < 15, "a dead broker must not hang the request"

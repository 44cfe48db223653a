"""The periodic jobs with the real parts: a redis-server, `celery worker` and `celery beat`
processes, and the test's own PostgreSQL database (the processes get its URL).

Skipped without `redis-server` on the PATH or without PostgreSQL (the worker must share the
test database, which an in-memory SQLite copy cannot); make test provides both.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from ledger.models import Book, Entry
from ledger.models import Transaction as LedgerTransaction
from ledger.selectors import balances_for
from referrals.engine.services import CREDITS_EXPIRED
from referrals.engine.verification import check_integrity, replay_differences
from referrals.management.commands.setup_schedules import schedule_name, setup_schedules
from referrals.models import CreditGrant, Event, JobRun
from referrals.presets import load_preset
from referrals_site.celery import app
from tests.helpers import free_port, signup, usd, wait_until

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))

pytestmark = pytest.mark.django_db(transaction=True)




def _database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def redis_url(tmp_path):
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip(reason="needs redis-server on the PATH (apt-get install redis-server; make test installs it)")
    if connection.vendor != "postgresql":
        pytest.skip(reason="needs PostgreSQL shared with the worker: set DATABASE_URL (make test provisions it)")
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own fixed command line
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(answers, timeout=15, what="redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


class Processes:
    """Celery processes started against the test database and Redis, stopped at the end."""

    def __init__(self, redis_url: str, log_dir: Path):
        self.env = {**os.environ, "DATABASE_URL": _database_url(), "REDIS_URL": redis_url,
                    "CELERY_BROKER_URL": redis_url, "CELERY_TASK_ALWAYS_EAGER": "false",
                    "CELERY_VISIBILITY_TIMEOUT": "3", "DJANGO_SETTINGS_MODULE": "referrals_site.settings"}
        self.log_dir = log_dir
        self.running: list[subprocess.Popen] = []
        self.count = 0

    def start(self, *args: str) -> subprocess.Popen:
        self.count += 1
        log = open(self.log_dir / f"{args[0]}-{self.count}.log", "w")  # noqa: SIM115 - closed with the process
        # Its own session, so a SIGKILL reaches the worker and its pool children, like a crash.
        command = [CELERY, "-A", "referrals_site", *args, "--loglevel=INFO"]
        proc = subprocess.Popen(command, cwd=ROOT, env=self.env,  # noqa: S603 - our own fixed command line
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        self.running.append(proc)
        return proc

    def worker(self) -> subprocess.Popen:
        return self.start("worker", "--concurrency=1", "--without-gossip", "--without-mingle", "-n",
                          f"w{self.count}@%h")

    def kill(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            proc.log.close()


@pytest.fixture
def celery_processes(redis_url, tmp_path):
    processes = Processes(redis_url, tmp_path)
    yield processes
    processes.stop_all()


def _referred_with_credit(referrer: str, n: int, *, day: int) -> None:
    """`n` accounts referred by `referrer`, signed up on `day` of 2026: $2.50 of credit each."""
    code = signup(referrer, when=datetime(2026, 1, 1, tzinfo=UTC)).referral_code
    for i in range(n):
        signup(f"{referrer}-{i}", code=code, when=datetime(2026, 1, 1, tzinfo=UTC).replace(day=day))


def _expiry_effect(accounts_prefix: str) -> dict:
    """What expiring the credits of one cohort did, in comparable form."""
    grants = CreditGrant.objects.filter(account__external_id__startswith=f"{accounts_prefix}-")
    entries = Entry.objects.filter(account__external_id__startswith=f"{accounts_prefix}-", book=Book.CREDITS,
                                   transaction__kind="expiry")
    return {
        "grants": grants.count(),
        "expired": grants.filter(expired_at__isnull=False, remaining=0).count(),
        "credits_left": sum(balances_for(a)[Book.CREDITS] for a in grants.values_list("account_id", flat=True)),
        "expired_units": -sum(entries.values_list("amount", flat=True)),
        "expiry_entries_per_account": entries.count() / max(grants.count(), 1),
    }


def test_it_runs_a_scheduled_job_with_beat_and_a_worker_and_the_ledger_shows_it(celery_processes):
    load_preset("apimarket")
    _referred_with_credit("alice", 5, day=2)
    assert setup_schedules(), "the schedules of every job are created"
    # Staff would do this in the admin: run the expiry every second, pause the others.
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.exclude(name=schedule_name("expire_credits")).update(enabled=False)
    PeriodicTask.objects.filter(name=schedule_name("expire_credits")).update(interval=every_second)

    celery_processes.worker()
    celery_processes.start("beat", "--max-interval=1")
    try:
        run = wait_until(lambda: JobRun.objects.filter(name="expire_credits", finished_at__isnull=False,
                                                  counts__grants_expired__gt=0).first(),
                    timeout=90, what="beat to schedule expire_credits and the worker to run it")
    except AssertionError:
        pytest.fail(celery_processes.logs())
    assert run.counts == {"grants_expired": 5} and run.error == ""
    expired = Entry.objects.filter(book=Book.EXPIRED, transaction__kind="expiry")
    assert sum(expired.values_list("amount", flat=True)) == 5 * usd("2.50")
    assert _expiry_effect("alice")["credits_left"] == 0
    # Later ticks find nothing left: still one expiry event and its transactions only.
    wait_until(lambda: JobRun.objects.filter(name="expire_credits", finished_at__isnull=False).count() >= 3,
          timeout=30, what="more beat ticks")
    assert Event.objects.filter(type=CREDITS_EXPIRED).count() == 1
    assert check_integrity() == [] and replay_differences() == []


@pytest.mark.filterwarnings("ignore:task_always_eager has no effect on send_task")
def test_a_worker_killed_mid_job_and_restarted_leaves_the_same_result_as_an_undisturbed_run(celery_processes):
    load_preset("apimarket")
    n = 40
    _referred_with_credit("calm", n, day=2)  # lapses on Feb 1
    _referred_with_credit("crash", n, day=20)  # lapses on Feb 19
    with app.connection_for_write(celery_processes.env["REDIS_URL"]) as broker:
        def queue(at: str):
            app.send_task("referrals.run_job", kwargs={"name": "expire_credits", "at": at}, connection=broker)

        # The undisturbed run: the first cohort's credits.
        worker = celery_processes.worker()
        queue("2026-02-05T00:00:00+00:00")
        wait_until(lambda: JobRun.objects.filter(finished_at__isnull=False).count() == 1, timeout=60,
              what="the undisturbed run")
        undisturbed = _expiry_effect("calm")
        assert undisturbed["expired"] == n and undisturbed["expired_units"] == n * usd("2.50")

        # The disturbed run: a grant of the second cohort is locked, so the job stops half-way
        # (its event row written, waiting to lock the lapsed grants) and the worker is killed there.
        blocker = psycopg.connect(_database_url().replace("postgres://", "postgresql://", 1))
        blocker.execute("SELECT id FROM referrals_creditgrant WHERE account_id = (SELECT id FROM referrals_account "
                        "WHERE external_id = 'crash-7') FOR UPDATE")
        queue("2026-03-01T00:00:00+00:00")
        watcher = psycopg.connect(_database_url().replace("postgres://", "postgresql://", 1), autocommit=True)

        def job_waits_on_the_lock():
            return watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND datname = current_database()").fetchone()[0]

        try:
            wait_until(job_waits_on_the_lock, timeout=60, what="the job to reach the locked grant")
        except AssertionError:
            pytest.fail(celery_processes.logs())
        celery_processes.kill(worker)
        blocker.rollback()
        blocker.close()
        # The killed worker's database session rolls back; nothing of the half-run stays.
        wait_until(lambda: not job_waits_on_the_lock() and watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
            "AND datname = current_database()").fetchone()[0] == 0, timeout=30, what="the dead session to end")
        watcher.close()
        assert _expiry_effect("crash")["expired"] == 0
        assert Event.objects.filter(type=CREDITS_EXPIRED).count() == 1
        killed = JobRun.objects.get(at=datetime(2026, 3, 1, tzinfo=UTC))
        assert killed.finished_at is None, "the killed run is recorded as started and never finished"

        # A restarted worker gets the unacknowledged message again (acks_late) and finishes it:
        # Redis hands it out again once the visibility timeout (3 s here) has passed.
        time.sleep(4)
        celery_processes.worker()
        try:
            wait_until(lambda: JobRun.objects.filter(at=datetime(2026, 3, 1, tzinfo=UTC), finished_at__isnull=False)
                  .exists(), timeout=120, what="the redelivered job to run")
        except AssertionError:
            pytest.fail(celery_processes.logs())

    assert _expiry_effect("crash") == undisturbed
    assert Event.objects.filter(type=CREDITS_EXPIRED).count() == 2
    assert LedgerTransaction.objects.filter(kind="expiry").values("event").distinct().count() == 2
    assert check_integrity() == [] and replay_differences() == []
